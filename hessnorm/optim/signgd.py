"""SignGD: steepest descent for the ℓ∞ norm, optionally on a momentum.

Paper 000, Section 3.1: x_t = x_{t-1} - η sign(m_t) with m_t = β m_{t-1} + (1-β) g_t
(β = 0 gives plain SignGD, which is Adam with β1 = β2 = 0 and ε = 0). It is
permutation-invariant but not rotation-invariant (Theorem 2.2).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor

from hessnorm.errors import ConfigError

__all__ = ["SignGD"]


class SignGD(torch.optim.Optimizer):
    """Sign descent: x ← x - η sign(m), m an exponential average of g (β=0: m = g).

    Cost: O(d) per step; state m (d floats) only when ``momentum > 0``.

    Args:
        params: iterable of tensors or parameter groups.
        lr: learning rate η.
        momentum: β of the exponential average fed to sign().
        weight_decay: decoupled decay x ← x (1 - η λ) before the step.

    Example:
        >>> import torch
        >>> x = torch.nn.Parameter(torch.tensor([3.0, -4.0, 0.0]))
        >>> opt = SignGD([x], lr=0.5)
        >>> x.grad = torch.tensor([2.0, -1e-9, 0.0]); opt.step()
        >>> x.tolist()
        [2.5, -3.5, 0.0]
    """

    def __init__(
        self,
        params: Iterable[Tensor],
        lr: float = 1e-3,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
    ) -> None:
        if lr < 0 or weight_decay < 0 or not 0.0 <= momentum < 1.0:
            raise ConfigError(
                f"SignGD needs lr >= 0, weight_decay >= 0 and momentum in [0, 1); got "
                f"lr={lr}, weight_decay={weight_decay}, momentum={momentum}."
            )
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        """One sign step on every parameter that has a gradient."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                direction = p.grad
                if group["momentum"]:
                    state = self.state[p]
                    if "momentum_buffer" not in state:
                        state["momentum_buffer"] = torch.zeros_like(p)
                    buf = state["momentum_buffer"]
                    buf.lerp_(p.grad, 1 - group["momentum"])
                    direction = buf
                if group["weight_decay"]:
                    p.mul_(1 - group["lr"] * group["weight_decay"])
                p.add_(direction.sign(), alpha=-group["lr"])
        return loss
