"""Intervals widened by the error of finite-difference HVPs: the one place that does it.

An operator built with ``mode="fd"`` (or a sharded operator, :mod:`hessnorm.sharded`)
logs, per HVP, ‖v‖, the Richardson estimate ‖e(v)‖ of the FD error and the entrywise
max |e(v)_j| (:class:`hessnorm.fd.HVPErrorLog`). Each estimator calls :func:`begin`
before its first HVP and passes its finished :class:`Estimate` through :func:`widen`,
which moves the interval outward by what those errors can do to it:

* ``spectral_norm`` (Lanczos, m HVPs). With applied products w_j = H q_j + e_j and
  ‖e_j‖ ≤ ε‖H‖, the computed T_m is exactly the Lanczos matrix of a symmetric
  M̃ = H + F: write E' for the (n × m) difference between the columns Lanczos keeps
  (Q_{m+1} T̂_m) and H Q_m; its column j is e_j minus the re-orthogonalisation
  coefficients Lanczos discards, which are q_iᵀe_j − e_iᵀq_j, so ‖E'_j‖ ≤
  (2 + √m) ε‖H‖ and ‖E'‖₂ ≤ √m (2 + √m) ε‖H‖. Qᵀ E' = T_m − QᵀHQ is symmetric, so
  F = E'Qᵀ + QE'ᵀ − Q(QᵀE')Qᵀ satisfies F Q = E' and ‖F‖₂ ≤ 3‖E'‖₂. Hence
  ‖M̃ − H‖₂ ≤ η_fd ‖H‖₂ with η_fd = 3(m + 2√m) ε, and the bounds of
  :mod:`hessnorm.estimators._krylov` (which hold for M̃) give
  ‖H‖₂ ∈ [ρ_m/(1 + η), high_K/(1 − η)], η = η_rounding + η_fd. ε is taken as
  max_j ‖e_j‖/‖q_j‖ divided by the rounding-widened lower end (a lower bound of ‖H‖).
* ``l11_norm`` (Cauchy medians). A median is 1-Lipschitz in the sup norm of its
  samples, so perturbing probe results by e shifts Σ_j median_i |y_ij| by at most
  Δ = Σ_j max_i |e_ij| (the running entrywise max); the interval moves out by
  Δ / c_n (the de-biasing factor). Through a rotation the entrywise max is not
  available, and Δ ≤ √d Σ_i ‖e_i‖ is used instead.
* ``trace``. |vᵀe| ≤ ‖v‖‖e‖: Hutchinson moves by the mean of ‖v_i‖‖e_i‖; Hutch++ by
  Σ‖e‖ over its k exact basis vectors plus that mean over the residual probes (the
  sketch products only choose the basis; any orthonormal basis makes the split
  exact); the exact path by Σ_i ‖e_i‖ over the d unit vectors.

Exact HVPs (every other mode) log nothing and leave the Estimate unchanged.
"""

from __future__ import annotations

import dataclasses
import math

from hessnorm.errors import ConfigError
from hessnorm.estimate import Estimate
from hessnorm.estimators import _space

__all__ = ["begin", "widen", "fd_log"]


def fd_log(op):
    """(log, through_rotation): the operator's FD error log, or (None, False) for exact HVPs.

    Example:
        >>> import torch
        >>> from hessnorm.operator import DenseOperator, HessianOperator
        >>> fd_log(DenseOperator(torch.eye(2)))
        (None, False)
        >>> op = HessianOperator.from_function(lambda x: (x**2).sum(), torch.ones(2), mode="fd")
        >>> type(fd_log(op)[0]).__name__
        'HVPErrorLog'
    """
    log = getattr(op, "hvp_error", None)
    if log is not None:
        return log, False
    base = getattr(op, "base", None)
    log = getattr(base, "hvp_error", None)
    return (log, True) if log is not None else (None, False)


def begin(op) -> int:
    """Open the estimator's window on the error log; returns its first record's index.

    Example:
        >>> import torch
        >>> from hessnorm.operator import HessianOperator
        >>> op = HessianOperator.from_function(lambda x: (x**2).sum(), torch.ones(2), mode="fd")
        >>> _ = op.hvp(torch.ones(2))
        >>> begin(op)  # one record so far: the next estimator's window starts at 1
        1
    """
    log, _ = fd_log(op)
    return log.mark() if log is not None else 0


