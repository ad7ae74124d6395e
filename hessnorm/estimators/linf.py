"""Certified brackets of ℓ∞-smoothness ‖H‖_∞ and of Φ-smoothness ‖H‖_{Φ→Φ*}.

Paper 000's Adam analysis (Theorem 3.2) needs ‖H‖_∞ := max_{‖x‖_∞ ≤ 1} ‖Hx‖₁, the
smoothness of the loss with respect to ℓ∞, and replaces it by the computable upper
bound ‖H‖₁,₁ ≥ ‖H‖_∞; the blockwise analysis (Definition 3.8) likewise needs
‖H‖_{Φ→Φ*} = max_{‖x‖_Φ ≤ 1} ‖Hx‖_Φ* for ‖x‖_Φ = max_b ‖x_b‖₂/√d_b and its dual
‖u‖_Φ* = Σ_b √d_b ‖u_b‖₂, bounded above by S(H, Φ) = Σ_{b,b'} √(d_b d_b')‖H_{b,b'}‖₂.
Computing ‖H‖_∞ exactly is NP-hard (it is the cut norm's relative, max over the
2^d vertices of the cube), but every feasible x certifies a *lower* bound with one HVP,
so the pair (lower bound found, upper estimator's interval end) brackets the quantity
the theory uses.

Alternation. ‖H‖_{Φ→Φ*} = max over x, y in the Φ-unit ball of yᵀHx. For a fixed x the
best y is y_b = √d_b·u_b/‖u_b‖ with u = Hx (value ‖Hx‖_Φ*), and for a fixed y the best x
is the same map applied to Hy (H is symmetric). So the iteration x ← N(Hx), N the
block normalisation, only increases the certified value:
‖H x_{t+1}‖_Φ* ≥ x_tᵀ H x_{t+1} = (Hx_t)ᵀ x_{t+1} = ‖H x_t‖_Φ*. With singleton blocks
N = sign (the ℓ∞ case: a sign vector's value is ‖Hx‖₁); with one block N(u) = √d·u/‖u‖
and the iteration is the power method, converging to d·‖H‖₂. Each iteration costs one
HVP per start; starts run batched through ``op.hvp`` of shape (k, d).

Starts: the top-|λ| Ritz vector of H (by Lanczos), normalised by N (for ℓ∞ its
sign), plus ``restarts`` random ones (Rademacher signs / Gaussian blocks) per round;
rounds repeat while a round improves the best value by more than a factor 1 + 1e-9, up
to ``max_rounds``. The winner is re-evaluated with one fresh HVP; that value is the
reported lower bound (shrunk by the rounding slack η = eps·max(10, √d) relative).
"""

from __future__ import annotations

import math
import time

import torch
from torch import Tensor

from hessnorm.errors import ConfigError
from hessnorm.estimate import Estimate
from hessnorm.estimators._krylov import rounding_slack
from hessnorm.estimators._progress import progress_bar
from hessnorm.estimators.lanczos import top_eigenpairs
from hessnorm.operator import as_operator
from hessnorm.partition import Partition, PartitionName
from hessnorm.registry import register_estimator

__all__ = ["linf_smoothness", "phi_smoothness", "hvp_cost", "phi_hvp_cost"]

_EIG_MAX_ITER = 100


class _Norm:
    """The block normalisation N and the dual norm ‖·‖_Φ* for one partition."""

    def __init__(self, partition: Partition | None, d: int, dtype, device) -> None:
        self.singletons = partition is None or partition.n_blocks == d
        if not self.singletons:
            self.labels = partition.labels.to(device)
            self.B = partition.n_blocks
            self.root = partition.sizes.to(device=device, dtype=dtype).sqrt()

    def block_norms(self, U: Tensor) -> Tensor:
        N = torch.zeros(U.shape[0], self.B, dtype=U.dtype, device=U.device)
        N.index_add_(1, self.labels, U * U)
        return N.sqrt()

    def dual(self, U: Tensor) -> Tensor:
        """‖u‖_Φ* per row of U: Σ_b √d_b ‖u_b‖ (ℓ1 for singletons)."""
        if self.singletons:
            return U.abs().sum(1)
        return (self.block_norms(U) * self.root).sum(1)

    def normalise(self, U: Tensor) -> Tensor:
        """N(u): the point of the Φ-unit sphere maximising ⟨u, x⟩, per row.

        A zero block gets the constant vector (norm √d_b), a zero entry the sign +1, so
        the result is always feasible.
        """
        if self.singletons:
            return torch.where(U >= 0, 1.0, -1.0).to(U.dtype)
        norms = self.block_norms(U)
        zero = norms == 0
        scale = torch.where(zero, 0.0, self.root / torch.where(zero, 1.0, norms))
        X = U * scale[:, self.labels]
        return torch.where(zero[:, self.labels], 1.0, X)

    def random(self, k: int, d: int, g: torch.Generator, dtype, device) -> Tensor:
        Z = torch.randn(k, d, generator=g, dtype=torch.float64).to(device=device, dtype=dtype)
        return self.normalise(Z)


