"""AdaSGD: momentum SGD normalized by one adaptive scalar for all parameters.

Paper 000, Algorithm 2 (after Wang & Wiens, 2020):

    m_t = β1 m_{t-1} + (1 - β1) g_t
    v_t = β2 v_{t-1} + (1 - β2) ‖g_t‖² / d
    x_t = x_{t-1} - η_t m_t / sqrt(v_t + ε)

Only ‖g_t‖ enters the adaptive part, so AdaSGD is rotation-invariant (Theorem 2.2):
running it on L∘R from Rᵀx₀ gives Rᵀ of the iterates on L. It is
:class:`~hessnorm.optim.blockwise.BlockwiseAdam` with a single block.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor

from hessnorm.optim.blockwise import BlockwiseAdam

__all__ = ["AdaSGD"]


class AdaSGD(BlockwiseAdam):
    """AdaSGD (paper 000, Algorithm 2): Adam whose v is one scalar from ‖g‖²/d.

    Cost: O(d) per step; state m (d floats) and v (1 float).

    Args:
        params: iterable of tensors; d is their total number of entries.
        lr, betas, eps, weight_decay, bias_correction, eps_inside, v0: as in
            :class:`~hessnorm.optim.blockwise.BlockwiseAdam` (defaults follow
            ``torch.optim.Adam``; the paper's pseudo-code is ``bias_correction=False,
            eps_inside=True``).

    Example:
        >>> import torch
        >>> x = torch.nn.Parameter(torch.tensor([3.0, -4.0]))
        >>> opt = AdaSGD([x], lr=0.5, betas=(0.0, 0.0), eps=0.0)
        >>> x.grad = torch.tensor([3.0, -4.0]); opt.step()
        >>> torch.allclose(x, torch.tensor([3.0, -4.0]) * (1 - 0.5 / 12.5 ** 0.5))
        True
    """

    def __init__(
        self,
        params: Iterable[Tensor],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        *,
        bias_correction: bool = True,
        eps_inside: bool = False,
        v0: float = 0.0,
    ) -> None:
        params = list(params)
        if params and isinstance(params[0], dict):
            d = sum(p.numel() for g in params for p in g["params"])
        else:
            d = sum(p.numel() for p in params)
        super().__init__(
            params,
            torch.zeros(d, dtype=torch.long),
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            bias_correction=bias_correction,
            eps_inside=eps_inside,
            v0=v0,
        )
