"""The (1,1)-norm ‖H‖₁,₁ = Σ_jk |H_jk| from Cauchy probes (paper 000, App. D.3, Alg. 4).

Cauchy is 1-stable: for v with i.i.d. standard Cauchy entries, (Hv)_j = Σ_k H_jk v_k
is Cauchy(0, a_j) with scale a_j = Σ_k |H_jk|, the absolute row sum. With n probes
v⁽¹⁾..v⁽ⁿ⁾, the median over i of |(Hv⁽ⁱ⁾)_j| estimates a_j (|Cauchy(0, a)| has median
a), and Algorithm 4 returns Σ_j median_i |(Hv⁽ⁱ⁾)_j|.

Two refinements over the bare algorithm, both documented in the Estimate:

* **Exact de-biasing.** Every row's sample median divided by a_j has the same
  known law (the sample median of n |Cauchy(0,1)|), whose mean c_n > 1
  (c_50 ≈ 1.025; the bias is ≈ π²/(8n)). We divide by c_n, computed by
  quadrature over Beta-distributed uniform order statistics, which makes the
  estimate exactly unbiased for every H. ``debias=False`` gives Algorithm 4's
  number; ``details["raw_value"]`` always holds it.
* **An interval from the probes' influence on the sum.** Write m_j for row j's
  statistic, ŝ_j = m_j / c_n and T = Σ_j ŝ_j. A sample median (or quartile)
  moves, to first order, by the average of its influence function over the
  probes: m_j ≈ a_j + (1/n) Σ_i ψ_j(Y_ij) with ψ_j(y) = π a_j (1/2 − 1{|y| < a_j})
  (the density of |Cauchy(0, a)| at its median a is 1/(πa); half the
  interquartile range of the signed values has the same influence function).
  So T − E T ≈ (1/n) Σ_i Z_i with one number per probe,

      Z_i = Σ_j π ŝ_j (1/2 − I_ij),   I_ij = 1{|Y_ij| < m_j} + ½·1{|Y_ij| = m_j},

  and (up to replacing a_j by its estimate) the Z_i are i.i.d. over probes
  whatever the dependence between rows: the
  sum over j inside Z_i carries the per-row variances and every cross-row
  covariance at once, for low-rank H (rows move together) and (block-)diagonal
  H (rows independent) alike. The standard error is

      se² = κ_n · s²(Z) / n,   s²(Z) = Σ_i (Z_i − Z̄)² / (n − 1),

  where κ_n (≈ 0.95 at n = 50, → 1 as n grows) corrects the first-order
  approximation so that se² is unbiased for Var T when the rows are
  independent (up to κ_n's ~1% Monte Carlo error); it is the ratio Var(ŝ) / E[se²] for one Cauchy(0, 1) row,
  computed once per (n, method) by a fixed-seed Monte Carlo. The interval is
  symmetric on the log scale (T and the a_j are scales, and T is right-skewed
  when few rows are effectively independent), with a Student t quantile for the
  n − 1 degrees of freedom of s²(Z):

      [low, high] = [T·exp(−t_{n−1,(1+γ)/2} · se/T),  T·exp(+t_{n−1,(1+γ)/2} · se/T)].

  It always contains T. Its confidence γ is asymptotic (n → ∞ probes; the
  Bahadur remainder of each row is O(n^{-3/4})), not a finite-sample guarantee.
  Measured at n = 50 over 30 seeds each (tests/test_cauchy_coverage.py): 95.2%
  (median) and 94.1% (iqr) pooled over identity, random diagonal, 4×4
  block-diagonal, low-rank + diagonal, rank 3, a rotated quadratic and three small
  networks, every case ≥ 27/30. Each tensor's sum and its share of the total get
  the same kind of interval (``details["per_tensor_interval"]``,
  ``["per_tensor_share_interval"]``): 526 of 540 covered over diagonal, banded and
  low-rank Hessians split in three tensors. Needs n ≥ 8 for the median and n ≥ 10
  for the iqr (the
  statistic's variance is infinite for n ≤ 4, resp. n ≤ 8); below, [0, ∞) is
  returned. The old percentile bootstrap over probes did not
  re-centre the resampled medians, whose own small-sample bias put the interval
  ≈ √(d_eff/n) standard errors above the estimate on near-diagonal H; it also
  cost O(B·n·d). The interval here costs one sign and one matrix-vector product
  per stored entry, a few % of the sort the medians need. Theorem D.2's
  non-asymptotic relative error is reported in ``details["theorem_d2_rel_error"]``
  for reference; at n = 50 it is vacuous (> 100%).

``method="iqr"`` estimates the same a_j by half the interquartile range of the
signed values (Cauchy(0, a) has quartiles ±a), as the paper's released code does,
with the same exact de-biasing and interval.

Rounding. Probes have entries up to ~d/π, but an HVP is linear in v, so float32
rounding is relative to each row's own scale: on a nanoGPT-style LM the float32
and float64 row medians of the same probes agree to < 3·10⁻⁶ relative on every
row that is nonzero in exact arithmetic, with no systematic shift (rows that are
exactly zero, such as attention key biases, get ~10⁻⁸·max-row noise);
tests/test_cauchy_gpt.py checks this, so no float64 HVPs or probe clipping are used.

Memory. The probe results are kept as an (n, d) array in ``store_dtype`` (default:
the operator's dtype) on ``store_device`` (default: the operator's device): n·d·b
bytes (b = 4 for float32, 2 for bfloat16). Probes go through the operator in
chunks of ``chunk_size`` rows ((chunk, d) probe + result in the operator dtype); the
next chunk's probes are drawn while the current one is in the operator, so two
(chunk, d) probe chunks in the operator dtype are alive at a time.
The row statistics and the Z_i are then computed in one streamed pass over
column slices whose temporaries stay within ``memory_budget`` bytes. For GPT-2
small (d = 124M) and n = 50 the store takes 24.8 GB in float32 or 12.4 GB in
bfloat16, on top of the operator's own HVP memory. When it would take more than half
the memory available on the operator's device (then on the host), it goes to an
unlinked temporary file whose blocks are reserved before the first HVP (a disk too
small is an error up front); the streamed pass then reads one column slice at a time,
so resident memory stays a small multiple of the model's size at any n.
"""