def _alternate(op, X: Tensor, norm: _Norm, max_iter: int, bar) -> tuple[Tensor, Tensor, int]:
    """Run x ← N(Hx) on every row of X until no row improves; (best X, values, iterations)."""
    k = X.shape[0]
    best_val = torch.full((k,), -math.inf, dtype=torch.float64)
    best_X = X.clone()
    active = torch.arange(k)
    iters = 0
    for _ in range(max_iter):
        U = op.hvp(X[active])
        bar.update(len(active))
        iters += 1
        val = norm.dual(U).double().cpu()
        improved = val > best_val[active] * (1 + 1e-12) + 0.0
        best_val[active] = torch.maximum(best_val[active], val)
        best_X[active[improved]] = X[active[improved]]
        X_new = norm.normalise(U)
        moved = (X_new != X[active]).any(1).cpu()
        keep = improved & moved
        X[active] = X_new
        active = active[keep]
        if len(active) == 0:
            break
    return best_X, best_val, iters


def _search(op, norm: _Norm, *, restarts, max_iter, max_rounds, seed, eig_start, eig_tol, bar):
    d = op.d
    g = torch.Generator().manual_seed(int(seed))
    starts = []
    if eig_start:
        pairs = top_eigenpairs(
            op, 1, which="LM", tol=eig_tol, max_iter=_EIG_MAX_ITER, seed=seed, progress=False
        )
        bar.update(pairs.n_hvp)
        starts.append(norm.normalise(pairs.vectors.to(op.dtype)))
    best_val, best_x, rounds, iterations = -math.inf, None, 0, 0
    for r in range(max_rounds):
        parts = list(starts) if r == 0 else []
        if restarts:
            parts.append(norm.random(restarts, d, g, op.dtype, op.device))
        if not parts:
            break
        X, vals, it = _alternate(op, torch.cat(parts), norm, max_iter, bar)
        rounds, iterations = rounds + 1, iterations + it
        i = int(torch.argmax(vals))
        if float(vals[i]) > best_val * (1 + 1e-9) or best_x is None:
            best_val, best_x = float(vals[i]), X[i].clone()
        elif r > 0:
            break
        if not restarts:
            break
    return best_x, best_val, rounds, iterations


def _check(restarts, max_iter, max_rounds):
    if int(restarts) < 0 or int(max_iter) < 1 or int(max_rounds) < 1:
        raise ConfigError(
            f"need restarts >= 0, max_iter >= 1 and max_rounds >= 1; got {restarts}, "
            f"{max_iter}, {max_rounds}"
        )


def _upper_value(upper) -> tuple[float, float, str]:
    if isinstance(upper, Estimate):
        return float(upper.high), float(upper.confidence), f"given ({upper.name})"
    try:
        return float(upper), math.nan, "given"
    except (TypeError, ValueError):
        raise ConfigError(
            f"upper must be an Estimate, a number or None, got {type(upper).__name__}"
        ) from None


def _finish(name, op, x, value_search, high, conf, method, t0, n0, extra) -> Estimate:
    u = op.hvp(x.unsqueeze(0))
    value = float(extra.pop("_norm").dual(u).double()[0])
    eta = rounding_slack(op.d, torch.finfo(op.dtype).eps)
    low = value * (1.0 - eta)
    if high < low:  # a probabilistic upper end that missed: say so, keep the bracket valid
        extra["upper_below_lower"] = True
        high = low
    details = {
        "ratio": high / low if low > 0 else math.inf,
        "upper": high,
        "upper_method": method,
        "search_value": value_search,
        "rounding": eta,
        **extra,
    }
    return Estimate(
        name=name,
        value=value,
        low=low,
        high=high,
        confidence=conf,
        n_hvp=op.matvec_count - n0,
        seconds=time.perf_counter() - t0,
        d=op.d,
        details=details,
    )


