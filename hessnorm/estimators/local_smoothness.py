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

:func:`local_smoothness_along_run` computes the same numbers afterwards from a
training run's consecutive checkpoints; the pairs ``(grad_norm, local_smoothness)``
feed :func:`hessnorm.l0l1.fit_l0l1` (paper 003, Assumption 1 and Fig. 1b).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from hessnorm.errors import CheckpointError, ConfigError, NonFiniteError, ShapeError
from hessnorm.estimate import Estimate

__all__ = ["local_smoothness", "hessian_local_smoothness", "local_smoothness_along_run"]


def _grid(alpha: float) -> list[float]:
    """The step fractions ``{α, 2α, …, 1}`` for ``α = 1/n``, with the last one exactly 1."""
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


def _gradient_function(fn_or_op: Any) -> tuple[Callable[[Tensor], Tensor], torch.dtype | None, Any]:
    if hasattr(fn_or_op, "gradient"):
        return (
            fn_or_op.gradient,
            getattr(fn_or_op, "dtype", None),
            getattr(fn_or_op, "device", None),
        )
    if callable(fn_or_op):
        return fn_or_op, None, None
    raise TypeError(
        "local_smoothness needs a HessianOperator (anything with .gradient(x)) or a callable "
        f"mapping a flat parameter tensor to its flat gradient; got {type(fn_or_op).__name__}"
    )


