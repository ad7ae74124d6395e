"""Spectral norm and extreme eigenpairs of the Hessian by Lanczos (paper 000, App. D.3).

Lanczos builds an orthonormal basis q_1, ..., q_m of the Krylov space
span{q_1, Hq_1, ..., H^{m-1}q_1} with one HVP per step, and the tridiagonal
T_m = Q_mᵀ H Q_m. The eigenvalues θ of T_m (Ritz values) approximate the extreme
eigenvalues of H fast (error shrinking geometrically with the spectral gap). Here
the basis is fully re-orthogonalised (classical Gram–Schmidt, applied twice), so
the computed Ritz residuals can be trusted, and every small-matrix computation
(T, its eigen-decomposition, residuals) is done in float64 even when the operator
works in float32.

Error bars of :func:`spectral_norm` (details in :mod:`hessnorm.estimators._krylov`):

* Lower end (deterministic): ρ_m = σ_max([T_m; β_m e_mᵀ]) = max over the Krylov
  space of ‖Hy‖/‖y‖ ≤ ‖H‖₂ (and ρ_m ≥ max|θ|).
* Upper end (probabilistic, confidence 1 − δ): with the uniformly random start v and
  an eigenvector u of the extreme eigenvalue, |⟨v, u⟩| ≥ t = δ/√(2d/π) with
  probability ≥ 1 − δ. On that event every polynomial p of degree < m satisfies
  t·|p(λ*)| ≤ ‖p(T_m)e₁‖, which bounds |λ*| = ‖H‖₂ (Kuczyński & Woźniakowski 1992
  for the gap-free case; deflated Chebyshev polynomials give the gap-dependent,
  geometrically converging case). Ritz residuals are not used for the upper end:
  they only say that *some* eigenvalue lies within r of θ.
* Rounding: both ends are widened by η = eps·max(10, √d) relative (the assumed
  relative error of one HVP in the operator's dtype; 1e-12 in float64 at d = 10⁸,
  1.3e-3 in float32 at d = 1.2·10⁸; override with ``hvp_rel_error``).

Memory: the basis is stored in chunks; once it would exceed ``basis_budget_bytes``
on the compute device, further vectors go to ``basis_device`` (default CPU) and
re-orthogonalisation streams over the chunks (same arithmetic, exact same result).
"""

from __future__ import annotations

import time
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from hessnorm.errors import ConfigError, NonFiniteError
from hessnorm.estimate import Estimate
from hessnorm.estimators._krylov import (
    NormBound,
    norm_lower,
    rounding_slack,
    start_radius,
    tridiag_eig,
)
from hessnorm.operator import as_operator

__all__ = ["spectral_norm", "top_eigenpairs", "Eigenpairs", "lanczos", "LanczosState"]

_DEFAULT_BASIS_BUDGET = 2 << 30  # bytes of basis kept on the compute device
_CHUNK_BYTES = 256 << 20


class LanczosState(NamedTuple):
    """The result of a Lanczos run.

    Attributes:
        alpha, beta: diagonal (m,) and off-diagonal (m,) of T_m in float64;
            ``beta[-1]`` is the residual coupling β_m to the next (unused) vector.
            After a restart (``restarts > 0``) the coupling at the junction is 0.
        basis: the (m, d) orthonormal Lanczos vectors (operator dtype), or None.
        n_hvp: HVPs spent (= m).
        breakdown: True when β_m ≈ 0, i.e. the last Krylov space is invariant and the
            Ritz values are exact eigenvalues of H.
        restarts: new random start vectors drawn after breakdowns (``restart=True``).
    """

    alpha: Tensor
    beta: Tensor
    basis: Tensor | None
    n_hvp: int
    breakdown: bool
    restarts: int = 0