def _spectral(est: Estimate, recs, m: int) -> tuple[float, float, dict]:
    eta_r = float(est.details.get("rounding", 0.0))
    lower = est.low
    ratio = max(e / v for v, e, _ in recs if v > 0.0) if recs else 0.0
    eps = math.inf if lower <= 0.0 and ratio > 0.0 else (ratio / lower if ratio > 0.0 else 0.0)
    eta_fd = 3.0 * (m + 2.0 * math.sqrt(m)) * eps
    eta = eta_r + eta_fd
    high_k = est.high * (1.0 - eta_r)
    low = est.value / (1.0 + eta) if math.isfinite(eta) else 0.0
    high = high_k / (1.0 - eta) if eta < 1.0 else math.inf
    return low, high, {"relative_hvp_error": eps, "eta_fd": eta_fd}


def _l11(est: Estimate, op, log, rotated: bool, recs) -> tuple[float, float, dict]:
    if rotated or log.entry_max is None:
        shift_raw = math.sqrt(op.d) * sum(e for _, e, _ in recs)
    else:
        shift_raw = float(_space.allreduce(op, log.entry_max.double().sum().reshape(1))[0])
    c_n = float(est.details.get("bias_factor", 1.0))
    shift = shift_raw / c_n
    return max(0.0, est.low - shift), est.high + shift, {"shift": shift}


def _trace(est: Estimate, recs) -> tuple[float, float, dict]:
    method = est.details.get("method")
    if method == "exact":
        shift = sum(e for _, e, _ in recs)
    elif method == "hutch++":
        k = int(est.details["sketch"])
        basis, resid = recs[k : 2 * k], recs[2 * k :]
        shift = sum(v * e for v, e, _ in basis) + (
            sum(v * e for v, e, _ in resid) / len(resid) if resid else 0.0
        )
    else:
        shift = sum(v * e for v, e, _ in recs) / max(len(recs), 1)
    return est.low - shift, est.high + shift, {"shift": shift}


def widen(est: Estimate, op, start: int) -> Estimate:
    """``est`` with its interval widened by the FD errors logged since ``start``.

    Adds ``details["fd_error"]``: the HVPs counted, the worst relative error
    ‖e‖/‖Hv‖ among them and the widening applied. No HVP.

    Example:
        >>> import torch
        >>> from hessnorm.estimate import Estimate
        >>> from hessnorm.operator import HessianOperator
        >>> op = HessianOperator.from_function(lambda x: (x**4).sum(), torch.ones(3), mode="fd")
        >>> start = begin(op)
        >>> _ = op.hvp(torch.eye(3))  # float32 central differences of 4 x^3
        >>> est = Estimate("trace", 36.0, 36.0, 36.0, 1.0, n_hvp=3, seconds=0.0, d=3,
        ...                details={"method": "exact"})
        >>> wide = widen(est, op, start)
        >>> wide.low < 36.0 < wide.high, wide.details["fd_error"]["hvps"]
        (True, 3)
    """
    log, rotated = fd_log(op)
    if log is None or len(log.records) <= start:
        return est
    recs = log.records[start:]
    if est.name == "spectral_norm":
        low, high, extra = _spectral(est, recs, est.n_hvp)
    elif est.name == "l11_norm":
        low, high, extra = _l11(est, op, log, rotated, recs)
    elif est.name == "trace":
        low, high, extra = _trace(est, recs)
    else:
        raise ConfigError(
            f"{est.name} does not propagate finite-difference HVP errors into its interval; "
            "build the operator with an exact HVP mode (mode='auto', 'fwd' or 'rev')"
        )
    worst = max((e / y if y > 0 else (math.inf if e > 0 else 0.0)) for _, e, y in recs)
    info = {"hvps": len(recs), "worst_relative_error": worst, **extra}
    details = {**est.details, "fd_error": info}
    return dataclasses.replace(
        est, low=min(low, est.value), high=max(high, est.value), details=details
    )