from __future__ import annotations

import functools
import math
import os
import time

import torch
from torch import Tensor

from hessnorm.errors import ConfigError, NonFiniteError, TooLargeError
from hessnorm.estimate import Estimate
from hessnorm.estimators import _fd_widen, _space
from hessnorm.estimators._common import (
    cauchy_probe_ranges,
    cauchy_probes,
    default_chunk,
    t_quantile,
)
from hessnorm.estimators._disk import DiskRows
from hessnorm.estimators._progress import progress_bar
from hessnorm.operator import all_finite, as_operator, available_memory
from hessnorm.registry import register_estimator

__all__ = ["l11_norm", "cauchy_scale_bias"]

_METHODS = ("median", "iqr")


@functools.cache
def _order_stat_mean(k: int, n: int, signed: bool) -> float:
    """E[X_(k)] for n i.i.d. |Cauchy(0,1)| (signed=False) or Cauchy(0,1) (signed=True).

    X_(k) = F⁻¹(U_(k)) with U_(k) ~ Beta(k, n+1−k); computed by quadrature.
    Finite when 1 < k < n (signed) or k < n (absolute values).
    """
    from scipy import integrate, special, stats

    if signed:

        def inv(u):
            return math.tan(math.pi * (u - 0.5))
    else:

        def inv(u):
            return math.tan(0.5 * math.pi * u)

    logc = -special.betaln(k, n + 1 - k)

    def f(u):
        if u <= 0.0 or u >= 1.0:
            return 0.0
        return inv(u) * math.exp(logc + (k - 1) * math.log(u) + (n - k) * math.log1p(-u))

    mode = (k - 1) / (n - 1) if n > 1 else 0.5
    sd = math.sqrt(stats.beta(k, n + 1 - k).var())
    pts = sorted({min(max(mode + s * sd, 1e-9), 1 - 1e-9) for s in (-6, -3, -1, 0, 1, 3, 6)})
    val, _ = integrate.quad(f, 0.0, 1.0, points=pts, limit=500, epsabs=1e-13, epsrel=1e-11)
    return float(val)


def _quantile_positions(n: int, q: float) -> tuple[int, int, float]:
    """Linear-interpolation quantile (numpy's default): 0-based (lo, hi, frac)."""
    h = (n - 1) * q
    lo = math.floor(h)
    return lo, min(lo + 1, n - 1), h - lo