class _Basis:
    """Orthonormal vectors stored in chunks: on the compute device up to a byte budget,
    then on ``spill`` (e.g. the CPU). Projections stream over the chunks."""

    def __init__(self, d, dtype, device, budget, spill):
        self.d, self.dtype, self.device = d, dtype, torch.device(device)
        self.spill = torch.device(spill) if spill is not None else torch.device("cpu")
        item = torch.empty((), dtype=dtype).element_size()
        self.rows = max(1, min(64, _CHUNK_BYTES // max(1, d * item)))
        self.on_device_max = max(0, int(budget) // max(1, d * item))
        self.chunks: list[Tensor] = []
        self.fill: list[int] = []
        self.n = 0

    def append(self, v: Tensor) -> None:
        if not self.chunks or self.fill[-1] == self.chunks[-1].shape[0]:
            dev = self.device if self.n < self.on_device_max else self.spill
            rows = self.rows
            if dev == self.device:
                rows = max(1, min(rows, self.on_device_max - self.n))
            self.chunks.append(torch.empty(rows, self.d, dtype=self.dtype, device=dev))
            self.fill.append(0)
        c = self.chunks[-1]
        c[self.fill[-1]] = v.to(c.device)
        self.fill[-1] += 1
        self.n += 1

    def project_out(self, w: Tensor) -> Tensor:
        """w − Q Qᵀ w (classical Gram–Schmidt, one pass)."""
        coefs = []
        for c, f in zip(self.chunks, self.fill):
            coefs.append(c[:f] @ w.to(c.device))
        for c, f, a in zip(self.chunks, self.fill, coefs):
            w = w - (a @ c[:f]).to(w.device)
        return w

    def combine(self, coeffs: Tensor) -> Tensor:
        """coeffs (k, n) float64 times the basis: (k, d) in float64 on the device."""
        out = torch.zeros(coeffs.shape[0], self.d, dtype=torch.float64, device=self.device)
        start = 0
        for c, f in zip(self.chunks, self.fill):
            part = coeffs[:, start : start + f].to(c.device) @ c[:f].double()
            out += part.to(self.device)
            start += f
        return out

    def dense(self) -> Tensor:
        return torch.cat([c[:f].to(self.device) for c, f in zip(self.chunks, self.fill)])


def _ritz(alpha: Tensor, beta: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Ritz values (ascending), eigenvectors of T and residual norms β_m |s_m|, float64."""
    a = alpha.double().cpu().numpy()
    b = beta.double().cpu().numpy()
    theta, S = tridiag_eig(a, b)
    resid = abs(b[-1]) * np.abs(S[-1])
    return (
        torch.from_numpy(theta),
        torch.from_numpy(np.ascontiguousarray(S)),
        torch.from_numpy(resid),
    )


def _random_unit(d: int, g: torch.Generator) -> Tensor:
    v = torch.randn(d, generator=g, dtype=torch.float64)
    return v / v.norm()


def lanczos(
    op,
    *,
    max_iter: int = 200,
    seed: int = 0,
    stop=None,
    keep_basis: bool = False,
    progress=None,
    stop_tridiag=None,
    restart: bool = False,
    basis_budget_bytes: int | None = None,
    basis_device=None,
):
    """Run Lanczos with full re-orthogonalisation on a Hessian-like operator.

    Cost: one HVP per iteration, at most ``min(max_iter, d)`` HVPs; O(m·d) work per
    iteration for the re-orthogonalisation. Memory: (iterations + 1) × d entries of
    basis, at most ``basis_budget_bytes`` of them on the operator's device, the rest on
    ``basis_device``.

    Args:
        op: anything with ``d``, ``dtype``, ``device`` and ``hvp`` (or a dense tensor).
        max_iter: maximal number of iterations (HVPs).
        seed: seeds the Gaussian start vector(s) (CPU generator, float64).
        stop: optional callable ``stop(theta, resid) -> bool`` evaluated after every
            iteration on the current Ritz values and residuals (float64 tensors).
        keep_basis: return the basis (needed for Ritz vectors).
        progress: optional tqdm bar updated once per iteration.
        stop_tridiag: optional cheaper hook ``stop_tridiag(alpha, beta, breakdown) ->
            bool`` on numpy float64 arrays (no Ritz decomposition is computed for it).
        restart: after a breakdown (invariant Krylov space) continue from a new random
            vector orthogonal to the basis instead of stopping, until ``max_iter`` or d
            vectors; T then is block diagonal.
        basis_budget_bytes: bytes of basis kept on the operator's device (default: the
            operator's ``memory_budget``, else 2 GiB).
        basis_device: where vectors beyond that budget live (default ``"cpu"``).

    Returns:
        LanczosState.

    Example:
        >>> st = lanczos(torch.diag(torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)))
        >>> st.n_hvp, st.breakdown, round(float(_ritz(st.alpha, st.beta)[0][-1]), 12)
        (3, True, 3.0)
    """
    op = as_operator(op)
    d = op.d
    m_max = int(min(max_iter, d))
    if m_max < 1:
        raise ConfigError(f"max_iter must be at least 1, got {max_iter}")
    if basis_budget_bytes is None:
        basis_budget_bytes = getattr(op, "memory_budget", None) or _DEFAULT_BASIS_BUDGET
    Q = _Basis(d, op.dtype, op.device, basis_budget_bytes, basis_device)
    g = torch.Generator().manual_seed(int(seed))
    q = _random_unit(d, g).to(device=op.device, dtype=op.dtype)
    Q.append(q)
    alphas: list[float] = []
    betas: list[float] = []
    breakdown = False
    restarts = 0
    scale = 0.0
    eps = torch.finfo(op.dtype).eps
    for j in range(m_max):
        w = op.hvp(q)
        if not torch.isfinite(w).all():
            raise NonFiniteError(
                "a Hessian-vector product in Lanczos is not finite; try float64 or check the model"
            )
        a = float(torch.dot(q.double(), w.double()))
        alphas.append(a)
        # Full re-orthogonalisation against every previous vector, twice ("twice is enough").
        for _ in range(2):
            w = Q.project_out(w)
        b = float(w.double().norm())
        betas.append(b)
        scale = max(scale, abs(a), b)
        if progress is not None:
            progress.update(1)
        breakdown = b <= 10 * eps * scale or b == 0.0
        if breakdown:
            betas[-1] = 0.0
        done = breakdown and not restart
        if not done and stop_tridiag is not None:
            done = stop_tridiag(np.array(alphas), np.array(betas), breakdown)
        if not done and stop is not None:
            theta, _, resid = _ritz(torch.tensor(alphas), torch.tensor(betas))
            done = bool(stop(theta, resid))
        if done or j + 1 == m_max:
            break
        if breakdown:
            # A new random direction orthogonal to the invariant space found so far.
            nrm = 0.0
            for _ in range(3):
                w = _random_unit(d, g).to(device=op.device, dtype=op.dtype)
                for _ in range(2):
                    w = Q.project_out(w)
                nrm = float(w.double().norm())
                if nrm > 0.5:
                    break
            if nrm <= 0.5:  # numerically, the basis spans everything
                break
            restarts += 1
            q = w / nrm
        else:
            q = w / b
        Q.append(q)
    n = len(alphas)
    beta_t = torch.tensor(betas, dtype=torch.float64)
    basis = None
    if keep_basis:
        basis = Q.dense()[:n]
    return LanczosState(
        torch.tensor(alphas, dtype=torch.float64), beta_t, basis, n, bool(breakdown), restarts
    )


def _bar(progress: bool, total: int, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=not progress, leave=False, unit="HVP")


def _confidence_arg(confidence: float) -> float:
    if not 0.0 < confidence < 1.0:
        raise ConfigError(f"confidence must lie in (0, 1), got {confidence}")
    return 1.0 - confidence


def spectral_norm(
    op,
    *,
    tol: float = 1e-4,
    max_iter: int = 300,
    seed: int = 0,
    progress: bool = True,
    confidence: float = 0.99,
    hvp_rel_error: float | None = None,
    basis_budget_bytes: int | None = None,
    basis_device=None,
) -> Estimate:
    """‖H‖₂ = max(|λ_max|, |λ_min|) by Lanczos with full re-orthogonalisation.

    The interval [low, high] (module docstring) holds with probability at least
    ``confidence`` over the random start vector: low is deterministic, high is the
    random-start Krylov bound, both widened for rounding by η. Stops as soon as
    (high − low) / low ≤ ``tol`` (checked every iteration on the m×m tridiagonal
    only, no Ritz vectors), or after ``max_iter`` iterations. Each iteration costs
    one HVP; on the test models 20–40 HVPs reach tol = 1e-4 at 99% confidence. When
    the rounding slack alone is wider than tol/4 the run stops at the Krylov part
    ≤ tol/4 (``details["rounding_limited"]``). Paper 000, App. D.3 measures
    ‖∇²L‖₂ this way (Table 2, "AdaSGD" row, d·‖H‖₂).

    Args:
        op: a HessianOperator, any Hessian-like (``d``, ``dtype``, ``device``,
            ``hvp``), or a dense symmetric tensor.
        tol: relative width of the reported interval at which to stop.
        max_iter: cap on iterations (= HVPs); the result then carries a wider interval.
        seed: seeds the random start vector; same seed, same number.
        progress: show a tqdm bar (HVPs done / cap).
        confidence: 1 − δ, the probability that ``high`` bounds ‖H‖₂.
        hvp_rel_error: η, the relative error of one HVP (default eps·max(10, √d)).
        basis_budget_bytes, basis_device: see :func:`lanczos`.

    Returns:
        Estimate ``spectral_norm`` with value ρ_m (the deterministic lower bound before
        rounding), low/high as above, ``confidence``, and details ``lambda_max``,
        ``lambda_min``, ``residual_max``, ``residual_min``, ``iterations``,
        ``converged``, ``breakdown``, ``rounding``, ``rounding_limited``, ``history``
        ((iteration, low, high) at a few checkpoints).

    Example:
        >>> H = torch.diag(torch.tensor([3.0, -5.0, 1.0, 0.5], dtype=torch.float64))
        >>> est = spectral_norm(H, progress=False)
        >>> round(est.value, 10), est.details["lambda_min"], est.covers(5.0)
        (5.0, -5.0, True)
    """
    if not tol > 0:
        raise ConfigError(f"tol must be positive, got {tol}")
    delta = _confidence_arg(confidence)
    op = as_operator(op)
    t0 = time.perf_counter()
    eps = torch.finfo(op.dtype).eps
    eta = rounding_slack(op.d, eps) if hvp_rel_error is None else float(hvp_rel_error)
    if not 0.0 <= eta < 0.5:
        raise ConfigError(f"hvp_rel_error must lie in [0, 0.5), got {hvp_rel_error}")
    t = start_radius(op.d, delta)
    # Krylov-part target: total width (1+tol) needs high_K/low_K ≤ (1+tol)(1−η)/(1+η).
    target = (1.0 + tol) * (1.0 - eta) / (1.0 + eta)
    rounding_limited = target < 1.0 + tol / 4
    if rounding_limited:
        target = 1.0 + tol / 4
    history: list[tuple[int, float, float]] = []

    def stop_tridiag(alpha, beta, breakdown):
        m = len(alpha)
        theta, S = tridiag_eig(alpha, beta)
        low = norm_lower(alpha, beta)
        if low == 0.0:
            return breakdown
        bound = NormBound(theta, S, t, breakdown)
        ok = bound.exceeds(low * target)
        if ok or m & (m - 1) == 0:  # record at powers of two and at the end
            history.append((m, low, bound.high(rel=1e-6)))
        return ok

    with _bar(progress, min(max_iter, op.d), "spectral_norm (Lanczos)") as bar:
        st = lanczos(
            op,
            max_iter=max_iter,
            seed=seed,
            stop_tridiag=stop_tridiag,
            progress=bar,
            basis_budget_bytes=basis_budget_bytes,
            basis_device=basis_device,
        )
    a, b = st.alpha.numpy(), st.beta.numpy()
    theta, S = tridiag_eig(a, b)
    resid = np.abs(b[-1]) * np.abs(S[-1])
    rho = norm_lower(a, b)
    high_k = NormBound(theta, S, t, st.breakdown).high() if rho > 0 else 0.0
    if not history or history[-1][0] != st.n_hvp:
        history.append((st.n_hvp, rho, high_k))
    low, high = rho / (1.0 + eta), high_k / (1.0 - eta)
    converged = rho == 0.0 or high_k <= rho * target * (1 + 1e-12)
    return Estimate(
        name="spectral_norm",
        value=rho,
        low=low,
        high=high,
        confidence=confidence,
        n_hvp=st.n_hvp,
        seconds=time.perf_counter() - t0,
        d=op.d,
        details={
            "lambda_max": float(theta[-1]),
            "lambda_min": float(theta[0]),
            "residual_max": float(resid[-1]),
            "residual_min": float(resid[0]),
            "iterations": st.n_hvp,
            "converged": bool(converged),
            "breakdown": bool(st.breakdown),
            "tol": tol,
            "rounding": eta,
            "rounding_limited": bool(rounding_limited),
            "bound": "random-start Krylov (Kuczyński–Woźniakowski, deflated Chebyshev)",
            "history": history,
        },
    )


class Eigenpairs(NamedTuple):
    """Ritz approximations of k eigenpairs.

    Attributes:
        values: (k,) float64 Ritz values, ordered as requested by ``which``.
        vectors: (k, d) unit Ritz vectors (operator dtype), row i for values[i].
        residuals: (k,) float64 ‖Hy − θy‖₂; an eigenvalue of H lies within
            ``residuals[i]`` of ``values[i]``.
        n_hvp: HVPs spent.
        converged: whether every residual reached ``tol · max|θ|``.
        restarts: random restarts after exhausted Krylov spaces (0 normally).
    """

    values: Tensor
    vectors: Tensor
    residuals: Tensor
    n_hvp: int
    converged: bool
    restarts: int = 0


_WHICH = ("LM", "LA", "SA")


def _select(theta: Tensor, k: int, which: str) -> Tensor:
    if which == "LA":
        return torch.arange(len(theta) - 1, len(theta) - 1 - k, -1).clamp(min=0)[
            : min(k, len(theta))
        ]
    if which == "SA":
        return torch.arange(min(k, len(theta)))
    return torch.argsort(theta.abs(), descending=True, stable=True)[:k]


def top_eigenpairs(
    op,
    k: int,
    *,
    which: str = "LM",
    tol: float = 1e-4,
    max_iter: int = 300,
    seed: int = 0,
    progress: bool = True,
    basis_budget_bytes: int | None = None,
    basis_device=None,
) -> Eigenpairs:
    """The k extreme eigenpairs of H by Lanczos with full re-orthogonalisation.

    Stops when every wanted Ritz pair has residual ‖Hy − θy‖ ≤ tol · max|θ|.
    Always returns exactly k pairs: when the Krylov space becomes invariant before
    k Ritz values exist (rank-1 H, identity, zero), Lanczos restarts from a new
    random vector orthogonal to the space found, so the remaining pairs are proven
    eigenpairs of the complement (e.g. zeros of a low-rank H). Cost: one HVP per
    iteration (≤ ``max(max_iter, k)``); memory as in :func:`lanczos`.

    Args:
        op: a Hessian-like operator or a dense symmetric tensor.
        k: number of eigenpairs (1 ≤ k ≤ d).
        which: ``"LM"`` largest magnitude, ``"LA"`` largest, ``"SA"`` smallest (algebraic).
        tol, max_iter, seed, progress: as in :func:`spectral_norm`.
        basis_budget_bytes, basis_device: see :func:`lanczos`.

    Example:
        >>> H = torch.diag(torch.arange(1.0, 11.0, dtype=torch.float64))
        >>> pairs = top_eigenpairs(H, 2, progress=False)
        >>> [round(v, 8) for v in pairs.values.tolist()]
        [10.0, 9.0]
        >>> top_eigenpairs(torch.zeros(5, 5, dtype=torch.float64), 3, progress=False).values.tolist()
        [0.0, 0.0, 0.0]
    """
    op = as_operator(op)
    if which not in _WHICH:
        raise ConfigError(f"which must be one of {_WHICH}, got {which!r}")
    if not 1 <= int(k) <= op.d:
        raise ConfigError(f"k must be between 1 and d = {op.d}, got {k}")
    k = int(k)

    def stop(theta, resid):
        if len(theta) < k:
            return False
        idx = _select(theta, k, which)
        return bool((resid[idx] <= tol * theta.abs().max()).all())

    with _bar(progress, min(max(max_iter, k), op.d), f"top_eigenpairs (k={k})") as bar:
        st = lanczos(
            op,
            max_iter=max(max_iter, k),
            seed=seed,
            stop=stop,
            keep_basis=True,
            progress=bar,
            restart=True,
            basis_budget_bytes=basis_budget_bytes,
            basis_device=basis_device,
        )
    theta, S, resid = _ritz(st.alpha, st.beta)
    if len(theta) < k:  # cannot happen: each HVP adds a Ritz value and max_iter ≥ k
        raise RuntimeError(f"Lanczos produced {len(theta)} < k = {k} Ritz values")
    idx = _select(theta, k, which)
    coeffs = S[:, idx].T.to(device=st.basis.device)  # (k, m) float64
    vectors = (coeffs @ st.basis.double()).to(st.basis.dtype)
    converged = bool((resid[idx] <= tol * theta.abs().max()).all())
    return Eigenpairs(theta[idx], vectors, resid[idx], st.n_hvp, converged, st.restarts)
