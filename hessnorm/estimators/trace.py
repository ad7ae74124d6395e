"""tr(H) by Hutchinson and Hutch++ (Meyer, Musco, Musco, Woodruff 2021), with a t-interval.

Hutchinson (1989). For z with i.i.d. Rademacher entries E[zzᵀ] = I, so zᵀHz is an
unbiased sample of tr(H); its variance is 2(‖H‖_F² − Σᵢ Hᵢᵢ²). The mean of m such
samples estimates tr(H).

Hutch++ (Meyer et al. 2021, Alg. 1). Split the n HVPs in three: k = n // 3 sketch
probes S give Y = HS and an orthonormal basis Q of range(Y); then

    tr(H) = tr(QᵀHQ) + tr((I − QQᵀ) H (I − QQᵀ)),

the first term exact from k further HVPs (HQ), the second estimated by Hutchinson on
the m = n − 2k remaining probes projected off Q. When H has a few outlier
eigenvalues the sketch captures them and the residual trace has far smaller
variance, which is what makes Hutch++ beat Hutchinson at equal HVPs.

Interval (both methods). Conditional on the sketch (Hutch++) the estimate is
``exact part + mean of m i.i.d. residual samples x_i``. We report
mean ± t_{m−1, 1−α/2} · s / √m with s the sample standard deviation of the x_i:
a Student-t interval, i.e. the assumption is that the mean of m i.i.d. samples is
close enough to normal (CLT) for its studentised form to follow t_{m−1}. The
samples are quadratic forms of Rademacher vectors, whose tails are light (they are
bounded by d‖H‖₂), so the approximation is good already for m ≈ 10–20; tests check
≥ 90% coverage of the nominal 95% interval over 40 seeds on three real Hessians.
With n ≥ d the probes cost as much as the exact trace, so ``trace`` then returns
tr(H) from the d unit vectors instead (interval of width zero, confidence 1).
"""

from __future__ import annotations

import math
import time

import torch
from torch import Tensor

from hessnorm.errors import ConfigError
from hessnorm.estimate import Estimate
from hessnorm.estimators import _fd_widen, _space
from hessnorm.estimators._common import (
    EXACT_ADVICE,
    chunked_hvp,
    default_chunk,
    rademacher_rows,
    t_quantile,
    unit_diagonal,
)
from hessnorm.estimators._progress import progress_bar
from hessnorm.operator import as_operator
from hessnorm.registry import register_estimator

__all__ = ["trace"]

_METHODS = ("hutch++", "hutchinson")


def exact_trace(
    op, *, chunk_size: int | None = None, progress: bool = True
) -> tuple[float, Tensor]:
    """tr(H) and diag(H) from the d unit vectors, ``chunk_size`` per HVP call (d HVPs).

    Args:
        op: a Hessian-like operator or a dense symmetric tensor.
        chunk_size: unit vectors per ``op.hvp`` call (default: ~2²⁷ entries per call).
        progress: show a tqdm bar (HVPs done / d) and its time projection.

    Example:
        >>> H = torch.tensor([[2.0, 1.0], [1.0, -3.0]], dtype=torch.float64)
        >>> tr, diag = exact_trace(H, progress=False)
        >>> tr, diag.tolist()
        (-1.0, [2.0, -3.0])
    """
    op = as_operator(op)
    chunk = default_chunk(op.d) if chunk_size is None else int(chunk_size)
    advice = "estimate instead: trace(op, n=...) or diagonal(op, n=..., exact=False), n < d"
    with progress_bar(op.d, "exact_trace (unit vectors)", enabled=progress, advice=advice) as bar:
        diag = unit_diagonal(op, chunk, bar)
    return float(diag.sum()), diag