def cauchy_scale_bias(n: int, method: str = "median") -> float:
    """c_n = E[statistic] for n i.i.d. Cauchy(0, 1) samples: the factor the raw estimate is off by.

    ``median``: the sample median of |X| (mean of the two middle order statistics
    for even n). ``iqr``: (q₇₅ − q₂₅)/2 of the signed X with linear interpolation.
    Both equal a·c_n in expectation for Cauchy(0, a) data, so dividing by c_n
    de-biases exactly. c_n → 1 as n grows (the median of |X| is 1); no HVP.

    Example:
        >>> round(cauchy_scale_bias(50), 4), round(cauchy_scale_bias(50, "iqr"), 4)
        (1.0257, 1.0131)
        >>> cauchy_scale_bias(2)
        Traceback (most recent call last):
        ...
        hessnorm.errors.ConfigError: the median estimator needs n >= 3 probes (its mean is infinite below), got 2
    """
    if method == "median":
        if n < 3:
            raise ConfigError(
                f"the median estimator needs n >= 3 probes (its mean is infinite below), got {n}"
            )
        if n % 2:
            return _order_stat_mean((n + 1) // 2, n, False)
        return 0.5 * (_order_stat_mean(n // 2, n, False) + _order_stat_mean(n // 2 + 1, n, False))
    if method == "iqr":
        if n < 5:
            raise ConfigError(f"the iqr estimator needs n >= 5 probes, got {n}")
        lo, hi, frac = _quantile_positions(n, 0.75)
        upper = _order_stat_mean(hi + 1, n, True) if frac > 0 else 0.0
        return (1 - frac) * _order_stat_mean(lo + 1, n, True) + frac * upper
    raise ConfigError(f"method must be one of {_METHODS}, got {method!r}")


def _positions(n: int, method: str) -> list[tuple[int, float]]:
    """The statistic as Σ weight · (order statistic at 0-based position) of the sorted column.

    ``median`` sorts |y|: mean of the two middle order statistics.
    ``iqr`` sorts the signed y: (q₇₅ − q₂₅)/2 with linear interpolation (numpy's default).
    """
    if method == "median":
        return [((n - 1) // 2, 0.5), (n // 2, 0.5)]
    out: list[tuple[int, float]] = []
    for q, sign in ((0.75, 0.5), (0.25, -0.5)):
        lo, hi, frac = _quantile_positions(n, q)
        out += [(lo, sign * (1 - frac)), (hi, sign * frac)]
    return out


def _row_stat(values: Tensor, method: str) -> Tensor:
    """Per-column statistic (m,) from sorted columns (n, m)."""
    out = torch.zeros(values.shape[1], dtype=values.dtype, device=values.device)
    for pos, w in _positions(values.shape[0], method):
        if w != 0.0:
            out += w * values[pos]
    return out


def _chunk_pass(Y: Tensor, method: str, c_n: float, with_spread: bool, cuts=None):
    """Row statistics and the probes' influence sums for one column slice.

    Y (n, m) holds the probe results of m rows. Returns the raw row statistics
    m_j (m,) and Z (n,) in float64 with Z_i = Σ_j π ŝ_j (1/2 − I_ij), where
    ŝ_j = m_j / c_n and I_ij = 1{|Y_ij| < m_j} + ½·1{|Y_ij| = m_j} (zeros if not
    ``with_spread``). Cost O(n·m log n) for the sort, O(n·m) for Z.

    With ``cuts`` (sorted column offsets inside (0, m)) a third result holds the same
    sums over the column segments between the cuts, (n, len(cuts) + 1) in float64.
    """
    A = Y.abs()
    values = (A if method == "median" else Y).sort(dim=0).values
    m = _row_stat(values, method)
    del values
    if not with_spread:
        z = torch.zeros(Y.shape[0], dtype=torch.float64)
        if cuts is None:
            return m.double(), z
        return m.double(), z, torch.zeros(Y.shape[0], len(cuts) + 1, dtype=torch.float64)
    if cuts is None:
        return m.double(), _influence_sums(A, m, c_n)
    return (m.double(), *_influence_sums(A, m, c_n, cuts))


def _influence_sums(A: Tensor, m: Tensor, c_n: float, cuts=None):
    """Z (n,) from |Y| (n, m) (overwritten) and the row statistics m_j.

    π ŝ_j (1/2 − I_ij) = (π/2) ŝ_j sign(|Y_ij| − m_j): one sign and one
    matrix-vector product in the work dtype (its rounding is far below the spread of Z).
    With ``cuts``, also the (n, len(cuts) + 1) sums over the segments between them
    (Z itself is still one product, so its bits do not depend on the cuts).
    """
    S = A.sub_(m).sign_()
    w = m / c_n
    z = ((0.5 * math.pi) * (S @ w).double()).cpu()
    if cuts is None:
        return z
    if not cuts:  # one segment: the same product as z
        return z, z[:, None].clone()
    edges = [0, *cuts, len(m)]
    parts = [(0.5 * math.pi) * (S[:, a:b] @ w[a:b]).double() for a, b in zip(edges, edges[1:])]
    return z, torch.stack(parts, dim=1).cpu()


@functools.cache
def _spread_calibration(n: int, method: str) -> float:
    """κ_n = Var(ŝ) / E[V̂₁] for one row of i.i.d. Cauchy(0, 1) probe results.

    ŝ = statistic / c_n and V̂₁ = Σ_i (z_i − z̄)² / (n (n−1)) with
    z_i = π ŝ (1/2 − I_i) is the influence-function variance estimate of that one
    row. For rows that are independent (diagonal H) κ_n·Σ_j V̂_j is then exactly
    unbiased for Var(Σ_j ŝ_j); κ_n → 1 as n → ∞ (κ_50 ≈ 0.95). Computed once per
    (n, method) by Monte Carlo with a fixed seed over R = min(5·10⁴, max(2000, 5·10⁶/n))
    rows (relative error ≈ 1% at n ≤ 100, ≈ 0.5% on the standard error), so it is
    deterministic; it takes ~0.5 s the first time.
    """
    c_n = cauchy_scale_bias(n, method)
    R = min(50_000, max(2000, 5_000_000 // n))
    g = torch.Generator().manual_seed(20240917)
    stats, vhat = [], []
    for r0 in range(0, R, 20_000):
        r = min(20_000, R - r0)
        X = torch.empty(n, r, dtype=torch.float64).cauchy_(generator=g)
        m, _ = _chunk_pass(X, method, c_n, with_spread=False)
        A = X.abs()
        below = (A < m).double() + 0.5 * (A == m).double()
        z = math.pi * (m / c_n) * (0.5 - below)
        stats.append(m / c_n)
        vhat.append(z.var(dim=0) / n)
    return float(torch.cat(stats).var() / torch.cat(vhat).mean())


def _theorem_d2_rel_error(n: int, d: int, confidence: float) -> float:
    """Smallest ε with Theorem D.2's failure bound ≤ 1 − confidence (inf if none).

    Splits δ = 1 − confidence evenly between the two terms
    2d·exp(−nΔ²/2) and 2·exp(−2nε²cos⁴((1+Δ)π/4)/π²), and also enforces the proof's
    condition n ≥ π³ / (2ε² cos⁴((1+Δ)π/4)).
    """
    delta = 1.0 - confidence
    Delta = math.sqrt(2.0 * math.log(4.0 * d / delta) / n)
    if Delta >= 1.0:
        return math.inf
    c4 = math.cos((1.0 + Delta) * math.pi / 4.0) ** 4
    eps = math.pi * math.sqrt(math.log(4.0 / delta) / (2.0 * n * c4))
    eps = max(eps, math.sqrt(math.pi**3 / (2.0 * n * c4)))
    return eps


def _columns(Y, c0: int, c1: int) -> Tensor:
    return Y.columns(c0, c1) if isinstance(Y, DiskRows) else Y[:, c0:c1]


def _is_disk(store_device) -> bool:
    return isinstance(store_device, os.PathLike) or (
        isinstance(store_device, str) and store_device == "disk"
    )


def _store_plan(n: int, d: int, dtype: torch.dtype, store_device, op_device):
    """Where the (n, d) probe results live: a torch device, or ``"disk"`` / a folder.

    By default the operator's device while they take at most half of its available
    memory, then (for a GPU) the host's, then an unlinked file in the temporary folder.
    An explicit device that cannot hold them is a TooLargeError before any HVP.
    """
    need = n * d * torch.empty((), dtype=dtype).element_size()
    if _is_disk(store_device):
        return store_device
    if store_device is not None:
        dev = torch.device(store_device)
        avail = available_memory(dev)
        if 0 <= avail < need:
            raise TooLargeError(
                f"l11_norm: the {n} × {d:,} probe results take {need / 1e9:.1f} GB but {dev} "
                f"has {avail / 1e9:.1f} GB available; use store_device='disk', "
                f"store_dtype=torch.bfloat16 or fewer probes (n)."
            )
        return dev
    for dev in dict.fromkeys([torch.device(op_device), torch.device("cpu")]):
        avail = available_memory(dev)
        if avail < 0 or need <= avail // 2:
            return dev
    return "disk"


def _probe_results(op, n, seed, chunk_size, store_dtype, store_device, progress):
    """The (n, d) matrix of Hv⁽ⁱ⁾ for n Cauchy probes drawn from ``seed``.

    The probes come from the counter-based stream above, on the CPU whatever the
    device, so they do not depend on device or chunking. At 10⁸ parameters a draw
    costs about a quarter of an HVP (≈ 1 s of one core at d = 1.24·10⁸), so the next
    chunk is drawn in a background thread (its blocks spread over torch's thread
    count) while the current one goes through the operator. Memory: two probe
    chunks of (chunk, d) in the operator's dtype.
    """
    from concurrent.futures import ThreadPoolExecutor

    d = _space.local_d(op)
    if _is_disk(store_device):
        where = None if isinstance(store_device, str) else store_device
        Y = DiskRows(
            d,
            store_dtype,
            where,
            prefix="hessnorm-l11-",
            suffix=".probes",
            reserve=n,
            advice="Free disk space, pass store_device=pathlib.Path(...) on a larger disk, use "
            "store_dtype=torch.bfloat16 (half the bytes) or fewer probes (n).",
        )
    else:
        Y = torch.empty(n, d, dtype=store_dtype, device=store_device)
    starts = list(range(0, n, chunk_size))
    workers = max(1, torch.get_num_threads())
    draw_dtype = op.dtype if op.dtype.is_floating_point else torch.float64
    with (
        progress_bar(
            n,
            "l11_norm: Cauchy HVPs",
            enabled=progress,
            advice="fewer probes (n; the interval widens like 1/√n)",
        ) as bar,
        ThreadPoolExecutor(max_workers=1) as pool,
    ):

        def draw(start):
            k = min(chunk_size, n - start)
            if _space.is_sharded(op):  # this rank's columns of the global probes
                return cauchy_probe_ranges(seed, start, k, op.d, op.local_ranges, draw_dtype)
            return cauchy_probes(seed, start, k, d, draw_dtype, workers)

        nxt = pool.submit(draw, starts[0])
        for i, start in enumerate(starts):
            k = min(chunk_size, n - start)
            V = nxt.result()
            if i + 1 < len(starts):
                nxt = pool.submit(draw, starts[i + 1])
            HV = op.hvp(V.to(op.device, op.dtype))
            del V
            if not all_finite(HV):
                raise NonFiniteError(
                    "a Hessian-vector product with a Cauchy probe is not finite; try float64"
                )
            if isinstance(Y, DiskRows):
                Y.write(start, HV)
            else:
                Y[start : start + k] = HV.to(device=store_device, dtype=store_dtype)
            bar.update(k)
            del HV
    return Y


def _summarize(
    Y: Tensor,
    method: str,
    c_n: float,
    slices: dict,
    with_spread: bool,
    *,
    memory_budget: int = 1 << 28,
    progress: bool = False,
) -> tuple[float, dict, Tensor, dict]:
    """Stream over column slices of Y (n, d).

    Returns (Σ_j m_j, per-slice sums of m_j, Z (n,), per-slice Z (n,)): the influence
    sums restricted to each named slice's rows, so every slice gets its own standard
    error (and, with Z, the standard error of its share of the total).
    """
    from tqdm.auto import tqdm

    n, d = Y.shape
    work_dtype = torch.float64 if Y.dtype == torch.float64 else torch.float32
    # A slice of m columns makes ~5 (n, m) temporaries of <= 8 bytes (cast, |Y|,
    # sorted values and indices, indicator).
    col = max(1, int(memory_budget) // (40 * n))
    per_tensor = {name: 0.0 for name in slices}
    per_tensor_z = {name: torch.zeros(n, dtype=torch.float64) for name in slices}
    edges = sorted({e for s in slices.values() for e in (s.start, s.stop)})
    raw = 0.0
    Z = torch.zeros(n, dtype=torch.float64)
    with tqdm(total=d, desc="l11_norm: row statistics", disable=not progress, leave=False) as bar:
        for c0 in range(0, d, col):
            c1 = min(d, c0 + col)
            cuts = [e - c0 for e in edges if c0 < e < c1]
            rows, z, zs = _chunk_pass(
                _columns(Y, c0, c1).to(dtype=work_dtype), method, c_n, with_spread, cuts
            )
            Z += z
            raw += float(rows.sum())
            seg = [c0, *(c0 + c for c in cuts), c1]
            for name, s in slices.items():
                lo, hi = max(s.start, c0), min(s.stop, c1)
                if lo < hi:
                    per_tensor[name] += float(rows[lo - c0 : hi - c0].sum())
                    if with_spread:
                        for k in range(seg.index(lo), seg.index(hi)):
                            per_tensor_z[name] += zs[:, k]
            bar.update(c1 - c0)
    return raw, per_tensor, Z, per_tensor_z


def _interval(
    raw: float, Z: Tensor, n: int, method: str, c_n: float, confidence: float
) -> tuple[float, float, float, float]:
    """(low, high, se, κ_n): T·exp(∓ t_{n−1} · se / T) with se² = κ_n · s²(Z) / n, T = raw / c_n."""
    T = raw / c_n
    kappa = _spread_calibration(n, method)
    se = math.sqrt(kappa * float(Z.var()) / n)
    if T <= 0.0:  # every row statistic is 0: no probe saw a nonzero row
        return 0.0, 0.0, se, kappa
    t = t_quantile(0.5 + confidence / 2, n - 1)
    return T * math.exp(-t * se / T), T * math.exp(t * se / T), se, kappa


def _per_tensor_intervals(
    raw, Z, per_tensor_raw, per_tensor_z, scale, n, method, c_n, confidence
) -> dict:
    """``per_tensor_interval`` and ``per_tensor_share_interval`` for the details.

    A slice's sum S_t = Σ_{j∈t} ŝ_j has the influence sums Z_t (the Z_i restricted to
    its rows), so it gets the same t interval as the total. Its share r_t = S_t / T
    has, to first order, the influence sums (Z_t − r_t Z) / T (the delta method on the
    ratio, probe by probe), so its standard error accounts for S_t and T moving
    together. Both intervals are on the log scale, like the total's; a share's upper
    end is capped at 1. Values are [low, high] lists (JSON-friendly).
    """
    tensor, share = {}, {}
    T = raw / c_n
    for name, raw_t in per_tensor_raw.items():
        lo, hi, _, _ = _interval(raw_t, per_tensor_z[name], n, method, c_n, confidence)
        v = raw_t / scale
        tensor[name] = [min(lo, v), max(hi, v)]
        if T > 0.0:
            r = raw_t / raw
            z_r = (per_tensor_z[name] - r * Z) / T
            lo_r, hi_r, _, _ = _interval(r * c_n, z_r, n, method, c_n, confidence)
            share[name] = [lo_r, min(1.0, hi_r)]
    return {"per_tensor_interval": tensor, "per_tensor_share_interval": share}


# Smallest n with a finite-variance statistic and a usable t interval.
_MIN_N_INTERVAL = {"median": 8, "iqr": 10}


def l11_norm(
    op,
    *,
    n: int = 50,
    seed: int = 0,
    confidence: float = 0.95,
    method: str = "median",
    chunk_size: int | None = None,
    store_dtype: torch.dtype | None = None,
    store_device: str | torch.device | None = None,
    interval: bool = True,
    debias: bool = True,
    progress: bool = True,
    memory_budget: int = 1 << 28,
) -> Estimate:
    """‖H‖₁,₁ ≈ Σ_j median_i |(Hv⁽ⁱ⁾)_j| / c_n with n standard Cauchy probes v⁽ⁱ⁾.

    Paper 000, Algorithm 4 (App. D.3; the paper uses n = 50), with the exact
    de-biasing factor c_n and an influence-function interval (module docstring:
    formula, assumptions, measured coverage).

    Cost: n HVPs, batched ``chunk_size`` probes per ``op.hvp`` call; then one
    streamed pass over the (n, d) results in column slices (a sort of each (n, m)
    slice for the row statistics, and one comparison and one matrix-vector product
    for the interval): O(n·d·log n) work in all, independent of any resampling.

    Args:
        op: a Hessian-like operator (``d``, ``dtype``, ``device``, ``hvp``) or a dense
            symmetric tensor.
        n: number of Cauchy probes (≥ 3 for ``median``, ≥ 5 for ``iqr``; the interval
            needs n ≥ 8 for ``median``, n ≥ 10 for ``iqr``; below it is [0, ∞)).
        seed: key of the counter-based Philox stream the probes come from (on the
            CPU, in float64, rounded once to the operator dtype): probe i is the same
            vector whatever ``n``, ``chunk_size``, device, thread count or store
            options.
        confidence: nominal coverage of the interval.
        method: ``"median"`` (Algorithm 4) or ``"iqr"`` (half the interquartile range
            of the signed values, the released code's statistic).
        chunk_size: probes per HVP call (default: as many as fit in ~1 GiB).
        store_dtype: dtype of the kept (n, d) probe results (e.g. ``torch.bfloat16``
            to halve memory; the median of 50 values is insensitive to its ~0.4%
            rounding).
        store_device: where to keep them: a device (e.g. ``"cpu"`` for host memory),
            ``"disk"`` (an unlinked file in the temporary folder) or a
            ``pathlib.Path`` folder for that file. Default: the operator's device
            while they take at most half its available memory, then the host's
            memory, then disk (``details["store"]`` says which).
        interval: False skips the interval (low = high = value, confidence NaN).
        debias: divide by c_n (exactly unbiased); False returns Algorithm 4's raw sum
            (the interval is still the one for ‖H‖₁,₁, widened to contain it).
        progress: show tqdm bars.
        memory_budget: bytes of temporaries for the streamed pass over the stored
            results (sets the column-slice width; default 256 MiB).

    Returns:
        Estimate ``l11_norm`` with details: ``per_tensor`` (name -> Σ of the row
        estimates over that tensor's rows, summing to ``value``; one entry for
        operators without ``param_slices``), ``per_tensor_interval`` and
        ``per_tensor_share_interval`` (name -> [low, high] of that sum and of its
        share of the total, at ``confidence``, when the interval is computed),
        ``store`` (where the probe results were kept), ``raw_value``, ``bias_factor``,
        ``se`` (the standard error), ``spread_calibration`` (κ_n), ``n``,
        ``method``, ``interval``, ``theorem_d2_rel_error``.

    Example:
        >>> H = torch.tensor([[2.0, -1.0], [-1.0, 3.0]], dtype=torch.float64)
        >>> est = l11_norm(H, n=4001, progress=False)
        >>> abs(est.value - 7.0) < 0.25 and est.covers(7.0)
        True
    """
    op = as_operator(op)
    if method not in _METHODS:
        raise ConfigError(f"method must be one of {_METHODS}, got {method!r}")
    if not 0.0 < confidence < 1.0:
        raise ConfigError(f"confidence must lie in (0, 1), got {confidence}")
    n = int(n)
    c_n = cauchy_scale_bias(n, method)  # also validates n
    if memory_budget < 1:
        raise ConfigError(f"memory_budget must be a positive number of bytes, got {memory_budget}")
    t0 = time.perf_counter()
    d = op.d
    store_dtype = store_dtype or op.dtype
    store_device = _store_plan(n, _space.local_d(op), store_dtype, store_device, op.device)
    if chunk_size is None:
        chunk_size = min(n, default_chunk(d))
    chunk_size = int(chunk_size)
    if chunk_size < 1:
        raise ConfigError(f"chunk_size must be positive, got {chunk_size}")
    with_interval = interval and n >= _MIN_N_INTERVAL[method]
    fd_start = _fd_widen.begin(op)

    Y = _probe_results(op, n, seed, chunk_size, store_dtype, store_device, progress)
    store = f"disk ({Y.directory})" if isinstance(Y, DiskRows) else f"memory ({Y.device})"
    slices = getattr(op, "param_slices", None) or {"all": slice(0, _space.local_d(op))}
    try:
        raw, per_tensor_raw, Z, per_tensor_z = _summarize(
            Y, method, c_n, slices, with_interval, memory_budget=memory_budget, progress=progress
        )
    finally:
        if isinstance(Y, DiskRows):
            Y.close()
    del Y
    if _space.is_sharded(op):  # every sum over coordinates, over all ranks at once
        raw, per_tensor_raw, Z, per_tensor_z = _allreduce_sums(
            op, raw, per_tensor_raw, Z, per_tensor_z
        )
    scale = c_n if debias else 1.0
    value = raw / scale
    per_tensor = {k: v / scale for k, v in per_tensor_raw.items()}
    parts: dict = {}
    if with_interval:
        low, high, se, kappa = _interval(raw, Z, n, method, c_n, confidence)
        low, high = min(low, value), max(high, value)
        parts = _per_tensor_intervals(
            raw, Z, per_tensor_raw, per_tensor_z, scale, n, method, c_n, confidence
        )
        kind = "influence-function standard error, t interval on the log scale"
        conf_out = confidence
    elif interval:  # n too small for a finite-variance interval
        low, high, kind, conf_out = (
            0.0,
            math.inf,
            f"none (needs n >= {_MIN_N_INTERVAL[method]})",
            1.0,
        )
        se = kappa = math.nan
    else:
        low = high = value
        kind, conf_out, se, kappa = "none (interval=False)", math.nan, math.nan, math.nan
    est = Estimate(
        name="l11_norm",
        value=value,
        low=low,
        high=high,
        confidence=conf_out,
        n_hvp=n,
        seconds=time.perf_counter() - t0,
        d=d,
        details={
            "per_tensor": per_tensor,
            **parts,
            "store": store,
            "raw_value": raw,
            "bias_factor": c_n,
            "debiased": bool(debias),
            "se": se,
            "spread_calibration": kappa,
            "n": n,
            "method": method,
            "interval": kind,
            "theorem_d2_rel_error": _theorem_d2_rel_error(n, d, confidence),
        },
    )
    return _fd_widen.widen(est, op, fd_start)


def _allreduce_sums(op, raw, per_tensor_raw, Z, per_tensor_z):
    """The coordinate sums of :func:`_summarize`, summed over a sharded operator's ranks."""
    names = list(per_tensor_raw)
    n = Z.shape[0]
    flat = torch.cat(
        [
            torch.tensor([raw, *(per_tensor_raw[k] for k in names)], dtype=torch.float64),
            Z.double(),
            *(per_tensor_z[k].double() for k in names),
        ]
    )
    flat = _space.allreduce(op, flat)
    m = len(names)
    raw = float(flat[0])
    per_raw = {k: float(flat[1 + i]) for i, k in enumerate(names)}
    Z = flat[1 + m : 1 + m + n].clone()
    per_z = {
        k: flat[1 + m + n * (i + 1) : 1 + m + n * (i + 2)].clone() for i, k in enumerate(names)
    }
    return raw, per_raw, Z, per_z


@register_estimator(
    "l11",
    metric="H(L, Φ_Adam)",
    bound="‖H‖₁,₁",
    metric_rotated="H(L∘R, Φ_Adam)",
    bound_rotated="‖RᵀHR‖₁,₁",
    hvp_cost=lambda o, d: o["n_cauchy"],
)
def l11_entry(op, *, seed: int = 0, progress: bool = False, n_cauchy: int = 50) -> Estimate:
    """‖H‖₁,₁ by Cauchy medians with a 95% influence-function interval (:func:`l11_norm`).

    Args:
        n_cauchy: Cauchy probes (paper 000 uses 50; the interval narrows as 1/√n).

    Example:
        >>> est = l11_entry(torch.eye(4, dtype=torch.float64), n_cauchy=20)
        >>> est.name, est.covers(4.0)  # ‖I₄‖₁,₁ = 4
        ('l11_norm', True)
    """
    return l11_norm(op, n=n_cauchy, seed=seed, progress=progress)