def hvp_cost(options: dict, d: int) -> int:
    """HVPs :func:`linf_smoothness` typically spends (an ETA, not a cap).

    The eigenvector start (≤ 100), ``restarts + 1`` starts for ~10 iterations in the
    first round and one more round, one certifying HVP, and the upper end: d identity
    columns when d ≤ n_cauchy, else n_cauchy Cauchy probes.

    Example:
        >>> hvp_cost({}, 10_000)  # 100 + 17·10 + 1 + 50
        321
    """
    restarts = int(options.get("restarts", 8))
    n_cauchy = int(options.get("n_cauchy", 50))
    search = min(_EIG_MAX_ITER, d) + (2 * restarts + 1) * min(10, int(options.get("max_iter", 50)))
    upper = 0 if options.get("upper") is not None else (d if d <= n_cauchy else n_cauchy)
    return search + 1 + upper


def phi_hvp_cost(options: dict, d: int) -> int:
    """HVPs of :func:`phi_smoothness` without its upper end (whose cost depends on Φ:
    see ``blockwise_smoothness(..., dry_run=True)``).

    Example:
        >>> phi_hvp_cost({"restarts": 4}, 1000)
        191
    """
    restarts = int(options.get("restarts", 8))
    return (
        min(_EIG_MAX_ITER, d) + (2 * restarts + 1) * min(10, int(options.get("max_iter", 50))) + 1
    )


def linf_smoothness(
    op,
    *,
    seed: int = 0,
    progress: bool = False,
    restarts: int = 8,
    max_iter: int = 50,
    max_rounds: int = 4,
    n_cauchy: int = 50,
    confidence: float = 0.95,
    upper=None,
    eig_start: bool = True,
    eig_tol: float = 1e-6,
) -> Estimate:
    """Bracket ‖H‖_∞ = max_{‖x‖_∞≤1} ‖Hx‖₁ between a certified sign vector and ‖H‖₁,₁.

    ``low`` is ‖Hx‖₁ for an explicit x ∈ {±1}^d found by the alternation
    x ← sign(Hx) (module docstring), recomputed with one fresh HVP: a deterministic
    lower bound of ‖H‖_∞ (up to the rounding slack). ``high`` is the upper end of
    ‖H‖₁,₁ ≥ ‖H‖_∞ (paper 000, the bound used for Theorem 3.2 and discussed around
    Corollary 3.7): exact with d identity columns when d ≤ ``n_cauchy``, else the
    interval end of :func:`~hessnorm.estimators.cauchy.l11_norm` (then ``confidence``
    is that interval's).

    Cost: ≤ 100 HVPs for the eigenvector start, one HVP per start per iteration
    (batched; about 5–15 iterations each on the test models), one certifying HVP,
    and the upper end (min(d, n_cauchy) HVPs). See :func:`hvp_cost`.

    Args:
        op: a Hessian-like operator or a dense symmetric tensor.
        seed: seeds the random starts, the Lanczos start and the Cauchy probes.
        progress: show a tqdm bar over HVPs.
        restarts: random sign starts per round.
        max_iter: cap on alternation steps per start.
        max_rounds: cap on rounds; the search stops earlier after a round without gain.
        n_cauchy: Cauchy probes for the upper end (and the exact-columns threshold).
        confidence: nominal coverage of the upper end (the lower end is deterministic).
        upper: an upper bound to use instead (an Estimate, whose ``high`` is used, or
            a number); no HVP is then spent on it.
        eig_start: also start from the sign of the top-|λ| eigenvector.
        eig_tol: Lanczos residual tolerance of that eigenvector.

    Returns:
        Estimate ``linf_smoothness``: value = the certified ‖Hx‖₁, low = value·(1 − η),
        high as above. Details ``ratio`` (high/low: how loose ‖H‖₁,₁ can be as a
        stand-in), ``upper``, ``upper_method``, ``search_value``, ``rounds``,
        ``iterations`` (alternation steps over all rounds), ``starts``, ``rounding``.

    Example:
        >>> H = torch.tensor([[2.0, -1.0], [-1.0, 3.0]], dtype=torch.float64)
        >>> est = linf_smoothness(H)  # x = (1, -1): ‖Hx‖₁ = 3 + 4 = 7 = ‖H‖₁,₁
        >>> est.value, est.high, round(est.details["ratio"], 12)
        (7.0, 7.0, 1.0)
    """
    _check(restarts, max_iter, max_rounds)
    op = as_operator(op)
    t0, n0 = time.perf_counter(), op.matvec_count
    norm = _Norm(None, op.d, op.dtype, op.device)
    total = hvp_cost(
        {"restarts": restarts, "max_iter": max_iter, "n_cauchy": n_cauchy, "upper": upper}, op.d
    )
    with progress_bar(total, "linf_smoothness", enabled=progress, upper=False) as bar:
        x, val, rounds, iters = _search(
            op,
            norm,
            restarts=restarts,
            max_iter=max_iter,
            max_rounds=max_rounds,
            seed=seed,
            eig_start=eig_start,
            eig_tol=eig_tol,
            bar=bar,
        )
    if upper is not None:
        high, conf, method = _upper_value(upper)
    elif op.d <= n_cauchy:
        high = _exact_l11(op)
        conf, method = 1.0, "exact (identity columns)"
    else:
        from hessnorm.estimators.cauchy import l11_norm

        if not 0.0 < confidence < 1.0:
            raise ConfigError(f"confidence must lie in (0, 1), got {confidence}")
        e = l11_norm(op, n=n_cauchy, seed=seed, confidence=confidence, progress=progress)
        high, conf, method = float(e.high), float(e.confidence), f"l11_norm (n={n_cauchy})"
    extra = {"rounds": rounds, "iterations": iters, "starts": restarts * rounds + int(eig_start)}
    return _finish(
        "linf_smoothness", op, x, val, high, conf, method, t0, n0, {**extra, "_norm": norm}
    )


