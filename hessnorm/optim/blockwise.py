"""Blockwise Adam: one second-moment scalar per block of a partition.

Paper 000 (Xie, Mohamadi, Li), Algorithm 3. For a partition Φ of the d flat
coordinates into blocks b of sizes d_b, with g_t the gradient at x_{t-1}:

    m_t       = β1 m_{t-1} + (1 - β1) g_t                       (per coordinate)
    v_{t,b}   = β2 v_{t-1,b} + (1 - β2) Σ_{Φ(i)=b} g_{t,i}² / d_b  (per block)
    x_{t,i}   = x_{t-1,i} - η_t m_{t,i} / sqrt(v_{t,Φ(i)} + ε)

Adam is the case of singleton blocks, AdaSGD (Algorithm 2) the case of a single
block. The paper's pseudo-code and ``torch.optim.Adam`` differ in three places; each
is an explicit switch here (defaults follow torch, so ``Partition.coordinates`` gives
``torch.optim.Adam`` step for step, not bit for bit: the two differ by about one
ulp in places):

* ``bias_correction`` (torch: on; paper: off): divide m by 1 - β1^t and v by 1 - β2^t.
* ``eps_inside`` (torch: False, ``sqrt(v) + ε``; paper: True, ``sqrt(v + ε)``).
* ``v0`` (torch and paper Alg. 1: 0): the initial value of every v_b.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import Tensor

from hessnorm.errors import ConfigError, SelectionError

__all__ = ["BlockwiseAdam"]


def _labels_of(partition, d: int) -> Tensor:
    labels = getattr(partition, "labels", partition)
    if not isinstance(labels, Tensor):
        raise ConfigError(
            f"partition must be a hessnorm.Partition or a LongTensor of block ids, got "
            f"{type(partition).__name__}; build one with Partition.by_tensor(model_shapes)."
        )
    labels = labels.reshape(-1).long()
    if labels.numel() != d:
        raise SelectionError(
            f"the partition covers {labels.numel()} coordinates but the parameters have "
            f"d = {d}; build the partition from the same parameters, in the same order."
        )
    if d and int(labels.min()) < 0:
        raise SelectionError("partition labels must be non-negative block ids 0..B-1.")
    return labels


class BlockwiseAdam(torch.optim.Optimizer):
    """Adam with one adaptive scalar per block (paper 000, Algorithm 3).

    The parameters are read in the order given and concatenated to one flat vector
    of length d; ``partition`` labels that flat vector (the order of
    ``model.named_parameters()`` when built from a model).

    Cost: O(d) time and memory per step beyond the gradient (m: d floats, v: B
    floats); no Hessian-vector products.

    Args:
        params: iterable of tensors (a single parameter group).
        partition: a :class:`hessnorm.partition.Partition` (or a LongTensor of block
            ids of length d).
        lr: learning rate η.
        betas: (β1, β2).
        eps: ε.
        weight_decay: decoupled (AdamW-style) decay: x ← x - η λ x before the step.
        bias_correction: divide m and v by 1 - β^t (torch default; not in the paper).
        eps_inside: use sqrt(v + ε) (paper) instead of sqrt(v) + ε (torch).
        v0: initial second moment of every block (paper: v_0).

    Example:
        >>> import torch
        >>> x = torch.nn.Parameter(torch.tensor([3.0, -4.0]))
        >>> opt = BlockwiseAdam([x], torch.tensor([0, 0]), lr=0.1, bias_correction=False,
        ...                     betas=(0.0, 0.0), eps=0.0)
        >>> x.grad = torch.tensor([3.0, -4.0]); opt.step()
        >>> torch.allclose(x, torch.tensor([3.0, -4.0]) * (1 - 0.1 / (12.5 ** 0.5)))
        True
    """

    def __init__(
        self,
        params: Iterable[Tensor],
        partition,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        *,
        bias_correction: bool = True,
        eps_inside: bool = False,
        v0: float = 0.0,
    ) -> None:
        if lr < 0 or eps < 0 or v0 < 0 or weight_decay < 0:
            raise ConfigError(
                f"lr, eps, v0 and weight_decay must be >= 0 (got lr={lr}, eps={eps}, "
                f"v0={v0}, weight_decay={weight_decay})."
            )
        if not all(0.0 <= b < 1.0 for b in betas):
            raise ConfigError(f"betas must lie in [0, 1), got {tuple(betas)}.")
        defaults = dict(
            lr=lr,
            betas=tuple(betas),
            eps=eps,
            weight_decay=weight_decay,
            bias_correction=bias_correction,
            eps_inside=eps_inside,
            v0=v0,
        )
        super().__init__(params, defaults)
        if len(self.param_groups) != 1:
            raise ConfigError(
                "BlockwiseAdam takes one parameter group (the partition labels the "
                "concatenation of all parameters); pass a flat list of tensors."
            )
        group = self.param_groups[0]
        d = sum(p.numel() for p in group["params"])
        labels = _labels_of(partition, d)
        self.labels = labels
        self.n_blocks = int(labels.max()) + 1 if d else 0
        self.block_sizes = torch.bincount(labels, minlength=self.n_blocks)
        if d and int((self.block_sizes == 0).sum()):
            raise SelectionError(
                "partition block ids must be 0..B-1 with every id used; relabel with "
                "Partition.from_labels(labels)."
            )

    def _flat_state(self, group):
        params = group["params"]
        first = self.state[params[0]]
        if "step" not in first:
            ref = params[0]
            first["step"] = torch.tensor(0.0)
            first["block_exp_avg_sq"] = torch.full(
                (self.n_blocks,), float(group["v0"]), dtype=ref.dtype, device=ref.device
            )
            for p in params:
                self.state[p]["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        return first

    @torch.no_grad()
    def step(self, closure=None):
        """One step of Algorithm 3 on the concatenated parameters."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        group = self.param_groups[0]
        params = group["params"]
        if not params:
            return loss
        first = self._flat_state(group)
        beta1, beta2 = group["betas"]
        lr, eps = group["lr"], group["eps"]
        ref = params[0]
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        first["step"] += 1
        t = float(first["step"])
        labels = self.labels.to(ref.device)
        sizes = self.block_sizes.to(device=ref.device, dtype=ref.dtype)
        sq = torch.cat([(g.reshape(-1).to(ref.dtype)) ** 2 for g in grads])
        block_mean = torch.zeros(self.n_blocks, dtype=ref.dtype, device=ref.device)
        block_mean.index_add_(0, labels, sq)
        block_mean /= sizes
        v = first["block_exp_avg_sq"]
        v.mul_(beta2).add_(block_mean, alpha=1 - beta2)
        # Same operation order as torch.optim.Adam; singleton blocks match it to about
        # one ulp (not bit for bit).
        bc2 = (1 - beta2**t) if group["bias_correction"] else 1.0
        if group["eps_inside"]:
            denom_block = (v / bc2 + eps).sqrt()
        else:
            denom_block = v.sqrt() / math.sqrt(bc2) + eps
        denom = denom_block[labels]
        step_size = lr / (1 - beta1**t) if group["bias_correction"] else lr
        offset = 0
        for p, g in zip(params, grads):
            n = p.numel()
            m = self.state[p]["exp_avg"]
            m.lerp_(g, 1 - beta1)
            if group["weight_decay"]:
                p.mul_(1 - lr * group["weight_decay"])
            p.addcdiv_(m, denom[offset : offset + n].view_as(p), value=-step_size)
            offset += n
        return loss
