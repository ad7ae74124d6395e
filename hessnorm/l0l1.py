"""The (L0, L1)-smooth condition of paper 003: fitting it to measured points (numbers only).

Paper 003 (Assumption 1, after Zhang et al. 2019a) replaces "‖H‖₂ ≤ L everywhere" by
``local smoothness ≤ L0 + L1 ‖∇f(w)‖``: curvature may grow with the gradient norm.

* :func:`fit_l0l1` takes points ``(‖∇f(w_k)‖, L_loc(w_k))`` from a trajectory (see
  :mod:`hessnorm.estimators.local_smoothness`) and returns the tightest line
  ``L0 + L1 g`` lying above all of them, plus the log-log view of paper 003, Fig. 1b.
* The plot is :func:`hessnorm.report.figures.plot_l0l1`; paper 003's synthetic
  experiments live in :mod:`hessnorm.experiments.paper003` (``hessnorm reproduce l0l1``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from hessnorm.errors import ShapeError

__all__ = ["L0L1Fit", "fit_l0l1", "l0l1_points"]


# ---------------------------------------------------------------------------- fit


@dataclasses.dataclass(frozen=True)
class L0L1Fit:
    """The (L0, L1) bound fitted to trajectory points (see :func:`fit_l0l1`).

    Attributes:
        L0, L1: the line ``L0 + L1·g`` above every point ``(g_k, s_k)``.
        mean_gap: mean over the points of ``L0 + L1 g_k − s_k`` (the minimized objective).
        loglog_c: natural-log offset of paper 003, Fig. 1b: the smallest ``c`` with
            ``log s_k ≤ log g_k + c`` for all points with ``g_k > 0`` (i.e. the data obey
            the ``(0, e^c)`` condition); ``nan`` if no point has ``g_k > 0``.
        loglog_L1: ``e^c``, the L1 of that ``L0 = 0`` bound.
        n_points: number of points used.
        n_loglog: number of points with ``g_k > 0`` used for ``loglog_c``.
        max_violation: ``max_k (s_k − L0 − L1 g_k)``, ≤ 0 up to LP tolerance.

    Example:
        Points on the line s = 1 + g are fitted exactly:

        >>> fit = fit_l0l1([0.0, 1.0, 2.0], [1.0, 2.0, 3.0])
        >>> round(fit.L0, 9), round(fit.L1, 9), fit.n_points, fit.n_loglog, round(fit.loglog_L1, 9)
        (1.0, 1.0, 3, 2, 2.0)
        >>> [round(b, 9) for b in fit.bound([0.0, 4.0]).tolist()]
        [1.0, 5.0]
    """

    L0: float
    L1: float
    mean_gap: float
    loglog_c: float
    loglog_L1: float
    n_points: int
    n_loglog: int
    max_violation: float

    def bound(self, grad_norm):
        """``L0 + L1·grad_norm`` (numpy broadcasting)."""
        return self.L0 + self.L1 * np.asarray(grad_norm, dtype=float)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def l0l1_points(grad_norms, smoothness) -> tuple[np.ndarray, np.ndarray]:
    """Validate ``(‖∇f‖, local smoothness)`` points and return them as float arrays.

    Raises:
        ShapeError: different lengths, no point, a NaN/Inf or a negative value.

    Example:
        >>> g, s = l0l1_points([1, 2], [3.0, 4.0])
        >>> g.tolist(), s.tolist()
        ([1.0, 2.0], [3.0, 4.0])
    """
    g = np.asarray(grad_norms, dtype=float).reshape(-1)
    s = np.asarray(smoothness, dtype=float).reshape(-1)
    if g.shape != s.shape:
        raise ShapeError(
            f"grad_norms and smoothness must have the same length, got {g.size} and {s.size}"
        )
    if g.size == 0:
        raise ShapeError("fit_l0l1 needs at least one (grad_norm, smoothness) point")
    if not (np.isfinite(g).all() and np.isfinite(s).all()):
        raise ShapeError("grad_norms and smoothness must be finite; drop NaN/Inf rows first")
    if (g < 0).any() or (s < 0).any():
        raise ShapeError("grad_norms and smoothness are norms and must be >= 0")
    return g, s


def fit_l0l1(grad_norms: Sequence[float], smoothness: Sequence[float]) -> L0L1Fit:
    r"""Tightest (L0, L1) line above the points ``(‖∇f(w_k)‖, L_loc(w_k))``.

    Paper 003, Assumption 1 bounds the local smoothness by ``L0 + L1‖∇f(w)‖``. Among
    the lines lying above all N points, "tightest" here means the one with the
    smallest mean gap:

    .. math::
        \min_{L_0, L_1 \ge 0} \frac{1}{N}\sum_k (L_0 + L_1 g_k - s_k)
        \quad \text{s.t.}\quad L_0 + L_1 g_k \ge s_k \;\; \forall k,

    a two-variable linear program (``scipy.optimize.linprog``, HiGHS). Since the
    objective equals ``L0 + L1·ḡ − s̄``, the optimum is the supporting line of the
    upper convex hull of the points at the mean gradient norm ``ḡ``: it touches one or
    two points and is insensitive to points far below it. When the LP has several
    optima (e.g. all ``g_k`` equal), HiGHS returns one of them.

    The log-log view of paper 003, Fig. 1b is returned too: the smallest ``c`` with
    ``log s_k ≤ log g_k + c`` (natural log), i.e. ``s ≤ e^c g`` — the ``(0, e^c)``
    condition; the paper reports ``c = 1.4`` for a Transformer on WMT 2014.

    Cost: no HVPs; an LP with 2 variables and N constraints.

    Args:
        grad_norms: ``‖∇f(w_k)‖`` per point, ≥ 0.
        smoothness: local smoothness per point, ≥ 0.

    Returns:
        :class:`L0L1Fit`.

    Example:
        >>> fit = fit_l0l1([1.0, 2.0, 3.0], [3.0, 4.0, 5.0])  # exactly s = 2 + g
        >>> round(fit.L0, 9), round(fit.L1, 9)
        (2.0, 1.0)
    """
    from scipy.optimize import linprog

    g, s = l0l1_points(grad_norms, smoothness)
    # Scale both axes to O(1) so the LP tolerances are relative, then undo.
    gs = max(float(g.max()), 1e-300)
    ss = max(float(s.max()), 1e-300)
    gn, sn = g / gs, s / ss
    res = linprog(
        c=[1.0, float(gn.mean())],
        A_ub=-np.stack([np.ones_like(gn), gn], axis=1),
        b_ub=-sn,
        bounds=[(0, None), (0, None)],
        method="highs",
    )
    if res.status != 0:  # pragma: no cover - the LP is always feasible and bounded
        raise RuntimeError(f"fit_l0l1: linear program failed: {res.message}")
    L0 = float(res.x[0]) * ss
    L1 = float(res.x[1]) * ss / gs
    # Lift by the LP's residual violation so the line is above every point exactly.
    lift = max(0.0, float(np.max(s - (L0 + L1 * g))))
    L0 += lift
    pos = g > 0
    if pos.any():
        with np.errstate(divide="ignore"):
            c = float(np.max(np.log(s[pos]) - np.log(g[pos])))
    else:
        c = math.nan
    return L0L1Fit(
        L0=L0,
        L1=L1,
        mean_gap=float(np.mean(L0 + L1 * g - s)),
        loglog_c=c,
        loglog_L1=math.exp(c) if math.isfinite(c) else math.nan,
        n_points=int(g.size),
        n_loglog=int(pos.sum()),
        max_violation=float(np.max(s - (L0 + L1 * g))),
    )