def _exact_l11(op) -> float:
    eye = torch.eye(op.d, dtype=op.dtype, device=op.device)
    total = 0.0
    for i in range(0, op.d, 256):
        total += float(op.hvp(eye[i : i + 256]).abs().double().sum())
    return total


def phi_smoothness(
    op,
    partition: Partition,
    *,
    seed: int = 0,
    progress: bool = False,
    restarts: int = 8,
    max_iter: int = 50,
    max_rounds: int = 4,
    n_cauchy: int = 50,
    confidence: float = 0.95,
    upper=None,
    eig_start: bool = True,
    eig_tol: float = 1e-6,
) -> Estimate:
    """Bracket ‖H‖_{Φ→Φ*} (Φ-smoothness, paper 000 Def. 3.8) between a certified x and S(H, Φ).

    ``low`` is ‖Hx‖_Φ* = Σ_b √d_b ‖(Hx)_b‖₂ for an explicit x with ‖x‖_Φ = 1, found by
    x_b ← √d_b·u_b/‖u_b‖, u = Hx (module docstring) and recomputed with one fresh HVP.
    ``high`` is the upper end of :func:`~hessnorm.estimators.blockwise.blockwise_smoothness`'s
    interval for S(H, Φ) ≥ ‖H‖_{Φ→Φ*}. One block: low → d·‖H‖₂ (the power method from
    the top eigenvector); singletons: the ℓ∞ case of :func:`linf_smoothness`.

    Cost: as :func:`linf_smoothness` for the search (:func:`phi_hvp_cost`), plus the
    blockwise estimator (``blockwise_smoothness(op, partition, dry_run=True)`` gives it).

    Args:
        op: a Hessian-like operator or a dense symmetric tensor.
        partition: the :class:`~hessnorm.partition.Partition` Φ (covering op.d).
        seed: seeds the random starts, the Lanczos start and the upper estimator.
        progress: show a tqdm bar over the search's HVPs.
        restarts: random starts per round (Gaussian, block-normalised).
        max_iter: cap on alternation steps per start.
        max_rounds: cap on rounds; the search stops earlier after a round without gain.
        n_cauchy: passed to the blockwise estimator (its coordinate-partition path).
        confidence: passed to the blockwise estimator (coverage of its upper end).
        upper: an upper bound to use instead (an Estimate, whose ``high`` is used, or a
            number).
        eig_start: also start from the block-normalised top-|λ| eigenvector.
        eig_tol: Lanczos residual tolerance of that eigenvector.

    Returns:
        Estimate ``phi_smoothness`` with details as :func:`linf_smoothness` plus
        ``n_blocks``.

    Example:
        >>> H = torch.diag(torch.tensor([1.0, -3.0, 2.0], dtype=torch.float64))
        >>> est = phi_smoothness(H, Partition.single(3))  # d·‖H‖₂ = 9
        >>> round(est.value, 10), round(est.high, 6)
        (9.0, 9.0)
    """
    _check(restarts, max_iter, max_rounds)
    op = as_operator(op)
    if not isinstance(partition, Partition):
        raise ConfigError(f"partition must be a hessnorm Partition, got {type(partition).__name__}")
    partition.check_dim(op.d)
    t0, n0 = time.perf_counter(), op.matvec_count
    norm = _Norm(partition, op.d, op.dtype, op.device)
    total = phi_hvp_cost({"restarts": restarts, "max_iter": max_iter}, op.d)
    with progress_bar(total, "phi_smoothness", enabled=progress, upper=False) as bar:
        x, val, rounds, iters = _search(
            op,
            norm,
            restarts=restarts,
            max_iter=max_iter,
            max_rounds=max_rounds,
            seed=seed,
            eig_start=eig_start,
            eig_tol=eig_tol,
            bar=bar,
        )
    if upper is not None:
        high, conf, method = _upper_value(upper)
    else:
        from hessnorm.estimators.blockwise import blockwise_smoothness

        e = blockwise_smoothness(
            op, partition, seed=seed, confidence=confidence, n_cauchy=n_cauchy, progress=progress
        )
        high, conf, method = float(e.high), float(e.confidence), "blockwise_smoothness"
    extra = {
        "rounds": rounds,
        "iterations": iters,
        "starts": restarts * rounds + int(eig_start),
        "n_blocks": partition.n_blocks,
    }
    return _finish(
        "phi_smoothness", op, x, val, high, conf, method, t0, n0, {**extra, "_norm": norm}
    )