def local_smoothness(fn_or_op: Any, w: Tensor, w_next: Tensor, *, alpha: float = 0.1) -> Estimate:
    r"""Finite-difference local smoothness of the loss along the step ``w → w_next``.

    .. math::
        L_{loc} = \max_{\gamma \in \{\alpha, 2\alpha, \dots, 1\}}
        \frac{\|\nabla f(w + \gamma\Delta) - \nabla f(w)\|}{\gamma \|\Delta\|},
        \qquad \Delta = w_{next} - w,

    the estimator of paper 003, App. E ("How we evaluate the local smoothness"),
    taken from Zhang et al. (2019a). The gradient is that of ``fn_or_op``: for a
    :class:`~hessnorm.operator.HessianOperator` it is the gradient of the mean loss
    over the operator's evaluation set, so the value refers to that same set.

    The result is a deterministic finite-difference quantity, not a statistical
    estimate: ``low == high == value`` and ``confidence = 1.0`` mean "exact for
    this grid", not a bound on the true local Lipschitz constant (a finer grid can
    only find larger ratios between grid points).

    Cost: ``1/α + 1`` gradient evaluations, no HVPs (``n_hvp = 0``;
    ``details["n_grad"]`` counts the gradients).

    Args:
        fn_or_op: a HessianOperator (or anything with ``.gradient(x)``), or a callable
            ``grad_fn(x) -> ∇f(x)`` on flat tensors of shape (d,). With an operator,
            ``w`` and ``w_next`` are cast to its dtype and device.
        w: current iterate, flat tensor of shape (d,).
        w_next: next iterate, same shape.
        alpha: grid spacing; ``1/alpha`` must be an integer (default 0.1: 10 points).

    Returns:
        Estimate named ``"local_smoothness"`` with ``details``: ``grad_norm``
        (‖∇f(w)‖), ``step_norm`` (‖Δ‖), ``gammas`` and ``ratios`` (lists, one ratio per
        γ), ``argmax_gamma``, ``alpha`` and ``n_grad``.

    Raises:
        ConfigError: ``alpha`` outside (0, 1] or ``1/alpha`` not an integer, or a
            zero step (``w_next == w``).
        ShapeError: ``w`` and ``w_next`` are not flat tensors of the same shape.
        NonFiniteError: a gradient contains NaN or Inf.

    Example:
        >>> import torch
        >>> A = torch.diag(torch.tensor([1.0, 4.0], dtype=torch.float64))
        >>> est = local_smoothness(lambda x: A @ x, torch.zeros(2, dtype=torch.float64),
        ...                        torch.tensor([0.0, 1.0], dtype=torch.float64))
        >>> est.value  # ‖AΔ‖/‖Δ‖ for Δ = e₂
        4.0
    """
    t0 = time.perf_counter()
    gammas = _grid(alpha)
    grad_fn, dtype, device = _gradient_function(fn_or_op)
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
        if not torch.isfinite(g).all():
            raise NonFiniteError(
                "gradient has NaN/Inf on the segment between w and w_next; check the loss, "
                "or the step (the optimizer may have diverged)"
            )
        return g.detach()

    g0 = grad(w)
    ratios = []
    for gamma in gammas:
        g = grad(w + gamma * delta)
        ratios.append(float(torch.linalg.vector_norm(g - g0)) / (gamma * step_norm))
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
    """Hessian-based local smoothness ``‖H(w)‖₂`` (the quantity Assumption 1 of paper 003 bounds).

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


def _checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    if not run_dir.is_dir():
        raise CheckpointError(
            f"run folder {run_dir} does not exist; pass the folder `hessnorm train` wrote"
        )
    from hessnorm.train.checkpoint import list_checkpoints

    found = list_checkpoints(run_dir)
    if len(found) < 2:
        raise CheckpointError(
            f"{run_dir} holds {len(found)} checkpoint(s) named ckpt_XXXXXX.pt; local smoothness needs "
            "at least two consecutive ones (train with a smaller --ckpt-every)"
        )
    return found


def local_smoothness_along_run(
    run_dir: str | Path,
    *,
    alpha: float = 0.1,
    eval_examples: int | None = None,
    progress: bool = True,
):
    """Local smoothness between consecutive checkpoints of a training run.

    For consecutive checkpoints ``ckpt_a.pt``, ``ckpt_b.pt`` (sorted by step) the row
    for step ``a`` is :func:`local_smoothness` with ``w = θ_a`` and ``w_next = θ_b``,
    gradients of the mean loss over the evaluation set rebuilt by
    ``hessnorm.train.rebuild(ckpt, eval_examples=...)`` (the same set for every
    checkpoint). When checkpoints are saved every K > 1 steps, Δ spans K optimizer
    steps, so the value is the smoothness along that longer segment (paper 003,
    App. E, uses single steps). Pairs whose parameters did not change are skipped.

    Cost: ``(1/α + 1)`` gradients over the evaluation set per pair.

    Args:
        run_dir: the run folder holding ``ckpt_XXXXXX.pt`` files.
        alpha: grid spacing of :func:`local_smoothness`.
        eval_examples: size of the evaluation set (passed to ``rebuild``).
        progress: show a tqdm progress bar.

    Returns:
        pandas.DataFrame with columns ``step``, ``next_step``, ``grad_norm``,
        ``local_smoothness``, ``step_norm``, ``argmax_gamma``, ``loss``.
    """
    import pandas as pd

    run_dir = Path(run_dir)
    ckpts = _checkpoints(run_dir)
    _grid(alpha)  # fail on a bad alpha before rebuilding any model

    from hessnorm.operator import HessianOperator
    from hessnorm.train import rebuild

    def operator(path: Path):
        model, batches, loss_fn, _meta = rebuild(path, eval_examples=eval_examples)
        return HessianOperator.from_module(model, loss_fn, batches)

    iterator = range(len(ckpts) - 1)
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(iterator, desc="local smoothness", unit="ckpt")
    rows = []
    op_next = operator(ckpts[0][1])
    for i in iterator:
        op, op_next = op_next, operator(ckpts[i + 1][1])
        w, w_next = op.point, op_next.point.to(op.dtype)
        if torch.equal(w, w_next):
            continue
        est = local_smoothness(op, w, w_next, alpha=alpha)
        rows.append(
            {
                "step": ckpts[i][0],
                "next_step": ckpts[i + 1][0],
                "grad_norm": est.details["grad_norm"],
                "local_smoothness": est.value,
                "step_norm": est.details["step_norm"],
                "argmax_gamma": est.details["argmax_gamma"],
                "loss": op.loss(),
            }
        )
    return pd.DataFrame(
        rows,
        columns=[
            "step",
            "next_step",
            "grad_norm",
            "local_smoothness",
            "step_norm",
            "argmax_gamma",
            "loss",
        ],
    )
