"""Local smoothness along an optimization step (paper 003, App. E; Zhang et al. 2019a).

Given two consecutive iterates ``w`` and ``w_next`` with step ``Δ = w_next − w``,
the local smoothness at ``w`` is the largest finite-difference slope of the gradient
along the segment, sampled on the grid ``γ ∈ {α, 2α, …, 1}``::

    L_loc(w; Δ) = max_γ ‖∇f(w + γΔ) − ∇f(w)‖ / (γ ‖Δ‖).

It is a deterministic quantity (no randomness, no HVPs): ``1/α + 1`` gradient
evaluations. For a quadratic ``½ xᵀAx`` every ratio equals ``‖AΔ‖/‖Δ‖``; for a
smooth loss each ratio is ``‖H(w)Δ‖/‖Δ‖ + O(γ‖Δ‖·‖∇³f‖)`` (Taylor), so as the step
shrinks it tends to the directional curvature, bounded by ``‖H(w)‖₂`` — which
:func:`hessian_local_smoothness` estimates with Lanczos.

:func:`hessnorm.analyze.smoothness_along_run` computes the same numbers afterwards
from a training run's consecutive checkpoints; the pairs ``(grad_norm,
local_smoothness)`` feed :func:`hessnorm.l0l1.fit_l0l1` (paper 003, Assumption 1 and
Fig. 1b). This module knows nothing of run folders.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from hessnorm.errors import ConfigError, NonFiniteError, ShapeError
from hessnorm.estimate import Estimate
from hessnorm.estimators._progress import progress_bar
from hessnorm.operator import LossOperator, all_finite

__all__ = ["local_smoothness", "hessian_local_smoothness", "check_alpha"]


def check_alpha(alpha: float) -> list[float]:
    """The step fractions ``{α, 2α, …, 1}`` for ``α = 1/n``, with the last one exactly 1.

    Raises:
        ConfigError: ``alpha`` outside (0, 1] or ``1/alpha`` not an integer.

    Example:
        >>> check_alpha(0.25)
        [0.25, 0.5, 0.75, 1.0]
    """
    if not isinstance(alpha, (int, float)) or isinstance(alpha, bool) or not math.isfinite(alpha):
        raise ConfigError(f"alpha must be a finite number in (0, 1], got {alpha!r}")
    if not 0.0 < alpha <= 1.0:
        raise ConfigError(
            f"alpha must lie in (0, 1], got {alpha}; use e.g. alpha=0.1 (11 gradients)"
        )
    n = round(1.0 / alpha)
    if abs(n * alpha - 1.0) > 1e-9:
        raise ConfigError(
            f"1/alpha must be an integer so that the grid {{alpha, 2 alpha, ..., 1}} ends at 1; "
            f"got alpha={alpha} (1/alpha={1.0 / alpha:.6g}); use alpha=1/n, e.g. 0.1, 0.05 or 0.25"
        )
    return [k / n for k in range(1, n + 1)]


def _gradient_function(
    loss: Any, grad_fn: Callable[[Tensor], Tensor] | None
) -> tuple[Callable[[Tensor], Tensor], torch.dtype | None, Any]:
    if grad_fn is not None:
        if loss is not None:
            raise ConfigError(
                "pass either a loss (function or operator) or grad_fn=, not both: "
                "local_smoothness(loss_fn, w, w_next) or local_smoothness(None, w, w_next, "
                "grad_fn=g)"
            )
        if not callable(grad_fn):
            raise TypeError(f"grad_fn must be callable, got {type(grad_fn).__name__}")
        return grad_fn, None, None
    if isinstance(loss, LossOperator):
        return loss.gradient, loss.dtype, loss.device
    if callable(loss):
        g = torch.func.grad(loss)

        def gradient(x: Tensor) -> Tensor:
            val = loss(x)
            if not isinstance(val, Tensor) or val.numel() != 1:
                raise ShapeError(
                    "the loss function must return a scalar tensor, got "
                    f"{tuple(val.shape) if isinstance(val, Tensor) else type(val).__name__}; "
                    "to pass a gradient function use the keyword: "
                    "local_smoothness(None, w, w_next, grad_fn=g)"
                )
            return g(x)

        return gradient, None, None
    raise TypeError(
        "local_smoothness needs a scalar loss function of a flat tensor, a HessianOperator "
        f"(or another LossOperator), or grad_fn=; got {type(loss).__name__}"
    )


def local_smoothness(
    loss: Any,
    w: Tensor,
    w_next: Tensor,
    *,
    alpha: float = 0.1,
    grad_fn: Callable[[Tensor], Tensor] | None = None,
    progress: bool = False,
) -> Estimate:
    r"""Finite-difference local smoothness of the loss along the step ``w → w_next``.

    .. math::
        L_{loc} = \max_{\gamma \in \{\alpha, 2\alpha, \dots, 1\}}
        \frac{\|\nabla f(w + \gamma\Delta) - \nabla f(w)\|}{\gamma \|\Delta\|},
        \qquad \Delta = w_{next} - w,

    the estimator of paper 003, App. E ("How we evaluate the local smoothness"),
    taken from Zhang et al. (2019a). The gradient is that of ``loss``: a scalar
    function of the flat parameters (differentiated with ``torch.func.grad``, as
    :meth:`HessianOperator.from_function` does), or an operator, whose gradient is
    that of the mean loss over its evaluation set, so the value refers to that same
    set. A gradient function is accepted only as ``grad_fn=`` (with ``loss=None``).

    The result is a deterministic finite-difference quantity, not a statistical
    estimate: ``low == high == value`` and ``confidence = 1.0`` mean "exact for
    this grid", not a bound on the true local Lipschitz constant (a finer grid can
    only find larger ratios between grid points).

    Cost: ``1/α + 1`` gradient evaluations, no HVPs (``n_hvp = 0``;
    ``details["n_grad"]`` counts the gradients).

    Args:
        loss: a scalar loss ``f(x)`` of a flat tensor (d,), or a
            :class:`~hessnorm.operator.LossOperator` (e.g. a HessianOperator); with
            an operator, ``w`` and ``w_next`` are cast to its dtype and device.
            ``None`` when ``grad_fn`` is given.
        w: current iterate, flat tensor of shape (d,).
        w_next: next iterate, same shape.
        alpha: grid spacing; ``1/alpha`` must be an integer (default 0.1: 10 points).
        grad_fn: a gradient function ``x -> ∇f(x)`` on flat tensors, instead of ``loss``
            (for gradients torch cannot compute, e.g. from numpy).
        progress: show a tqdm bar over the gradients (off by default: it is called
            once per training step). A projected run over 10 minutes warns either way.

    Returns:
        Estimate named ``"local_smoothness"`` with ``details``: ``grad_norm``
        (‖∇f(w)‖), ``step_norm`` (‖Δ‖), ``gammas`` and ``ratios`` (lists, one ratio per
        γ), ``argmax_gamma``, ``alpha`` and ``n_grad``.

    Raises:
        ConfigError: ``alpha`` outside (0, 1] or ``1/alpha`` not an integer, or a
            zero step (``w_next == w``).
        ShapeError: ``w`` and ``w_next`` are not flat tensors of the same shape, or
            the loss function does not return a scalar.
        TypeError: ``loss`` is neither a function nor an operator.
        NonFiniteError: a gradient contains NaN or Inf.

    Example:
        >>> import torch
        >>> A = torch.diag(torch.tensor([1.0, 4.0], dtype=torch.float64))
        >>> w, w_next = torch.zeros(2, dtype=torch.float64), torch.tensor([0.0, 1.0], dtype=torch.float64)
        >>> local_smoothness(lambda x: 0.5 * x @ A @ x, w, w_next).value  # ‖AΔ‖/‖Δ‖ for Δ = e₂
        4.0
        >>> local_smoothness(None, w, w_next, grad_fn=lambda x: A @ x).value
        4.0
    """
    t0 = time.perf_counter()
    gammas = check_alpha(alpha)
    grad_fn, dtype, device = _gradient_function(loss, grad_fn)
    for name, v in (("w", w), ("w_next", w_next)):
        if not isinstance(v, Tensor) or v.dim() != 1 or not v.is_floating_point():
            raise ShapeError(
                f"{name} must be a flat 1-D floating tensor (use op.flatten or "
                f"torch.nn.utils.parameters_to_vector), got {type(v).__name__}"
                + (f" of shape {tuple(v.shape)}" if isinstance(v, Tensor) else "")
            )
    if w.shape != w_next.shape:
        raise ShapeError(
            f"w and w_next must have the same shape, got {tuple(w.shape)} and {tuple(w_next.shape)}"
        )
    w = w.detach().to(dtype=dtype or w.dtype, device=device or w.device)
    w_next = w_next.detach().to(dtype=w.dtype, device=w.device)
    delta = w_next - w
    step_norm = float(torch.linalg.vector_norm(delta))
    if step_norm == 0.0:
        raise ConfigError(
            "w_next equals w: the step Δ = w_next − w is zero, so local smoothness is undefined; "
            "pass two distinct consecutive iterates (skip steps where the optimizer did not move)"
        )

    def grad(x: Tensor) -> Tensor:
        g = grad_fn(x)
        if not isinstance(g, Tensor) or g.shape != x.shape:
            raise ShapeError(
                f"the gradient function must return a tensor of shape {tuple(x.shape)}, got "
                f"{tuple(g.shape) if isinstance(g, Tensor) else type(g).__name__}"
            )
        if not all_finite(g):
            raise NonFiniteError(
                "gradient has NaN/Inf on the segment between w and w_next; check the loss, "
                "or the step (the optimizer may have diverged)"
            )
        return g.detach()

    ratios = []
    with progress_bar(
        len(gammas) + 1,
        "local_smoothness",
        enabled=progress,
        unit="grad",
        advice="a coarser grid (larger alpha) or fewer evaluation examples",
    ) as bar:
        g0 = grad(w)
        bar.update(1)
        for gamma in gammas:
            g = grad(w + gamma * delta)
            ratios.append(float(torch.linalg.vector_norm(g - g0)) / (gamma * step_norm))
            bar.update(1)
    k = max(range(len(ratios)), key=ratios.__getitem__)
    value = ratios[k]
    return Estimate(
        name="local_smoothness",
        value=value,
        low=value,
        high=value,
        confidence=1.0,
        n_hvp=0,
        seconds=time.perf_counter() - t0,
        d=int(w.numel()),
        details={
            "grad_norm": float(torch.linalg.vector_norm(g0)),
            "step_norm": step_norm,
            "gammas": gammas,
            "ratios": ratios,
            "argmax_gamma": gammas[k],
            "alpha": float(alpha),
            "n_grad": len(gammas) + 1,
        },
    )


def hessian_local_smoothness(
    op: Any, w: Tensor | None = None, *, tol: float = 1e-3, seed: int = 0, **kwargs
) -> Estimate:
    """Hessian-based local smoothness ``‖H(w)‖₂`` (what Assumption 1 of paper 003 bounds).

    Runs :func:`hessnorm.estimators.lanczos.spectral_norm` on ``op`` (moved to ``w``
    with ``op.at(w)`` when ``w`` is given) and adds ``details["grad_norm"] = ‖∇f(w)‖``
    (one gradient) so the result can be placed on the (L0, L1) plot next to
    :func:`local_smoothness`. The finite-difference value along a step Δ tends to
    ``‖H(w)Δ‖/‖Δ‖ ≤ ‖H(w)‖₂`` as Δ → 0.

    Cost: that of the Lanczos estimate (see its docstring) plus one gradient.

    Args:
        op: a HessianOperator (needs ``gradient`` and ``at`` besides ``hvp``).
        w: flat point (d,) to evaluate at; default the operator's own point.
        tol: relative tolerance passed to Lanczos.
        seed: seed of the Lanczos start vector.
        **kwargs: further keyword arguments of ``lanczos.spectral_norm``.

    Returns:
        The Lanczos Estimate renamed ``"hessian_local_smoothness"``, with ``grad_norm``
        added to its details.

    Example:
        >>> import torch
        >>> from hessnorm.operator import DenseOperator
        >>> est = hessian_local_smoothness(DenseOperator(torch.diag(torch.tensor([1.0, -3.0], dtype=torch.float64))))
        >>> round(est.value, 6), est.details["grad_norm"]
        (3.0, 0.0)
    """
    from hessnorm.estimators.lanczos import spectral_norm

    if w is not None:
        op = op.at(w)
    est = spectral_norm(op, tol=tol, seed=seed, **kwargs)
    details = dict(est.details)
    details["grad_norm"] = float(torch.linalg.vector_norm(op.gradient()))
    return Estimate(
        name="hessian_local_smoothness",
        value=est.value,
        low=est.low,
        high=est.high,
        confidence=est.confidence,
        n_hvp=est.n_hvp,
        seconds=est.seconds,
        d=est.d,
        details=details,
    )
