"""The Hessian diagonal (Bekas, Kokiopoulou, Saad 2007) and the share of ‖H‖₁,₁ on it.

Diagonal. For Rademacher z (zᵢ² = 1), zᵢ(Hz)ᵢ = Hᵢᵢ + Σ_{j≠i} Hᵢⱼ zᵢzⱼ, so the mean
over n probes of z ⊙ Hz is an unbiased estimate of diag(H) (Bekas et al. 2007,
"An estimator for the diagonal of a matrix", Appl. Numer. Math. 57). Coordinate i's
sample variance is Σ_{j≠i} Hᵢⱼ²: the estimator is exact for diagonal matrices and
noisy where a row's mass sits off the diagonal. The reported standard error is the
sample standard deviation of the n values zᵢ(Hz)ᵢ divided by √n, accumulated in
O(d) memory from running sums. With ``exact=True`` (the default when d ≤ n) the
diagonal comes instead from the d unit vectors, batched.

Diagonal share. share(H) = Σᵢ |Hᵢᵢ| / ‖H‖₁,₁ ∈ [0, 1] is 1 for a diagonal Hessian
and about 1/d for a "dense" one; paper 000 argues (Sec. 4) that Adam gains over SGD
when the Hessian's (1,1)-mass sits near the diagonal and that rotating the loss
destroys that. :func:`diagonal_share` measures it, and works on ``op.rotated(R)``.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from hessnorm.errors import ConfigError
from hessnorm.estimate import Estimate
from hessnorm.estimators._common import (
    EXACT_ADVICE,
    chunked_hvp,
    default_chunk,
    rademacher_rows,
    t_quantile,
    unit_diagonal,
)
from hessnorm.estimators._progress import progress_bar
from hessnorm.estimators.cauchy import l11_norm
from hessnorm.operator import as_operator
from hessnorm.registry import register_estimator

__all__ = ["diagonal", "Diagonal", "diagonal_share"]


def _slices(op) -> dict[str, slice]:
    from hessnorm.operator import HessianOperator

    if isinstance(op, HessianOperator):
        return dict(op.param_slices)
    # a rotated Hessian's coordinates belong to no tensor: one block, named as l11_norm does
    return {"all": slice(0, op.d)}


@dataclasses.dataclass(frozen=True)
class Diagonal:
    """An estimate of diag(H) with per-coordinate standard errors.

    Attributes:
        values: (d,) float64 estimate of Hᵢᵢ (CPU).
        std_error: (d,) float64 standard error of each entry (zeros in exact mode).
        per_tensor: name -> (Σ over the tensor's Hᵢᵢ, its standard error); the standard
            error of a sum comes from the per-probe sums, so it accounts for the
            correlation between coordinates.
        total_std_error: standard error of Σᵢ Hᵢᵢ = tr(H) (from the per-probe sums).
        exact: True when computed from unit vectors (no sampling error).
        n: probes used (d in exact mode).
        n_hvp: HVPs spent.
        seconds: wall-clock time.
        d: dimension.

    Example:
        >>> dg = diagonal(torch.tensor([[2.0, 1.0], [1.0, -3.0]], dtype=torch.float64))
        >>> dg.values.tolist(), dg.exact, dg.n_hvp, dg.per_tensor["all"], dg.to_estimate().value
        ([2.0, -3.0], True, 2, (-1.0, 0.0), -1.0)
    """

    values: Tensor
    std_error: Tensor
    per_tensor: Mapping[str, tuple[float, float]]
    total_std_error: float
    exact: bool
    n: int
    n_hvp: int
    seconds: float
    d: int

    def z_scores(self, truth: Tensor) -> Tensor:
        """(values − truth) / std_error where the standard error is positive (else dropped)."""
        truth = torch.as_tensor(truth, dtype=torch.float64).cpu()
        keep = self.std_error > 0
        return (self.values[keep] - truth[keep]) / self.std_error[keep]

    def to_estimate(self, confidence: float = 0.95) -> Estimate:
        """The diagonal's sum, tr(H), as an Estimate (a t-interval from the per-probe sums).

        Details hold ``per_tensor`` sums and standard errors and ``abs_sum`` = Σ|Ĥᵢᵢ|.
        """
        total = float(self.values.sum())
        se = self.total_std_error
        tq = 0.0 if self.exact else t_quantile(0.5 + confidence / 2, self.n - 1)
        return Estimate(
            name="diagonal",
            value=total,
            low=total - tq * se,
            high=total + tq * se,
            confidence=1.0 if self.exact else confidence,
            n_hvp=self.n_hvp,
            seconds=self.seconds,
            d=self.d,
            details={
                "per_tensor": {k: v[0] for k, v in self.per_tensor.items()},
                "per_tensor_std_error": {k: v[1] for k, v in self.per_tensor.items()},
                "abs_sum": float(self.values.abs().sum()),
                "exact": self.exact,
                "n": self.n,
            },
        )

    def to_frame(self):
        """A :class:`pandas.DataFrame`: one row per tensor with its diagonal sum and error."""
        import pandas as pd

        return pd.DataFrame(
            [{"tensor": k, "diag_sum": v[0], "std_error": v[1]} for k, v in self.per_tensor.items()]
        )


def diagonal(
    op,
    *,
    n: int = 100,
    seed: int = 0,
    exact: bool | None = None,
    chunk_size: int | None = None,
    progress: bool = True,
) -> Diagonal:
    """diag(H) by Rademacher probes, mean_i zᵢ ⊙ Hzᵢ (Bekas et al. 2007), or exactly.

    Error: entry i has standard error √(Σ_{j≠i} Hᵢⱼ² / n), reported from the sample
    variance of the n per-probe values (module docstring). Exact mode computes
    Hᵢᵢ = eᵢᵀHeᵢ from the d unit vectors.

    Cost: n HVPs (stochastic) or d HVPs (exact), ``chunk_size`` per ``op.hvp`` call.
    Memory: O(d) running sums besides one (chunk, d) probe block.

    Args:
        op: a Hessian-like operator or a dense symmetric tensor.
        n: probes in stochastic mode (≥ 2).
        seed: seeds the CPU generator of the Rademacher probes.
        exact: True for the exact diagonal, False for the estimate; None (default)
            picks exact when d ≤ n, i.e. when it costs no more HVPs than asked.
        chunk_size: probes per ``op.hvp`` call (default: ~2²⁷ entries per call).
        progress: show a tqdm bar (HVPs done / n, or / d when exact) with an ETA; a run
            projected past 10 minutes emits a
            :class:`~hessnorm.estimators._progress.SlowRunWarning` either way.

    Returns:
        :class:`Diagonal` (per-tensor sums over ``op.param_slices``, or one block "all").

    Example:
        >>> H = torch.tensor([[2.0, 1.0, 0.0], [1.0, -3.0, 0.5], [0.0, 0.5, 4.0]], dtype=torch.float64)
        >>> diagonal(H, progress=False).values.tolist()
        [2.0, -3.0, 4.0]
        >>> est = diagonal(H, n=4000, exact=False, seed=1, progress=False)
        >>> bool(((est.values - torch.tensor([2.0, -3.0, 4.0], dtype=torch.float64)).abs() < 4 * est.std_error).all())
        True
    """
    op = as_operator(op)
    n = int(n)
    if chunk_size is not None and int(chunk_size) < 1:
        raise ConfigError(f"chunk_size must be a positive integer or None, got {chunk_size}")
    d = op.d
    if exact is None:
        exact = d <= n
    if not exact and n < 2:
        raise ConfigError(f"the stochastic diagonal needs n >= 2 probes for an error bar, got {n}")
    t0 = time.perf_counter()
    slices = _slices(op)
    chunk = chunk_size if chunk_size is not None else default_chunk(d)
    if exact:
        with progress_bar(d, "diagonal (exact)", enabled=progress, advice=EXACT_ADVICE) as bar:
            values = unit_diagonal(op, chunk, bar)
        per = {k: (float(values[s].sum()), 0.0) for k, s in slices.items()}
        return Diagonal(
            values, torch.zeros(d, dtype=torch.float64), per, 0.0, True, d, d,
            time.perf_counter() - t0, d,
        )  # fmt: skip
    g = torch.Generator().manual_seed(int(seed))
    acc = torch.zeros(d, dtype=torch.float64, device=op.device)
    acc2 = torch.zeros(d, dtype=torch.float64, device=op.device)
    names = list(slices)
    sums = torch.zeros(n, len(names) + 1, dtype=torch.float64)
    done = 0
    advice = "fewer probes (n; the standard errors grow like 1/sqrt(n))"
    with progress_bar(n, "diagonal (Rademacher)", enabled=progress, advice=advice) as bar:
        while done < n:
            k = min(chunk, n - done)
            Z = rademacher_rows(g, k, d, op.dtype, op.device)
            X = (Z * chunked_hvp(op, Z, None, bar)).double()
            acc += X.sum(0)
            acc2 += X.pow(2).sum(0)
            for j, name in enumerate(names):
                sums[done : done + k, j] = X[:, slices[name]].sum(1).cpu()
            sums[done : done + k, -1] = X.sum(1).cpu()
            done += k
            del Z, X
    mean = (acc / n).cpu()
    var = ((acc2.cpu() - n * mean.pow(2)) / (n - 1)).clamp_min(0.0)
    se = (var / n).sqrt()
    per = {}
    col_se = sums.std(dim=0, unbiased=True) / math.sqrt(n)
    for j, name in enumerate(names):
        per[name] = (float(sums[:, j].mean()), float(col_se[j]))
    return Diagonal(mean, se, per, float(col_se[-1]), False, n, n, time.perf_counter() - t0, d)


def _abs_interval(center: Tensor, half: Tensor) -> tuple[Tensor, Tensor]:
    """Elementwise range of |x| for x in [center − half, center + half]."""
    lo, hi = center - half, center + half
    low = torch.where(
        (lo <= 0) & (hi >= 0), torch.zeros_like(lo), torch.minimum(lo.abs(), hi.abs())
    )
    return low, torch.maximum(lo.abs(), hi.abs())


def diagonal_share(
    op,
    *,
    n_diag: int = 200,
    n_l11: int = 50,
    seed: int = 0,
    confidence: float = 0.95,
    exact_diagonal: bool | None = None,
    chunk_size: int | None = None,
    progress: bool = True,
) -> Estimate:
    """share = Σᵢ|Hᵢᵢ| / ‖H‖₁,₁: the fraction of the Hessian's (1,1)-mass on its diagonal.

    Numerator from :func:`diagonal`, denominator from
    :func:`hessnorm.estimators.cauchy.l11_norm` (paper 000, Alg. 4); the point
    estimate is their ratio, clipped to [0, 1].

    Interval (conservative, a union bound). Each part gets an interval at level
    1 − α/2 (α = 1 − confidence), so both hold together with probability ≥ 1 − α:

    * numerator: with t = t_{n−1, 1−α/4}, every Hᵢᵢ lies in Ĥᵢᵢ ± t·seᵢ, and the
      range of |Hᵢᵢ| over that interval is summed over i. Summing per-coordinate
      intervals is exact when the coordinate errors move together (the worst case
      for a sum; it happens for low-rank H) and conservative otherwise. In exact
      mode the numerator has no error.
    * denominator: the bootstrap interval of ``l11_norm`` at level 1 − α/2.

    share ∈ [N_low / L_high, min(1, N_high / L_low)]. When the diagonal is buried
    in noise (rows with much off-diagonal mass, few probes) N_low drops to 0 and the
    interval says so instead of reporting Σ|Ĥᵢᵢ|, which noise inflates.

    Cost: n_diag + n_l11 HVPs (the diagonal's d HVPs in exact mode instead of n_diag).

    Args:
        op: a Hessian-like operator (also ``op.rotated(R)``) or a dense symmetric tensor.
        n_diag: Rademacher probes of the diagonal.
        n_l11: Cauchy probes of ‖H‖₁,₁.
        seed: seeds both estimators (the diagonal with ``seed``, the Cauchy probes with
            ``seed + 1``).
        confidence: joint coverage of the interval.
        exact_diagonal: passed to :func:`diagonal` as ``exact``.
        chunk_size: probes per HVP call for both estimators.
        progress: tqdm bars of :func:`diagonal` and of ``l11_norm`` (each with its ETA
            and :class:`~hessnorm.estimators._progress.SlowRunWarning`).

    Returns:
        Estimate ``diagonal_share`` with details ``per_tensor`` (name -> share of the
        tensor's rows: Σ_{i∈t}|Ĥᵢᵢ| / Σ_{i∈t} Σⱼ|Hᵢⱼ|), ``diag_abs_sum`` (value, low,
        high), ``l11`` (value, low, high), ``exact_diagonal``, ``interval``.

    Example:
        >>> H = torch.diag(torch.arange(1.0, 201.0, dtype=torch.float64))
        >>> est = diagonal_share(H, n_diag=50, n_l11=50, progress=False)
        >>> est.covers(1.0), est.value > 0.9
        (True, True)
    """
    op = as_operator(op)
    if not 0.0 < confidence < 1.0:
        raise ConfigError(f"confidence must lie in (0, 1), got {confidence}")
    t0 = time.perf_counter()
    alpha = 1.0 - confidence
    diag = diagonal(
        op, n=n_diag, seed=seed, exact=exact_diagonal, chunk_size=chunk_size, progress=progress
    )
    l11 = l11_norm(
        op, n=n_l11, seed=seed + 1, confidence=1 - alpha / 2, chunk_size=chunk_size,
        progress=progress,
    )  # fmt: skip
    absd = diag.values.abs()
    num = float(absd.sum())
    if diag.exact:
        lo_i = hi_i = absd
    else:
        tq = t_quantile(1 - alpha / 4, diag.n - 1)
        lo_i, hi_i = _abs_interval(diag.values, tq * diag.std_error)
    num_lo, num_hi = float(lo_i.sum()), float(hi_i.sum())
    L, L_lo, L_hi = l11.value, l11.low, l11.high
    value = min(1.0, num / L) if L > 0 else math.nan
    low = num_lo / L_hi if L_hi > 0 else 0.0
    high = min(1.0, num_hi / L_lo) if L_lo > 0 else 1.0
    per_l11: dict[str, Any] = l11.details["per_tensor"]
    per_tensor = {}
    slices = _slices(op)
    if len(slices) == 1 and len(per_l11) == 1:  # unnamed coordinates: one block either way
        per_l11 = {next(iter(slices)): next(iter(per_l11.values()))}
    for name, s in slices.items():
        denom = per_l11.get(name, math.nan)
        per_tensor[name] = float(absd[s].sum()) / denom if denom and denom > 0 else math.nan
    return Estimate(
        name="diagonal_share",
        value=value,
        low=min(low, value),
        high=max(high, value),
        confidence=confidence,
        n_hvp=diag.n_hvp + l11.n_hvp,
        seconds=time.perf_counter() - t0,
        d=op.d,
        details={
            "per_tensor": per_tensor,
            "diag_abs_sum": (num, num_lo, num_hi),
            "l11": (L, L_lo, L_hi),
            "exact_diagonal": diag.exact,
            "n_diag": diag.n,
            "n_l11": n_l11,
            "interval": "union bound: summed per-coordinate t-intervals of |H_ii| (level "
            "1-alpha/2) over the l11_norm bootstrap interval (level 1-alpha/2)",
        },
    )


@register_estimator(
    "diagonal-share",
    metric="diagonal share",
    bound="Σᵢ|Hᵢᵢ| / ‖H‖₁,₁",
    metric_rotated="diagonal share of RᵀHR",
    bound_rotated="Σᵢ|(RᵀHR)ᵢᵢ| / ‖RᵀHR‖₁,₁",
    family="spectrum",
    per_dim="ratio",
    hvp_cost=lambda o, d: (d if d <= 200 else 200) + o["n_cauchy"],
)
def diagonal_share_entry(
    op, *, seed: int = 0, progress: bool = False, n_cauchy: int = 50
) -> Estimate:
    """Σᵢ|Hᵢᵢ| / ‖H‖₁,₁ with a union-bound interval (:func:`diagonal_share`).

    Args:
        n_cauchy: Cauchy probes of the (1,1)-norm in the denominator.

    Example:
        >>> est = diagonal_share_entry(torch.eye(3, dtype=torch.float64), n_cauchy=20)
        >>> est.covers(1.0)  # all of I's (1,1)-mass is on its diagonal
        True
    """
    return diagonal_share(op, n_l11=n_cauchy, seed=seed, progress=progress)
