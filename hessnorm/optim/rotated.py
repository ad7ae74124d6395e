"""Run any optimizer on the rotated loss L∘R without a second copy of the weights.

For an orthogonal R and x = R x̃, the rotated loss L̃(x̃) = L(R x̃) has gradient
g̃ = Rᵀ g. An optimizer A run on L̃ produces an update Δx̃ from the g̃ it has seen;
the same iterate in the original coordinates moves by Δx = R Δx̃. :class:`Rotated`
wraps A this way, so "rotated Adam" (paper 000, Section 4 and Fig. 1) works for any
base optimizer, and Theorem 2.2 can be checked directly: a rotation-invariant A
(AdaSGD, SGD) is unchanged by the wrapper, Adam is not.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import Tensor

from hessnorm.errors import ConfigError, ShapeError

__all__ = ["Rotated"]

# Hyper-parameters a scheduler may change on the wrapper; copied to the base each step.
_SYNCED = ("lr",)


class Rotated(torch.optim.Optimizer):
    """Optimizer ``A`` applied to L∘R, expressed in the original coordinates.

    Every step: g = concat(p.grad); the base optimizer sees the gradient g̃ = Rᵀ g of
    a flat "shadow" tensor that is reset to 0 before its step, so after the step the
    shadow holds exactly the update Δx̃; the parameters then move by Δx = R Δx̃.
    Because the shadow never holds the weights, this is exact only for base
    optimizers whose update does not read x (Adam, AdaSGD, SGD with momentum,
    SignGD, RMSProp, ... without weight decay); weight decay is therefore refused in
    the base optimizer and offered here instead, decoupled, as x ← x (1 - η λ),
    which commutes with R because R is orthogonal.

    Memory: the base optimizer's state on d entries (Adam: 2d) plus the shadow (d)
    and two d-vectors of scratch per step (g̃ and Δx); no copy of the weights.
    Cost: one R and one Rᵀ application per step; no Hessian-vector products.

    Args:
        params: iterable of tensors (one group; flattened in the given order).
        optimizer_factory: callable ``[shadow] -> torch.optim.Optimizer``, e.g.
            ``lambda ps: torch.optim.Adam(ps, lr=1e-3)``.
        rotation: an orthogonal map of R^d with ``apply`` (R x) and ``apply_T``
            (Rᵀ x), e.g. :class:`hessnorm.rotation.RandPerm`.
        weight_decay: decoupled weight decay λ applied in original coordinates.

    ``param_groups[0]["lr"]`` of the wrapper is copied to the base optimizer before
    every step, so learning-rate schedulers attach to the wrapper.

    Example:
        >>> import torch
        >>> R = torch.linalg.qr(torch.randn(3, 3, dtype=torch.float64,
        ...     generator=torch.Generator().manual_seed(0)))[0]
        >>> class Dense:
        ...     def apply(self, x): return x @ R.T
        ...     def apply_T(self, x): return x @ R
        >>> x = torch.nn.Parameter(torch.ones(3, dtype=torch.float64))
        >>> opt = Rotated([x], lambda ps: torch.optim.SGD(ps, lr=0.1), Dense())
        >>> x.grad = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64); opt.step()
        >>> torch.allclose(x, torch.tensor([0.9, 0.8, 0.7], dtype=torch.float64))
        True
    """

    def __init__(
        self,
        params: Iterable[Tensor],
        optimizer_factory: Callable[[list[Tensor]], torch.optim.Optimizer],
        rotation,
        *,
        weight_decay: float = 0.0,
    ) -> None:
        params = list(params)
        if not params or isinstance(params[0], dict):
            raise ConfigError(
                "Rotated takes a non-empty flat list of tensors (one group), because "
                "the rotation acts on their concatenation."
            )
        d = sum(p.numel() for p in params)
        if getattr(rotation, "d", d) != d:
            raise ShapeError(
                f"the rotation acts on R^{rotation.d} but the parameters have d = {d}; "
                f"build it with the parameters' total size (e.g. RandPerm({d}))."
            )
        ref = params[0]
        self.shadow = torch.zeros(d, dtype=ref.dtype, device=ref.device, requires_grad=True)
        self.base = optimizer_factory([self.shadow])
        for g in self.base.param_groups:
            if g.get("weight_decay", 0.0):
                raise ConfigError(
                    "the base optimizer of Rotated must have weight_decay=0 (its update "
                    "would read the weights, which the shadow does not hold); pass "
                    "weight_decay to Rotated instead."
                )
        base_lr = self.base.param_groups[0].get("lr", 0.0)
        super().__init__(params, dict(lr=base_lr, weight_decay=weight_decay))
        self.rotation = rotation
        self.d = d

    @torch.no_grad()
    def step(self, closure=None):
        """One base-optimizer step on L∘R, mapped back to x by R."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        group = self.param_groups[0]
        params = group["params"]
        for bg in self.base.param_groups:
            for key in _SYNCED:
                if key in bg:
                    bg[key] = group[key]
        g = torch.cat(
            [
                (p.grad if p.grad is not None else torch.zeros_like(p))
                .reshape(-1)
                .to(self.shadow.dtype)
                for p in params
            ]
        )
        self.shadow.grad = self.rotation.apply_T(g)
        self.shadow.zero_()
        self.base.step()
        delta = self.rotation.apply(self.shadow)
        self.shadow.grad = None
        offset = 0
        for p in params:
            n = p.numel()
            if group["weight_decay"]:
                p.mul_(1 - group["lr"] * group["weight_decay"])
            p.add_(delta[offset : offset + n].view_as(p).to(p.dtype))
            offset += n
        return loss

    def state_dict(self):
        """The wrapper's groups plus the base optimizer's state under ``"base"``."""
        sd = super().state_dict()
        sd["base"] = self.base.state_dict()
        return sd

    def load_state_dict(self, state_dict) -> None:
        """Inverse of :meth:`state_dict`."""
        state_dict = dict(state_dict)
        base = state_dict.pop("base", None)
        if base is None:
            raise ConfigError(
                "this optimizer state has no 'base' entry: it was not saved by Rotated."
            )
        super().load_state_dict(state_dict)
        self.base.load_state_dict(base)
