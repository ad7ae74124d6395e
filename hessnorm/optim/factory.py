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

__all__ = ["OPTIMIZERS", "make_optimizer", "parse_rotation", "make_partition"]

OPTIMIZERS = ("adam", "adasgd", "rotated-adam", "blockwise-adam", "sgd", "signgd", "rmsprop")
PARTITIONS = ("by_tensor", "by_row", "coordinates", "single")


def parse_rotation(spec, d: int):
    """A rotation of R^d from a spec: an object with apply/apply_T, a dict, or a string.

    Strings name the kind and its options: ``"randperm:depth=2,seed=0"``,
    ``"expskew:t=0.1,seed=0"``, ``"identity"``; dicts are ``hessnorm.rotation`` specs.
    """
    import hessnorm.rotation as rot

    if hasattr(spec, "apply") and hasattr(spec, "apply_T"):
        return spec
    if isinstance(spec, dict):
        return rot.from_spec(spec)
    if not isinstance(spec, str) or not spec:
        raise ConfigError(
            f"rotation must be a string like 'randperm:depth=2,seed=0', got {spec!r}."
        )
    kind, _, opts = spec.partition(":")
    kwargs = {}
    for item in filter(None, opts.split(",")):
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"rotation option {item!r} in {spec!r} must be key=value.")
        kwargs[key.strip()] = float(value) if key.strip() == "t" else int(value)
    kinds = {"randperm": rot.RandPerm, "expskew": rot.ExpSkew, "identity": rot.Identity}
    if kind.lower() not in kinds:
        raise ConfigError(
            f"unknown rotation {kind!r}; choose one of {sorted(kinds)} "
            f"(e.g. 'randperm:depth=2,seed=0')."
        )
    try:
        return kinds[kind.lower()](d, **kwargs)
    except TypeError as exc:
        raise ConfigError(f"bad options for rotation {kind!r}: {exc}") from exc


def make_partition(name: str, named_shapes: dict[str, torch.Size]):
    """A :class:`hessnorm.partition.Partition` of the flat parameters by name."""
    from hessnorm.partition import Partition

    d = sum(int(torch.Size(s).numel()) for s in named_shapes.values())
    if name == "coordinates":
        return Partition.coordinates(d)
    if name == "single":
        return Partition.single(d)
    if name == "by_tensor":
        return Partition.by_tensor(named_shapes)
    if name == "by_row":
        return Partition.by_row(named_shapes)
    raise ConfigError(f"unknown partition {name!r}; choose one of {PARTITIONS}.")


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
        part = make_partition(partition, {n: p.shape for n, p in named})
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
