"""Preconditioned sharpness: the top eigenvalues of P⁻¹H that Adam's stability depends on.

Adam's update is θ ← θ − η·m̂/P with P = diag(√v̂ + ε). Around a minimum with v̂
frozen, the linearised dynamics are those of heavy-ball momentum on the quadratic
with matrix P⁻¹H, which is stable only while λ_max(P⁻¹H) < (2 + 2β₁)/((1 − β₁)η)
(38/η at β₁ = 0.9; Cohen et al. 2022, "Adaptive gradient methods at the edge of
stability", arXiv:2207.14484, Sec. 3). P⁻¹H is not symmetric, but it is similar
to M = P^{-1/2} H P^{-1/2} (M = P^{1/2}(P⁻¹H)P^{-1/2}), so the two have the same real
eigenvalues and Lanczos on M, a symmetric operator whose HVP is one HVP of H between
two elementwise scalings (:class:`ScaledOperator`), computes them with the same
machinery and guarantees as :func:`~hessnorm.estimators.lanczos.spectral_norm`.

Error bars (one-sided versions of the bounds in :mod:`hessnorm.estimators._krylov`):

* Lower end of λ_max (deterministic): the largest Ritz value θ_max ≤ λ_max(M)
  (Courant–Fischer on the Krylov space).
* Upper end of λ_max (probabilistic, confidence 1 − δ): with the random start v and
  a unit eigenvector u of λ_max(M), |⟨v, u⟩| ≥ t = δ/√(2d/π) with probability at
  least 1 − δ, and then t²·K_m(λ_max) ≤ 1 for the Christoffel function K_m of T_m
  (the argument of step 3 in :mod:`~hessnorm.estimators._krylov` restricted to the
  eigenvalue at the top end). K_m increases on [θ_max, ∞), so λ_max ≤ the largest
  x ≥ θ_max with t²·K_m(x) ≤ 1, found by bisection.
* λ_min in ``details`` gets the mirror-image interval [lower Christoffel bound,
  θ_min], also at confidence 1 − δ (its own event; the two are not joint).
* Rounding: both ends are widened by η·‖M‖₂ with η = eps·max(10, √d), an absolute
  slack because an eigenvalue near 0 has no useful relative error.
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch
from torch import Tensor

from hessnorm.errors import ConfigError, ShapeError
from hessnorm.estimate import Estimate
from hessnorm.estimators._krylov import rounding_slack, start_radius, tridiag_eig
from hessnorm.estimators._progress import progress_bar
from hessnorm.estimators.lanczos import lanczos
from hessnorm.operator import as_operator
from hessnorm.registry import register_estimator

__all__ = [
    "ScaledOperator",
    "preconditioned_sharpness",
    "stability_threshold",
    "edge_fraction",
    "hvp_cost",
]


def stability_threshold(lr: float, beta1: float) -> float:
    """(2 + 2β₁)/((1 − β₁)·η): the largest λ(P⁻¹H) for which frozen-P Adam is stable.

    The quadratic model of Cohen et al. 2022 (arXiv:2207.14484, Sec. 3): heavy-ball
    momentum with step η and momentum β₁ (Adam's EMA of gradients rescaled by 1/(1 − β₁))
    diverges along an eigenvector of P⁻¹H whose eigenvalue exceeds this. No HVP.

    Example:
        >>> round(stability_threshold(1e-3, 0.9), 6)  # 38/η
        38000.0
        >>> stability_threshold(0.1, 0.0)  # gradient descent: 2/η
        20.0
    """
    if not (lr > 0 and math.isfinite(lr)):
        raise ConfigError(f"the learning rate must be a positive number, got {lr}")
    if not 0.0 <= beta1 < 1.0:
        raise ConfigError(f"beta1 must lie in [0, 1), got {beta1}")
    return (2.0 + 2.0 * beta1) / ((1.0 - beta1) * lr)


def edge_fraction(lambda_max: float, lr: float, beta1: float) -> float:
    """λ_max(P⁻¹H) / threshold = λ_max·η·(1 − β₁)/(2 + 2β₁): 1 is the edge of stability.

    Example:
        >>> round(edge_fraction(19_000.0, 1e-3, 0.9), 12)
        0.5
    """
    return float(lambda_max) / stability_threshold(lr, beta1)


class ScaledOperator:
    """v ↦ D·H·(D·v) for a positive diagonal D: the operator of P^{-1/2} H P^{-1/2}.

    A composition like :class:`~hessnorm.operator.RotatedOperator`: one HVP of the
    base per vector, batched (k, d) inputs passed through as one batched HVP.

    Args:
        base: a Hessian-like operator or a dense symmetric tensor.
        scale: the diagonal of D, shape (d,), positive and finite.

    Example:
        >>> H = torch.tensor([[2.0, 1.0], [1.0, 4.0]], dtype=torch.float64)
        >>> op = ScaledOperator(H, torch.tensor([1.0, 0.5], dtype=torch.float64))
        >>> op.dense().tolist(), op.matvec_count
        ([[2.0, 0.5], [0.5, 1.0]], 2)
    """

    def __init__(self, base, scale: Tensor) -> None:
        base = as_operator(base)
        scale = torch.as_tensor(scale)
        if scale.dim() != 1 or scale.numel() != base.d:
            raise ShapeError(
                f"the scaling has shape {tuple(scale.shape)} but the operator acts on R^{base.d}; "
                f"pass one positive entry per parameter, in the operator's flat order"
            )
        if not bool(torch.isfinite(scale).all()) or not bool((scale > 0).all()):
            bad = int(torch.nonzero(~(torch.isfinite(scale) & (scale > 0)))[0])
            raise ConfigError(
                f"the scaling must be positive and finite; entry {bad} is {float(scale[bad])}"
            )
        self.base = base
        self.scale = scale.to(device=base.device, dtype=base.dtype)
        self.d, self.dtype, self.device = base.d, base.dtype, base.device

    @property
    def matvec_count(self) -> int:
        return self.base.matvec_count

    def hvp(self, v: Tensor) -> Tensor:
        return self.scale * self.base.hvp(self.scale * v)

    def dense(self) -> Tensor:
        """The dense (d, d) matrix D H D through d HVPs (small d only)."""
        eye = torch.eye(self.d, dtype=self.dtype, device=self.device)
        return self.hvp(eye)

    def __repr__(self) -> str:
        return f"ScaledOperator(d={self.d} of {self.base!r})"


def _christoffel_excluded(a, b, t2inv: float, x: float) -> bool:
    """t²·K_m(x) > 1 (x excluded as an eigenvalue position on the event E)."""
    p_prev, p, total = 0.0, 1.0, 1.0
    for k in range(len(a) - 1):
        coupling = b[k - 1] * p_prev if k > 0 else 0.0
        p_prev, p = p, ((x - a[k]) * p - coupling) / b[k]
        total += p * p
        if not total <= t2inv:
            return True
    return False


def _top_bound(a: list, b: list, t: float, breakdown: bool, top: float, scale: float) -> float:
    """Largest x ≥ θ_max with t²·K_m(x) ≤ 1 (an upper end of λ_max on E), to 1e-12·scale."""
    if breakdown or scale == 0.0:
        return top
    if len(a) == 1:
        return math.inf
    lim = 1.0 / (t * t)
    step = scale
    lo, hi = top, top + step
    while not _christoffel_excluded(a, b, lim, hi):
        lo, step = hi, 2.0 * step
        hi = top + step
        if step > 1e300:
            return math.inf
    while hi - lo > 1e-12 * scale:
        mid = 0.5 * (lo + hi)
        if _christoffel_excluded(a, b, lim, mid):
            hi = mid
        else:
            lo = mid
    return hi


def _check_preconditioner(preconditioner, op) -> tuple[Tensor, dict]:
    """The diagonal of P as a tensor, and what the Preconditioner knows (lr, betas, ...)."""
    info: dict = {}
    diag = preconditioner
    if not isinstance(preconditioner, Tensor) and hasattr(preconditioner, "diag"):
        diag, info = preconditioner.diag, preconditioner.summary()
        if getattr(preconditioner, "rotation", None) and type(op).__name__ != "RotatedOperator":
            raise ConfigError(
                f"this preconditioner holds Adam's state in rotated coordinates "
                f"({preconditioner.rotation}): analyse the rotated operator "
                "op.rotated(hessnorm.rotation.parse(P.rotation, op.d)), whose Hessian RᵀHR "
                "is the one that run's Adam saw"
            )
    if not isinstance(diag, Tensor):
        raise ConfigError(
            "preconditioner must be a hessnorm.Preconditioner or a positive tensor of shape "
            f"(d,), got {type(preconditioner).__name__}"
        )
    if diag.dim() != 1 or diag.numel() != op.d:
        raise ShapeError(
            f"the preconditioner has shape {tuple(diag.shape)} but the operator acts on "
            f"R^{op.d}; build it for the same parameters (Preconditioner.from_checkpoint(path, op))"
        )
    return diag, info


def hvp_cost(options: dict, d: int) -> int:
    """HVPs :func:`preconditioned_sharpness` may spend: at most min(max_iter, d).

    Example:
        >>> hvp_cost({}, 10_000), hvp_cost({"max_iter": 50}, 20)
        (300, 20)
    """
    return int(min(max(options.get("max_iter", 300), options.get("k", 1)), d))


def preconditioned_sharpness(
    op,
    preconditioner,
    *,
    k: int = 1,
    seed: int = 0,
    progress: bool = False,
    tol: float = 1e-4,
    max_iter: int = 300,
    confidence: float = 0.99,
    lr: float | None = None,
    beta1: float | None = None,
    hvp_rel_error: float | None = None,
) -> Estimate:
    """λ_max(P⁻¹H) for a positive diagonal P, by Lanczos on P^{-1/2} H P^{-1/2}.

    The eigenvalues of P⁻¹H are those of the symmetric M = P^{-1/2}HP^{-1/2}
    (similar matrices); Lanczos with full re-orthogonalisation runs on M through
    :class:`ScaledOperator` (one HVP of H per iteration). The interval
    [θ_max − slack, Christoffel bound + slack] holds with probability ≥ ``confidence``
    over the random start (module docstring; the algebraic counterpart of the bound
    of :func:`~hessnorm.estimators.lanczos.spectral_norm`). Stops when its width is at
    most ``tol``·|θ_max| and, for k > 1, the top k Ritz residuals are at most
    ``tol``·max|θ|. With ``lr`` and ``beta1`` (or a Preconditioner that has them) the
    details also carry the stability threshold (2 + 2β₁)/((1 − β₁)η) and the fraction
    of it reached (Cohen et al. 2022, arXiv:2207.14484: Adam is at its edge of
    stability when this fraction is ≈ 1).

    Cost: one HVP per Lanczos iteration, at most min(max(max_iter, k), d); on the
    test models 8–18 reach tol = 1e-4 (MLP d = 106, tiny transformer d = 228), 5–14 reach
    tol = 1e-2 on the 7.7k-parameter GPT of ``hessnorm reproduce adam-edge``.

    Args:
        op: a Hessian-like operator or a dense symmetric tensor H.
        preconditioner: a :class:`hessnorm.preconditioner.Preconditioner`, or the
            positive diagonal of P as a tensor of shape (d,) in the operator's flat order.
        k: how many of the largest eigenvalues to report (``details["top_k"]``).
        seed: seeds the random start vector; same seed, same number.
        progress: show a tqdm bar over HVPs.
        tol: relative width of the λ_max interval at which to stop.
        max_iter: cap on iterations (HVPs); the interval is then wider.
        confidence: 1 − δ, the probability that ``high`` bounds λ_max(P⁻¹H).
        lr: learning rate η for the threshold (default: the Preconditioner's).
        beta1: β₁ for the threshold (default: the Preconditioner's).
        hvp_rel_error: η of one HVP for the rounding slack (default eps·max(10, √d)).

    Returns:
        Estimate ``preconditioned_sharpness``: value θ_max, [low, high] as above. Details
        ``lambda_max``, ``lambda_min`` (the most negative curvature Adam sees, a Ritz
        value: an upper end), ``lambda_min_low`` (its lower end at ``confidence``),
        ``top_k``, ``top_k_residuals``, ``threshold`` and ``edge_fraction`` (None
        without lr/β₁), ``lr``, ``beta1``, ``iterations``, ``converged``,
        ``rounding``, plus what the Preconditioner records (``source``, ``step``, ...).

    Example:
        >>> H = torch.tensor([[4.0, 1.0], [1.0, -2.0]], dtype=torch.float64)
        >>> p = torch.tensor([2.0, 0.5], dtype=torch.float64)
        >>> est = preconditioned_sharpness(H, p, lr=0.01, beta1=0.9)
        >>> exact = torch.linalg.eigvals(torch.diag(1 / p) @ H).real.max().item()
        >>> abs(est.value - exact) < 1e-12, est.covers(exact), round(est.details["threshold"], 6)
        (True, True, 3800.0)
    """
    op = as_operator(op)
    diag, info = _check_preconditioner(preconditioner, op)
    if not tol > 0:
        raise ConfigError(f"tol must be positive, got {tol}")
    if not 0.0 < confidence < 1.0:
        raise ConfigError(f"confidence must lie in (0, 1), got {confidence}")
    if not 1 <= int(k) <= op.d:
        raise ConfigError(f"k must be between 1 and d = {op.d}, got {k}")
    k = int(k)
    t0 = time.perf_counter()
    sop = ScaledOperator(op, diag.to(torch.float64).rsqrt())
    eta = (
        rounding_slack(op.d, torch.finfo(op.dtype).eps)
        if hvp_rel_error is None
        else float(hvp_rel_error)
    )
    if not 0.0 <= eta < 0.5:
        raise ConfigError(f"hvp_rel_error must lie in [0, 0.5), got {hvp_rel_error}")
    t = start_radius(op.d, 1.0 - confidence)

    def stop_tridiag(alpha, beta, breakdown):
        theta, S = tridiag_eig(alpha, beta)
        scale = float(np.abs(theta).max())
        if breakdown:
            return True
        top = float(theta[-1])
        target = top + tol * max(abs(top), 1e-300)
        if len(alpha) < 2 or not _christoffel_excluded(
            alpha.tolist(), beta.tolist(), 1.0 / (t * t), target
        ):
            return False
        if k > 1:
            if len(theta) < k:
                return False
            resid = np.abs(beta[-1]) * np.abs(S[-1, -k:])
            return bool((resid <= tol * scale).all())
        return True

    with progress_bar(
        min(max(max_iter, k), op.d),
        "preconditioned_sharpness (Lanczos on P^-1/2 H P^-1/2)",
        enabled=progress,
        upper=True,
        advice="a smaller max_iter or a looser tol (the interval is then wider)",
    ) as bar:
        st = lanczos(
            sop, max_iter=max(max_iter, k), seed=seed, stop_tridiag=stop_tridiag, progress=bar
        )
    a, b = st.alpha.numpy(), st.beta.numpy()
    theta, S = tridiag_eig(a, b)
    resid = np.abs(b[-1]) * np.abs(S[-1])
    scale = float(np.abs(theta).max())
    al, bl = a.tolist(), b.tolist()
    top_hi = _top_bound(al, bl, t, st.breakdown, float(theta[-1]), scale)
    # λ_min(M) = −λ_max(−M): the Lanczos data of −M are (−α, β).
    bot_lo = -_top_bound([-x for x in al], bl, t, st.breakdown, -float(theta[0]), scale)
    norm_high = max(abs(top_hi), abs(bot_lo))
    slack = eta * norm_high / (1.0 - eta)
    lam_max, lam_min = float(theta[-1]), float(theta[0])
    low, high = lam_max - slack, top_hi + slack
    m = len(theta)
    kk = min(k, m)
    top_k = [float(x) for x in theta[::-1][:kk]]
    top_res = [float(x) for x in resid[::-1][:kk]]
    lr = info.get("lr") if lr is None else lr
    beta1 = info.get("beta1") if beta1 is None else beta1
    threshold = frac = None
    if lr is not None and beta1 is not None:
        threshold = stability_threshold(float(lr), float(beta1))
        frac = lam_max / threshold
    converged = bool(st.breakdown or (high - low) <= tol * abs(lam_max) * (1 + 1e-9) + 2 * slack)
    details = {
        "lambda_max": lam_max,
        "lambda_min": lam_min,
        "lambda_min_low": bot_lo - slack,
        "top_k": top_k,
        "top_k_residuals": top_res,
        "threshold": threshold,
        "edge_fraction": frac,
        "lr": None if lr is None else float(lr),
        "beta1": None if beta1 is None else float(beta1),
        "iterations": st.n_hvp,
        "converged": converged,
        "breakdown": bool(st.breakdown),
        "tol": tol,
        "rounding": eta,
        "bound": "random-start Krylov, one-sided (Christoffel function of T_m) on P^-1/2 H P^-1/2",
    }
    details.update({k_: v for k_, v in info.items() if k_ not in details})
    return Estimate(
        name="preconditioned_sharpness",
        value=lam_max,
        low=low,
        high=high,
        confidence=confidence,
        n_hvp=st.n_hvp,
        seconds=time.perf_counter() - t0,
        d=op.d,
        details=details,
    )


@register_estimator(
    "adam-sharpness",
    metric="λ_max(P⁻¹H)",
    bound="λ_max(P⁻¹H)",
    metric_rotated="λ_max(P⁻¹RᵀHR)",
    bound_rotated="λ_max(P⁻¹RᵀHR)",
    family="other",
    per_dim="value",
    columns=("threshold",),
    hvp_cost=lambda o, d: min(o["max_iter"], d),
)
def adam_sharpness_entry(
    op,
    *,
    seed: int = 0,
    progress: bool = False,
    context=None,
    tol: float = 1e-4,
    max_iter: int = 300,
) -> Estimate:
    """Adam's preconditioned sharpness λ_max(P⁻¹H), P from the checkpoint's optimizer state.

    P = diag(√v̂ + ε) is read from the checkpoint (:class:`hessnorm.preconditioner.
    Preconditioner`); the row's ``threshold`` column is Adam's stability threshold
    (2 + 2β₁)/((1 − β₁)η) and ``details["edge_fraction"]`` the ratio to it.

    Args:
        tol: relative interval width at which Lanczos stops.
        max_iter: cap on Lanczos steps (= HVPs); the interval is wider when reached.

    Example:
        >>> adam_sharpness_entry(torch.eye(2))
        Traceback (most recent call last):
        ...
        hessnorm.errors.ConfigError: adam-sharpness reads Adam's state from a checkpoint; run it through analyze (or call preconditioned_sharpness with a preconditioner)
    """
    if context is None or getattr(context, "preconditioner", None) is None:
        raise ConfigError(
            "adam-sharpness reads Adam's state from a checkpoint; run it through analyze "
            "(or call preconditioned_sharpness with a preconditioner)"
        )
    P = context.preconditioner(op)
    return preconditioned_sharpness(op, P, seed=seed, progress=progress, tol=tol, max_iter=max_iter)
