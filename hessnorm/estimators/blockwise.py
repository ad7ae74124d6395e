"""Blockwise smoothness surrogate S(H, Φ) = Σ_{b,b'} √(d_b d_b') ‖H_{b,b'}‖₂ (paper 000).

For a partition Φ of the coordinates into blocks b of sizes d_b, S(H, Φ) is the
trace of the diagonal matrix A with a_b = Σ_{b'} √(d_{b'}/d_b)‖H_{b,b'}‖₂ on block
b, which satisfies −A ⪯ H ⪯ A (Lemma C.3; Defs. 3.8–3.9 and C.2 define the
Φ-smoothness it bounds). Special cases: singleton blocks (Adam) give ‖H‖₁,₁, one
block (AdaSGD) gives d‖H‖₂; ``method="auto"`` dispatches them to the dedicated
estimators (:func:`~hessnorm.estimators.cauchy.l11_norm`,
:func:`~hessnorm.estimators.lanczos.spectral_norm`) unless the exact path is cheaper.

General partitions, per block pair:

* Small blocks (d_b' ≤ ``exact_threshold``) are probed with identity columns:
  d_b' HVPs give the whole block column H[:, b'], hence every ‖H_{b,b'}‖₂ exactly.
* Each remaining pair of large blocks gets its own random-start Lanczos run: on the
  symmetric H_{b,b} (one HVP per step: embed q on b, keep rows b), or on
  H_{b,b'}ᵀH_{b,b'} over the smaller of the two blocks (two HVPs per step), which is
  Golub–Kahan for the singular value. Its interval is the random-start Krylov bound of
  :mod:`hessnorm.estimators._krylov` (deterministic lower end ρ_m, upper end at
  confidence 1 − δ/P), so with a union bound over the P random pairs all upper ends
  hold together with probability ≥ 1 − δ. The bound does not depend on the block
  size beyond log √d_b, so the interval stays within ``pair_tol`` of the value at
  any block size.
* ``pairs=m`` (an int; ``"diagonal"`` = 0) for many blocks: every diagonal pair and
  the m heaviest off-diagonal pairs are measured as above; every other pair is
  bracketed by [‖(H[:, b'] y)_b‖, min(c_b, c_b')], where c_b' is the random-start
  upper bound on the block-column norm ‖H[:, b']‖₂ ≥ ‖H_{b,b'}‖₂ (Lanczos on
  H[:, b']ᵀH[:, b'], two HVPs per step, also union-bounded) and y its top Ritz
  vector (one more HVP). Cost O(B) Lanczos runs instead of O(B²).

Rounding: each HVP is assumed to carry relative error η = eps·max(10, √d)
(:func:`~hessnorm.estimators._krylov.rounding_slack`); pair bounds are widened by it.

Cost: Σ_{small b'} d_b' + Σ_{large pairs} (1 or 2) × (Lanczos steps ≤ ``max_pair_iter``)
HVPs; ``dry_run=True`` returns that count before doing anything, ``budget=`` refuses
runs that could exceed it, and the progress bar counts HVPs against it.
"""

from __future__ import annotations

import dataclasses
import math
import time

import torch
from torch import Tensor

from hessnorm.errors import ConfigError, TooLargeError
from hessnorm.estimate import Estimate
from hessnorm.estimators import _fd_widen, _space
from hessnorm.estimators._krylov import (
    KrylovBound,
    norm_lower,
    ritz,
    rounding_slack,
    start_radius,
)
from hessnorm.estimators._progress import progress_bar
from hessnorm.estimators.lanczos import lanczos, spectral_norm
from hessnorm.operator import as_operator
from hessnorm.partition import Partition, PartitionName
from hessnorm.registry import register_estimator

__all__ = ["blockwise_smoothness"]