@register_estimator(
    "linf",
    metric="‖H‖_∞ (ℓ∞-smoothness)",
    bound="‖H‖_∞",
    metric_rotated="‖RᵀHR‖_∞ (ℓ∞-smoothness of L∘R)",
    bound_rotated="‖RᵀHR‖_∞",
    hvp_cost=lambda o, d: hvp_cost(o, d),
)
def linf_entry(op, *, seed: int = 0, progress: bool = False, n_cauchy: int = 50) -> Estimate:
    """Certified bracket of ‖H‖_∞: a sign-vector lower bound, the (1,1)-norm's upper end.

    Args:
        n_cauchy: Cauchy probes of the (1,1)-norm upper end.

    Example:
        >>> est = linf_entry(torch.eye(3, dtype=torch.float64))
        >>> round(est.low, 10), est.covers(3.0)
        (3.0, True)
    """
    return linf_smoothness(op, seed=seed, progress=progress, n_cauchy=n_cauchy)


@register_estimator(
    "phi",
    metric="‖H‖_(Φ→Φ*), Φ = {partition}",
    bound="‖H‖_(Φ→Φ*)",
    metric_rotated="‖RᵀHR‖_(Φ→Φ*), Φ = {partition}",
    bound_rotated="‖RᵀHR‖_(Φ→Φ*)",
    argument="partition",
)
def phi_entry(
    op,
    *,
    seed: int = 0,
    progress: bool = False,
    partition: PartitionName = "by_tensor",
) -> Estimate:
    """Certified bracket of Φ-smoothness: block-normalised lower bound, blockwise upper end.

    Args:
        partition: the parameter partition Φ (``Partition.named``).

    Example:
        >>> from torch import nn
        >>> from hessnorm.operator import HessianOperator
        >>> net = nn.Linear(2, 1).double()
        >>> x = torch.tensor([[1.0, 2.0], [0.5, -1.0]], dtype=torch.float64)
        >>> op = HessianOperator.from_module(net, nn.functional.mse_loss, (x, torch.zeros(2, 1)))
        >>> est = phi_entry(op, partition="single")  # one block: d‖H‖₂
        >>> est.low <= est.high
        True
    """
    return phi_smoothness(op, Partition.named(partition, op), seed=seed, progress=progress)