def trace(
    op,
    *,
    n: int = 60,
    method: str = "hutch++",
    seed: int = 0,
    confidence: float = 0.95,
    chunk_size: int | None = None,
    progress: bool = True,
) -> Estimate:
    """tr(H) = Σᵢ λᵢ by Hutch++ (default) or Hutchinson, with a Student-t interval.

    Hutch++ (Meyer et al. 2021, "Hutch++: Optimal Stochastic Trace Estimation",
    Alg. 1): k = n//3 Rademacher sketch probes, Q = orth(HS), estimate
    tr(QᵀHQ) + (1/m) Σᵢ gᵢᵀ(I−QQᵀ)H(I−QQᵀ)gᵢ over m = n − 2k Rademacher gᵢ.
    Hutchinson: (1/n) Σᵢ zᵢᵀHzᵢ. Interval: module docstring (t-interval over the
    m residual samples, exact sketch part). Error: Hutchinson's standard error is
    √(2(‖H‖_F² − Σ Hᵢᵢ²)/n); Hutch++'s is that of the residual (I−QQᵀ)H(I−QQᵀ),
    O(1/n) relative for matrices with decaying spectra instead of O(1/√n).

    Cost: exactly n HVPs, in three batched calls for Hutch++ (HS, then HQ together
    with the residual probes) and one for Hutchinson, ``chunk_size`` rows at a time.
    Memory: Hutch++ keeps the k × d basis and a (k + m) × d block. If n ≥ d the
    exact trace (d HVPs) is returned instead.

    Args:
        op: a Hessian-like operator (``d``, ``dtype``, ``device``, ``hvp``) or a dense
            symmetric tensor.
        n: HVPs to spend (Hutch++ needs n ≥ 5 so that m ≥ 3; Hutchinson n ≥ 2).
        method: ``"hutch++"`` or ``"hutchinson"``.
        seed: seeds the CPU generator the Rademacher probes come from.
        confidence: nominal coverage of the interval.
        chunk_size: probes per ``op.hvp`` call (default: ~2²⁷ entries per call).
        progress: show a tqdm bar (HVPs done / n, or / d when exact) with an ETA; a run
            projected past 10 minutes emits a
            :class:`~hessnorm.estimators._progress.SlowRunWarning` either way.

    Returns:
        Estimate ``trace`` (``value_per_dim`` is the mean eigenvalue) with details
        ``method``, ``sketch`` (k), ``residual_probes`` (m), ``exact_part``
        (tr(QᵀHQ)), ``residual_mean``, ``std_error``, ``t_quantile``, ``interval``,
        ``exact`` (True when n ≥ d).

    Example:
        >>> H = torch.diag(torch.tensor([100.0, 50.0] + [0.01] * 98, dtype=torch.float64))
        >>> est = trace(H, n=30, seed=0, progress=False)
        >>> est.covers(150.98), abs(est.value - 150.98) < 0.1
        (True, True)
    """
    op = as_operator(op)
    if method not in _METHODS:
        raise ConfigError(f"method must be one of {_METHODS}, got {method!r}")
    if not 0.0 < confidence < 1.0:
        raise ConfigError(f"confidence must lie in (0, 1), got {confidence}")
    n = int(n)
    need = 5 if method == "hutch++" else 2
    if n < need:
        raise ConfigError(f"{method} needs n >= {need} HVPs for an interval (got {n}); raise n")
    if chunk_size is not None and int(chunk_size) < 1:
        raise ConfigError(f"chunk_size must be a positive integer or None, got {chunk_size}")
    if _space.is_sharded(op) and (method != "hutchinson" or n >= op.d):
        raise ConfigError(
            f"trace on a sharded operator supports method='hutchinson' with n < d only "
            f"(got method={method!r}, n={n}, d={op.d}); pass method='hutchinson'"
        )
    t0 = time.perf_counter()
    d = op.d
    chunk = chunk_size if chunk_size is not None else default_chunk(d)
    fd_start = _fd_widen.begin(op)
    if n >= d:
        with progress_bar(d, "trace (exact)", enabled=progress, advice=EXACT_ADVICE) as bar:
            value = float(unit_diagonal(op, chunk, bar).sum())
        est = Estimate(
            name="trace",
            value=value,
            low=value,
            high=value,
            confidence=1.0,
            n_hvp=d,
            seconds=time.perf_counter() - t0,
            d=d,
            details={"method": "exact", "exact": True, "interval": "exact (d unit vectors)"},
        )
        return _fd_widen.widen(est, op, fd_start)
    g = torch.Generator().manual_seed(int(seed))
    exact_part = 0.0
    k = 0
    advice = "fewer probes (n; the interval widens like 1/sqrt(n) for Hutchinson)"
    with progress_bar(n, f"trace ({method})", enabled=progress, advice=advice) as bar:
        if method == "hutch++":
            k = n // 3
            S = rademacher_rows(g, k, d, op.dtype, op.device)
            Y = chunked_hvp(op, S, chunk, bar)
            del S
            work = op.dtype if op.dtype in (torch.float32, torch.float64) else torch.float32
            Q = torch.linalg.qr(Y.T.to(work)).Q.T.to(op.dtype)  # (k, d) orthonormal rows
            del Y
            m = n - 2 * k
            G = rademacher_rows(g, m, d, op.dtype, op.device)
            G = G - (G @ Q.T) @ Q
            HB = chunked_hvp(op, torch.cat([Q, G]), chunk, bar)
            exact_part = float((Q * HB[:k]).sum(dtype=torch.float64))
            # G ⊥ Q already, so gᵀ(I−QQᵀ)H(I−QQᵀ)g = (Gᵢ)ᵀ(HG)ᵢ with the projected G.
            samples = (G * HB[k:]).sum(dim=1, dtype=torch.float64)
            del Q, G, HB
        else:
            m = n
            samples = torch.empty(m, dtype=torch.float64)
            for s in range(0, m, chunk):
                k_s = min(chunk, m - s)
                if _space.is_sharded(op):  # by global coordinate, rank-independent
                    Z = _space.rademacher_rows(op, seed, s, k_s, op.dtype, op.device)
                else:
                    Z = rademacher_rows(g, k_s, d, op.dtype, op.device)
                HZ = chunked_hvp(op, Z, None, bar)
                local = (Z * HZ).sum(1, dtype=torch.float64).cpu()
                samples[s : s + Z.shape[0]] = _space.allreduce(op, local)
    samples = samples.cpu()
    mean = float(samples.mean())
    se = float(samples.std(unbiased=True)) / math.sqrt(m)
    tq = t_quantile(0.5 + confidence / 2, m - 1)
    value = exact_part + mean
    est = Estimate(
        name="trace",
        value=value,
        low=value - tq * se,
        high=value + tq * se,
        confidence=confidence,
        n_hvp=n,
        seconds=time.perf_counter() - t0,
        d=d,
        details={
            "method": method,
            "sketch": k,
            "residual_probes": m,
            "exact_part": exact_part,
            "residual_mean": mean,
            "std_error": se,
            "t_quantile": tq,
            "interval": "Student-t over the residual Rademacher samples (sketch part exact)",
            "exact": False,
        },
    )
    return _fd_widen.widen(est, op, fd_start)


@register_estimator(
    "trace",
    metric="tr(H)",
    metric_rotated="tr(RᵀHR)",
    bound_rotated="tr(RᵀHR)",
    family="spectrum",
    hvp_cost=lambda o, d: min(60, d),
)
def trace_entry(op, *, seed: int = 0, progress: bool = False) -> Estimate:
    """tr(H) by Hutch++ with a Student-t interval over the residual probes (:func:`trace`).

    Example:
        >>> trace_entry(torch.diag(torch.tensor([2.0, -1.0], dtype=torch.float64))).value  # d < 60: exact
        1.0
    """
    if _space.is_sharded(op):  # Hutch++'s QR needs whole vectors; Hutchinson shards
        return trace(op, method="hutchinson", seed=seed, progress=progress)
    return trace(op, seed=seed, progress=progress)