def _segment_gram(Y: Tensor, labels: Tensor, n_blocks: int) -> Tensor:
    """G[b] = Y_bᵀ Y_b for Y (d, p) and row labels (d,): (B, p, p) in float64."""
    p = Y.shape[1]
    G = torch.zeros(n_blocks, p, p, dtype=torch.float64, device=Y.device)
    step = max(1, (1 << 24) // max(p * p, 1))
    for i in range(0, Y.shape[0], step):
        y = Y[i : i + step].double()
        G.index_add_(0, labels[i : i + step], y[:, :, None] * y[:, None, :])
    return G


def _block_col_norms(Y: Tensor, labels: Tensor, n_blocks: int) -> Tensor:
    """‖Y_b‖₂ (largest singular value) of each row block of Y (d, p): (B,) float64."""
    G = _segment_gram(Y, labels, n_blocks)
    return torch.linalg.eigvalsh(G)[:, -1].clamp(min=0).sqrt()


def _embed(cols: Tensor, idx: Tensor, d: int, dtype, device) -> Tensor:
    """Vectors (k, d) equal to cols (d_b, k)ᵀ on the coordinates idx and 0 elsewhere."""
    V = torch.zeros(cols.shape[1], d, dtype=dtype, device=device)
    V[:, idx] = cols.T.to(device=device, dtype=dtype)
    return V


class _BlockOp:
    """H_{b,b} (``rows is None``: symmetric block) or H_{rows,cols}ᵀH_{rows,cols} on the
    coordinates ``cols`` (``rows="all"``: the block column), counting full HVPs."""

    def __init__(self, op, cols: Tensor, rows, bar):
        self.op, self.cols, self.rows, self.bar = op, cols, rows, bar
        self.d, self.dtype, self.device = len(cols), op.dtype, op.device
        self.n_hvp = 0

    @property
    def matvec_count(self) -> int:
        """Full HVPs so far (the :class:`~hessnorm.operator.HessianLike` contract)."""
        return self.n_hvp

    def _full(self, v: Tensor) -> Tensor:
        self.n_hvp += 1
        if self.bar is not None:
            self.bar.update(1)
        return self.op.hvp(v)

    def hvp(self, q: Tensor) -> Tensor:
        v = torch.zeros(self.op.d, dtype=self.dtype, device=self.device)
        v[self.cols] = q
        y = self._full(v)
        if self.rows is None:
            return y[self.cols]
        if not isinstance(self.rows, str):
            u = torch.zeros_like(y)
            u[self.rows] = y[self.rows]
            y = u
        return self._full(y)[self.cols]


def _stopper(n, delta, tol):
    """Stop rule of :func:`spectral_norm` for the normal operator AᵀA (tol on σ)."""
    t = start_radius(n, delta)
    target = (1 + tol) ** 2

    def stop(alpha, beta, breakdown):
        low = norm_lower(alpha, beta)
        if low == 0.0:
            return breakdown
        return KrylovBound(alpha, beta, t, breakdown, floor=low).exceeds(low * target)

    return stop


def _squared_slack(eta: float) -> float:
    """Relative HVP error of AᵀA (two HVPs) when one HVP is off by η: 2η + η², below 1/2."""
    return min(2 * eta + eta * eta, 0.49)


def _pair_bound_from_state(st, n, delta, eta):
    """(low, high) of σ_max(A) from a Lanczos state of AᵀA, with confidence 1 − delta."""
    a, b = st.alpha.numpy(), st.beta.numpy()
    rho = norm_lower(a, b)
    if rho == 0.0:
        return 0.0, 0.0
    high = KrylovBound(a, b, start_radius(n, delta), st.breakdown, floor=rho).high()
    e2 = _squared_slack(eta)
    return math.sqrt(rho / (1 + e2)), math.sqrt(high / (1 - e2))


def _pair_bound(bop, *, symmetric, tol, max_iter, seed, delta, eta):
    """(low, high) for ‖H_{b,b}‖₂ or the singular value √‖AᵀA‖₂, with confidence 1 − delta.

    The off-diagonal case runs :func:`spectral_norm` on AᵀA with the tolerance and the
    HVP error squared ((1 + tol)² − 1 and 2η + η²) and takes square roots.
    """
    e = spectral_norm(
        bop,
        tol=tol if symmetric else (1 + tol) ** 2 - 1,
        max_iter=max_iter,
        seed=seed,
        confidence=1 - delta,
        hvp_rel_error=eta if symmetric else _squared_slack(eta),
        progress=False,
    )
    if symmetric:
        return e.low, e.high, e.details["breakdown"]
    return math.sqrt(e.low), math.sqrt(e.high), e.details["breakdown"]


def blockwise_smoothness(
    op,
    partition: Partition,
    *,
    seed: int = 0,
    confidence: float = 0.95,
    n_cauchy: int = 50,
    tol: float = 1e-4,
    pair_tol: float = 0.01,
    max_pair_iter: int = 150,
    exact_threshold: int = 64,
    pairs: str | int = "all",
    method: str = "auto",
    max_blocks: int | None = None,
    budget: int | None = None,
    dry_run: bool = False,
    progress: bool = True,
):
    """S(H, Φ) = Σ_{b,b'} √(d_b d_b') ‖H_{b,b'}‖₂ with an honest interval (module docstring).

    Args:
        op: a Hessian-like operator or a dense symmetric tensor.
        partition: the :class:`~hessnorm.partition.Partition` Φ (must cover op.d).
        seed: seeds every random start vector (CPU generator); same seed, same number.
        confidence: probability that every random upper end holds simultaneously (the
            lower ends are deterministic); for the Cauchy path, the nominal coverage of
            its influence-function interval.
        n_cauchy: probes when Φ is the coordinate partition and d > n_cauchy (then
            S = ‖H‖₁,₁ by :func:`~hessnorm.estimators.cauchy.l11_norm`).
        tol: Lanczos tolerance when Φ is a single block (then S = d‖H‖₂).
        pair_tol: relative width at which each pair's Lanczos run stops.
        max_pair_iter: cap on Lanczos steps per pair (the interval is then wider).
        exact_threshold: block columns with at most this many coordinates are probed
            exactly with identity columns.
        pairs: ``"all"`` (every pair of large blocks measured), or an int m /
            ``"diagonal"`` (m = 0): diagonal pairs plus the m heaviest off-diagonal
            pairs measured, the rest bracketed by block-column bounds.
        method: ``"auto"`` (dispatch the special cases when cheaper than exact) or
            ``"lanczos"`` (always the per-pair path; ``"randomized"`` is an alias).
        max_blocks: refuse (TooLargeError) partitions with more blocks than this.
        budget: refuse (TooLargeError) runs whose HVP count could exceed this.
        dry_run: return the cost plan (dict: ``n_hvp_max``, ``exact_columns``,
            ``random_pairs``, ``bracketed_pairs``) without any HVP.
        progress: show a tqdm bar over HVPs (total = the planned maximum).

    Returns:
        Estimate ``blockwise_smoothness``: value = Σ √(d_b d_b')·(lower bound of
        ‖H_{b,b'}‖₂), [low, high] from the pair bounds. Details: ``diagonal_part``
        (Σ_b d_b ‖H_{b,b}‖₂, with ``diagonal_part_high``), ``n_blocks``, ``method``,
        ``exact_blocks``, ``random_pairs``, ``bracketed_pairs``, ``n_hvp_max``,
        ``block_norms`` (B×B nested list when B ≤ 256). Or the plan dict (dry_run).

    Example:
        >>> H = torch.tensor([[2.0, 1.0, 0.0], [1.0, 2.0, 0.0], [0.0, 0.0, -4.0]], dtype=torch.float64)
        >>> est = blockwise_smoothness(H, Partition.from_labels([0, 0, 1]), progress=False)
        >>> round(est.value, 10), est.n_hvp  # 2·3 + 1·4 (off-diagonal blocks are 0)
        (10.0, 3)
    """
    op = as_operator(op)
    _refuse_unsupported(op)
    if not isinstance(partition, Partition):
        raise ConfigError(f"partition must be a hessnorm Partition, got {type(partition).__name__}")
    partition.check_dim(op.d)
    if method == "randomized":
        method = "lanczos"
    if method not in ("auto", "lanczos"):
        raise ConfigError(f"method must be 'auto' or 'lanczos', got {method!r}")
    if not 0.0 < confidence < 1.0:
        raise ConfigError(f"confidence must lie in (0, 1), got {confidence}")
    if pairs == "diagonal":
        pairs = 0
    if not (pairs == "all" or (isinstance(pairs, int) and pairs >= 0)):
        raise ConfigError(f"pairs must be 'all', 'diagonal' or an int >= 0, got {pairs!r}")
    if not pair_tol > 0 or max_pair_iter < 1 or exact_threshold < 0:
        raise ConfigError(
            f"need pair_tol > 0, max_pair_iter >= 1, exact_threshold >= 0; got {pair_tol}, "
            f"{max_pair_iter}, {exact_threshold}"
        )
    B, d = partition.n_blocks, op.d
    if max_blocks is not None and B > max_blocks:
        raise TooLargeError(
            f"the partition has {B:,} blocks > max_blocks = {max_blocks:,}. Raise max_blocks, "
            "use a coarser partition (by_tensor), or pairs='diagonal'"
        )
    t0 = time.perf_counter()
    if method == "auto" and B == d and d > n_cauchy and not dry_run:
        from hessnorm.estimators.cauchy import l11_norm

        _check_budget(budget, n_cauchy, "the Cauchy estimator (n_cauchy probes)")
        e = l11_norm(op, n=n_cauchy, seed=seed, confidence=confidence, progress=progress)
        return _rename(
            e,
            t0,
            {"method": "cauchy (coordinates: S = ‖H‖₁,₁)", "n_blocks": B, "diagonal_part": None},
        )
    if method == "auto" and B == 1 and d > exact_threshold and not dry_run:
        _check_budget(budget, min(300, d), "Lanczos on the single block")
        e = spectral_norm(op, tol=tol, seed=seed, progress=progress)
        details = {
            "method": "lanczos (single block: S = d‖H‖₂)",
            "n_blocks": 1,
            "spectral_norm": e.value,
            "diagonal_part": d * e.value,
            "diagonal_part_high": d * e.high,
        }
        return Estimate(
            "blockwise_smoothness",
            d * e.value,
            d * e.low,
            d * e.high,
            e.confidence,
            e.n_hvp,
            time.perf_counter() - t0,
            d,
            details,
        )
    return _per_pair(
        op,
        partition,
        seed,
        confidence,
        pair_tol,
        max_pair_iter,
        exact_threshold,
        pairs,
        budget,
        dry_run,
        progress,
        t0,
    )


def _refuse_unsupported(op) -> None:
    """Blockwise needs embedded block vectors and exact HVPs: refuse the rest clearly."""
    if _space.is_sharded(op):
        raise ConfigError(
            "blockwise_smoothness does not run on a sharded (FSDP) operator yet: its block "
            "vectors are embedded in full-length vectors. Use spectral_norm, l11_norm or "
            "trace(method='hutchinson') there, or run blockwise on one process"
        )
    if _fd_widen.fd_log(op)[0] is not None:
        raise ConfigError(
            "blockwise_smoothness does not propagate finite-difference HVP errors into its "
            "pair bounds; build the operator with an exact HVP mode (mode='auto', 'fwd' or 'rev')"
        )


def _check_budget(budget, n, what):
    if budget is not None and n > budget:
        raise TooLargeError(
            f"{what} may cost up to {n:,} HVPs > budget = {budget:,}. Raise budget, lower "
            "max_pair_iter / raise pair_tol, use pairs='diagonal' or a coarser partition"
        )


def _rename(e: Estimate, t0: float, extra: dict) -> Estimate:
    details = dict(e.details)
    details.update(extra)
    return Estimate(
        "blockwise_smoothness",
        e.value,
        e.low,
        e.high,
        e.confidence,
        e.n_hvp,
        time.perf_counter() - t0,
        e.d,
        details,
    )


@dataclasses.dataclass
class _PairPlan:
    """Which block columns are probed exactly and which pairs get random-start runs."""

    sizes: list[int]
    exact_cols: list[bool]
    large: list[int]
    diag_pairs: list[tuple[int, int]]
    off_pairs: list[tuple[int, int]]
    bracket: bool
    m_off: int
    max_iter: int
    summary: dict

    def steps(self, n: int) -> int:
        return min(self.max_iter, n)

    @property
    def n_random(self) -> int:
        """Random upper bounds the union bound is split over."""
        measured = len(self.diag_pairs) + (self.m_off if self.bracket else len(self.off_pairs))
        return measured + (len(self.large) if self.bracket else 0)


def _plan_pairs(partition, max_iter: int, threshold: int, pairs) -> _PairPlan:
    """The cost plan: exact columns where cheaper than the random runs they settle."""
    B = partition.n_blocks
    sizes = partition.sizes.tolist()

    def steps(n):
        return min(max_iter, n)

    exact_cols = [s <= threshold for s in sizes]
    if pairs == "all":
        # Probe a block column exactly when its d_b' HVPs cost less than the planned
        # maximum of the random pair runs it would settle (smallest blocks first).
        for j in sorted(range(B), key=lambda i: sizes[i]):
            if exact_cols[j]:
                continue
            others = [i for i in range(B) if not exact_cols[i] and i != j]
            saved = steps(sizes[j]) + sum(2 * steps(min(sizes[i], sizes[j])) for i in others)
            if sizes[j] <= saved:
                exact_cols[j] = True
    large = [j for j in range(B) if not exact_cols[j]]
    diag_pairs = [(j, j) for j in large]
    off_pairs = [(a, b) for i, a in enumerate(large) for b in large[i + 1 :]]
    bracket = pairs != "all" and len(off_pairs) > pairs
    n_exact = sum(s for s, e in zip(sizes, exact_cols) if e)

    def off_cost(a, b):
        return 2 * steps(min(sizes[a], sizes[b]))

    col_cost = sum(2 * steps(sizes[j]) + 1 for j in large) if bracket else 0
    m_off = int(pairs) if bracket else 0
    # the measured off-diagonal pairs are chosen later; plan with the most expensive ones
    worst_off = sorted((off_cost(a, b) for a, b in off_pairs), reverse=True)[:m_off]
    n_max = (
        n_exact
        + sum(steps(sizes[j]) for j, _ in diag_pairs)
        + (sum(worst_off) if bracket else sum(off_cost(a, b) for a, b in off_pairs))
        + col_cost
    )
    summary = {
        "n_hvp_max": int(n_max),
        "exact_columns": int(sum(exact_cols)),
        "random_pairs": len(diag_pairs) + (m_off if bracket else len(off_pairs)),
        "bracketed_pairs": len(off_pairs) - m_off if bracket else 0,
        "column_bounds": len(large) if bracket else 0,
    }
    return _PairPlan(
        sizes, exact_cols, large, diag_pairs, off_pairs, bracket, m_off, max_iter, summary
    )


@dataclasses.dataclass
class _PairBounds:
    """Running bounds low ≤ ‖H_{b,b'}‖₂ ≤ high for every block pair, and the HVPs spent."""

    low: Tensor
    high: Tensor
    n_hvp: int = 0

    def tighten(self, a: int, b: int, lo: float, hi: float) -> None:
        self.low[a, b] = self.low[b, a] = max(float(self.low[a, b]), lo)
        self.high[a, b] = self.high[b, a] = min(float(self.high[a, b]), hi)


def _exact_columns(op, partition, plan: _PairPlan, bounds: _PairBounds, labels, bar) -> None:
    """Identity columns for the small blocks, many blocks per batched HVP call."""
    blocks, sizes, B, d = partition.blocks(), plan.sizes, partition.n_blocks, op.d
    low, high = bounds.low, bounds.high
    group: list[int] = []
    exact_ids = [j for j in range(B) if plan.exact_cols[j]]
    for pos, j in enumerate(exact_ids):
        group.append(j)
        if sum(sizes[i] for i in group) < 256 and pos + 1 < len(exact_ids):
            continue
        idx = torch.cat([blocks[i] for i in group]).to(op.device)
        Y = op.hvp(_embed(torch.eye(len(idx), dtype=torch.float64), idx, d, op.dtype, op.device))
        bounds.n_hvp += len(idx)
        bar.update(len(idx))
        start = 0
        for i in group:
            col = _block_col_norms(Y[start : start + sizes[i]].T, labels, B).cpu()
            low[:, i] = torch.maximum(low[:, i], col)
            low[i, :] = torch.maximum(low[i, :], col)
            high[:, i] = low[:, i]
            high[i, :] = low[i, :]
            start += sizes[i]
        group = []


def _column_brackets(op, partition, plan, bounds, labels, seeds, delta, eta, tol, bar) -> None:
    """Bracket every off-diagonal pair of large blocks by block-column bounds."""
    blocks, B, d = partition.blocks(), partition.n_blocks, op.d
    for j in plan.large:
        cols = blocks[j].to(op.device)
        bop = _BlockOp(op, cols, "all", bar)
        st = lanczos(
            bop,
            max_iter=plan.steps(plan.sizes[j]),
            seed=int(seeds[B * B + j]),
            keep_basis=True,
            stop_tridiag=_stopper(bop.d, delta, tol),
        )
        _, c_high = _pair_bound_from_state(st, bop.d, delta, eta)
        theta, S, _ = ritz(st.alpha, st.beta)
        y = st.basis.combine(S[:, -1:].T)[0].to(op.dtype)
        st.basis.close()
        Y = bop._full(_embed(y[:, None], cols, d, op.dtype, op.device)[0])
        bounds.n_hvp += bop.n_hvp
        col_low = _block_col_norms(Y[:, None], labels, B).cpu() / (1 + eta)
        for a, b in plan.off_pairs:
            if j in (a, b):
                other = b if j == a else a
                bounds.tighten(a, b, float(col_low[other]), c_high)


def _measure_pairs(op, partition, plan, bounds, measured, seeds, delta, eta, tol, bar) -> None:
    """Random-start Lanczos (diagonal) / Golub–Kahan (off-diagonal) bounds per pair."""
    blocks, sizes, B = partition.blocks(), plan.sizes, partition.n_blocks
    for a, b in measured:
        if a == b:
            bop = _BlockOp(op, blocks[a].to(op.device), None, bar)
        elif sizes[a] <= sizes[b]:  # Aᵀ A over the smaller block a, A = H[b, a]
            bop = _BlockOp(op, blocks[a].to(op.device), blocks[b].to(op.device), bar)
        else:
            bop = _BlockOp(op, blocks[b].to(op.device), blocks[a].to(op.device), bar)
        lo_ab, hi_ab, _ = _pair_bound(
            bop,
            symmetric=a == b,
            tol=tol,
            max_iter=plan.steps(bop.d),
            seed=int(seeds[a * B + b]),
            delta=delta,
            eta=eta,
        )
        bounds.n_hvp += bop.n_hvp
        bounds.tighten(a, b, lo_ab, hi_ab)


def _per_pair(
    op,
    partition,
    seed,
    confidence,
    pair_tol,
    max_iter,
    threshold,
    pairs,
    budget,
    dry_run,
    progress,
    t0,
):
    """The general path: plan, exact columns, brackets, per-pair bounds, the sum."""
    B, d = partition.n_blocks, op.d
    plan = _plan_pairs(partition, max_iter, threshold, pairs)
    if dry_run:
        return plan.summary
    n_max = plan.summary["n_hvp_max"]
    _check_budget(budget, n_max, "blockwise_smoothness")
    delta = (1.0 - confidence) / max(1, plan.n_random)
    eta = rounding_slack(d, torch.finfo(op.dtype).eps)
    labels = partition.labels.to(op.device)
    bounds = _PairBounds(
        torch.zeros(B, B, dtype=torch.float64), torch.full((B, B), math.inf, dtype=torch.float64)
    )
    seeds = torch.randint(0, 2**62, (B * B + B + 1,), generator=torch.Generator().manual_seed(seed))
    root = partition.sizes.double().sqrt()
    w = root[:, None] * root[None, :]
    with progress_bar(
        n_max,
        "blockwise_smoothness (HVPs, at most)",
        enabled=progress,
        upper=True,
        advice="a coarser partition, pairs='diagonal' or a small int (top-m pairs), "
        "a looser pair_tol or a smaller max_pair_iter; dry_run=True shows the plan",
    ) as bar:
        _exact_columns(op, partition, plan, bounds, labels, bar)
        slack = 1000 * torch.finfo(op.dtype).eps  # exact columns: rounding of the HVPs
        high = bounds.high
        bounds.high = torch.where(torch.isfinite(high), high * (1 + slack + eta), high)
        bounds.low = bounds.low / (1 + eta)
        measured = plan.off_pairs
        if plan.bracket:
            _column_brackets(op, partition, plan, bounds, labels, seeds, delta, eta, pair_tol, bar)
            # measure the m pairs with the largest weighted upper bracket
            measured = sorted(plan.off_pairs, key=lambda p: -float(w[p] * bounds.high[p]))
            measured = measured[: plan.m_off]
        _measure_pairs(
            op, partition, plan, bounds, plan.diag_pairs + list(measured), seeds, delta, eta,
            pair_tol, bar,
        )  # fmt: skip
        bar.set_total(bounds.n_hvp)
    return _blockwise_estimate(partition, plan, bounds, w, confidence, pair_tol, eta, t0, d)


def _blockwise_estimate(partition, plan, bounds, w, confidence, pair_tol, eta, t0, d):
    low, high = bounds.low, bounds.high
    S_value = float((w * low).sum())
    S_high = float((w * high).sum())
    sz = partition.sizes.double()
    all_exact = not plan.large
    details = {
        "method": "exact block columns" if all_exact else "per-pair random-start Lanczos bounds",
        "n_blocks": partition.n_blocks,
        "diagonal_part": float((sz * low.diagonal()).sum()),
        "diagonal_part_high": float((sz * high.diagonal()).sum()),
        "exact_blocks": int(sum(plan.exact_cols)),
        "pair_tol": pair_tol,
        "rounding": eta,
        **plan.summary,
    }
    if partition.n_blocks <= 256:
        details["block_norms"] = low.tolist()
    return Estimate(
        name="blockwise_smoothness",
        value=S_value,
        low=S_value,
        high=S_high,
        confidence=1.0 if all_exact else confidence,
        n_hvp=bounds.n_hvp,
        seconds=time.perf_counter() - t0,
        d=d,
        details=details,
    )


@register_estimator(
    "blockwise",
    metric="H(L, Φ_{partition})",
    bound="S(H, Φ)",
    metric_rotated="H(L∘R, Φ_{partition})",
    bound_rotated="S(RᵀHR, Φ)",
    argument="partition",
)
def blockwise_entry(
    op,
    *,
    seed: int = 0,
    progress: bool = False,
    partition: PartitionName = "by_tensor",
) -> Estimate:
    """S(H, Φ) for a named partition with per-pair random-start bounds (:func:`blockwise_smoothness`).

    The row's metric names the partition (``H(L, Φ_by_tensor)`` for ``blockwise:by_tensor``).

    Args:
        partition: the parameter partition Φ (``Partition.named``): one block per tensor,
            per output row, per coordinate, or a single block.

    Example:
        >>> from torch import nn
        >>> from hessnorm.operator import HessianOperator
        >>> net = nn.Linear(2, 1).double()
        >>> x = torch.tensor([[1.0, 2.0], [0.5, -1.0]], dtype=torch.float64)
        >>> op = HessianOperator.from_module(net, nn.functional.mse_loss, (x, torch.zeros(2, 1)))
        >>> est = blockwise_entry(op, partition="by_tensor")  # d = 3, exact columns
        >>> est.details["partition"], est.details["method"]
        ('by_tensor', 'exact block columns')
    """
    est = blockwise_smoothness(op, Partition.named(partition, op), seed=seed, progress=progress)
    return dataclasses.replace(est, details={**est.details, "partition": partition})
