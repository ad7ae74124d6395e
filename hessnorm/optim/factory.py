"""Build an optimizer of the trainer by name (``hessnorm train --optimizer NAME``)."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor

from hessnorm.errors import ConfigError
from hessnorm.optim.adasgd import AdaSGD
from hessnorm.optim.blockwise import BlockwiseAdam
from hessnorm.optim.rotated import Rotated
from hessnorm.optim.signgd import SignGD
from hessnorm.partition import Partition
from hessnorm.rotation import parse as parse_rotation

__all__ = ["OPTIMIZERS", "make_optimizer"]

OPTIMIZERS = ("adam", "adasgd", "rotated-adam", "blockwise-adam", "sgd", "signgd", "rmsprop")


def make_optimizer(
    name: str,
    named_params: Iterable[tuple[str, Tensor]],
    *,
    lr: float,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    partition: str = "by_tensor",
    rotation="randperm:depth=2,seed=0",
    bias_correction: bool = True,
    eps_inside: bool = False,
    v0: float = 0.0,
) -> torch.optim.Optimizer:
    """Optimizer ``name`` over ``named_params`` (a model's ``named_parameters()``).

    ``adam`` is ``torch.optim.Adam`` (``AdamW`` when weight_decay > 0), unless a
    paper switch (``bias_correction=False``, ``eps_inside=True``, ``v0 > 0``) asks for
    Algorithm 1 as written, which is ``BlockwiseAdam`` on singleton blocks.
    ``sgd`` uses momentum β1 (paper 000 App. B: 0.9), ``rmsprop`` smoothing β2.
    ``rotated-adam`` is :class:`Rotated` Adam with the given rotation.

    Example:
        >>> import torch
        >>> model = torch.nn.Linear(3, 2)
        >>> type(make_optimizer("adam", model.named_parameters(), lr=1e-3)).__name__
        'Adam'
        >>> opt = make_optimizer("sgd", model.named_parameters(), lr=0.1, betas=(0.5, 0.9))
        >>> type(opt).__name__, opt.defaults["momentum"]
        ('SGD', 0.5)
        >>> type(make_optimizer("adam", model.named_parameters(), lr=1e-3, v0=1e-4)).__name__
        'BlockwiseAdam'
    """
    named = [(n, p) for n, p in named_params if p.requires_grad]
    if not named:
        raise ConfigError("the model has no trainable parameter to optimize.")
    params = [p for _, p in named]
    d = sum(p.numel() for p in params)
    if name not in OPTIMIZERS:
        raise ConfigError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}.")
    betas = (float(betas[0]), float(betas[1]))
    paper = dict(bias_correction=bias_correction, eps_inside=eps_inside, v0=v0)
    paper_style = (not bias_correction) or eps_inside or v0 > 0

    def adam(ps, wd):
        if paper_style:
            return BlockwiseAdam(
                ps,
                torch.arange(sum(p.numel() for p in ps)),
                lr=lr,
                betas=betas,
                eps=eps,
                weight_decay=wd,
                **paper,
            )
        if wd:
            return torch.optim.AdamW(ps, lr=lr, betas=betas, eps=eps, weight_decay=wd)
        return torch.optim.Adam(ps, lr=lr, betas=betas, eps=eps)

    if name == "adam":
        return adam(params, weight_decay)
    if name == "adasgd":
        return AdaSGD(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, **paper)
    if name == "blockwise-adam":
        part = Partition.named(partition, {n: p.shape for n, p in named})
        return BlockwiseAdam(
            params, part, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, **paper
        )
    if name == "rotated-adam":
        R = parse_rotation(rotation, d)
        return Rotated(params, lambda ps: adam(ps, 0.0), R, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=betas[0], weight_decay=weight_decay)
    if name == "signgd":
        return SignGD(params, lr=lr, momentum=betas[0], weight_decay=weight_decay)
    return torch.optim.RMSprop(params, lr=lr, alpha=betas[1], eps=eps, weight_decay=weight_decay)
