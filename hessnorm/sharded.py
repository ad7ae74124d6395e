"""Hessian operators over FSDP2-sharded models: shard-local finite-difference HVPs.

PyTorch's FSDP has no double backward, so no exact HVP exists on a sharded model.
What does exist everywhere training works is the gradient, and a central difference
of two gradients is an HVP (:mod:`hessnorm.fd`):

    H v ≈ (∇L(θ + h v) − ∇L(θ − h v)) / 2h,

computed **shard-locally**: each rank adds h·v_local to its local parameter shard in
place, runs the ordinary FSDP forward/backward (which gathers and reduce-scatters as in
training), and differences its gradient shards. The model is never copied or gathered
by hessnorm; every call restores the parameters bit for bit. This is the construction
used for sharded models of 10¹¹ parameters by Granziol & Juarev (2026, arXiv
2602.00816).

Vectors are local shards. The flat parameter vector of length d (``op.d``) is the
concatenation of the parameters in ``named_parameters()`` order, each flattened;
FSDP2 shards every parameter on its first dimension (``Shard(0)``), so this rank holds
one contiguous range of every parameter, ``op.local_ranges`` (global ``[lo, hi)``
pairs), and its vectors are those ranges concatenated (length ``op.local_d``).
Estimators take their inner products and norms through
:mod:`hessnorm.estimators._space`, which all-reduces them, and draw their probes by
global coordinate, so the same seed gives the same numbers for any number of ranks
(up to the order of the all-reduced sums).

Data. As in the data-parallel mode (:mod:`hessnorm.distributed`) each rank's ``data``
is its own shard, possibly uneven, and the Hessian is that of the mean loss over the
examples of all ranks: each rank's batch losses are weighted n_b / N (N all-reduced),
and the gradient reduction is set to a plain sum for the duration of each call. Ranks
with fewer batches run zero-weight passes so every rank takes part in every FSDP
collective.

Memory per rank (the model state; activations come on top, as in training): the
parameter shard, a copy of it (the point θ, to restore), the direction v, the
gradient shard and the two differences D(h)v, D(2h)v being accumulated, i.e. about
6 · d / N numbers, plus the probes an estimator keeps (Lanczos basis, Cauchy results),
also local shards. :meth:`ShardedOperator.memory` reports it.

Cost: four gradients (forward + backward) per HVP, ``n_batches`` passes each.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor, nn

from hessnorm.errors import EmptyDataError, NonFiniteError, SelectionError, ShapeError
from hessnorm.fd import HVPErrorLog, central_difference_pair, fd_step

__all__ = ["is_sharded_module", "ShardedOperator"]


def _is_dtensor(t: Any) -> bool:
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # torch without DTensor
        return False
    return isinstance(t, DTensor)


def is_sharded_module(model: nn.Module) -> bool:
    """Whether any parameter of ``model`` is a DTensor (``fully_shard`` was applied).

    Example:
        >>> is_sharded_module(nn.Linear(2, 2))
        False
    """
    return any(_is_dtensor(p) for p in model.parameters())


def _fsdp_groups(model: nn.Module) -> list:
    """The FSDP2 parameter groups of every ``fully_shard``-ed submodule."""
    groups = []
    for m in model.modules():
        get_state = getattr(m, "_get_fsdp_state", None)
        if get_state is None:
            continue
        groups.extend(getattr(get_state(), "_fsdp_param_groups", None) or [])
    return groups


class ShardedOperator:
    """Hessian of the mean loss of an FSDP2-sharded model, on local-shard vectors.

    Build it with :meth:`HessianOperator.from_module` (which recognises sharded
    models) or :meth:`from_module`. Every rank must make the same calls in the same
    order (each HVP runs FSDP collectives).

    Attributes:
        d: global dimension; local_d: this rank's shard length; local_ranges: the
        global [lo, hi) ranges of the shard; param_slices: name -> slice of the local
        vector; point: the local shard of θ; hvp_error: the FD error log.

    Example:
        A one-process gloo group (torchrun starts one process per rank; tests/test_fsdp.py
        runs two):

        >>> import torch.distributed as dist
        >>> from torch.distributed.fsdp import fully_shard
        >>> from hessnorm.operator import HessianOperator
        >>> dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
        >>> try:
        ...     _ = torch.manual_seed(0)
        ...     net = nn.Linear(3, 1).double()
        ...     x, y = torch.randn(8, 3, dtype=torch.float64), torch.randn(8, 1, dtype=torch.float64)
        ...     X = torch.cat([x, torch.ones(8, 1, dtype=torch.float64)], 1)
        ...     H = 2 * X.T @ X / 8  # the Hessian of the mean squared error in (w, b)
        ...     op = HessianOperator.from_module(fully_shard(net), nn.functional.mse_loss, (x, y))
        ...     hv = op.gather(op.hvp(op.scatter(torch.ones(4, dtype=torch.float64))))
        ... finally:
        ...     dist.destroy_process_group()
        >>> type(op).__name__, op.d, torch.allclose(hv, H.sum(1), atol=1e-8)
        ('ShardedOperator', 4, True)
    """

    mode = "fd"

    def __init__(
        self,
        model: nn.Module,
        loss_fn: Callable[[Any, Any], Tensor],
        data: Any,
        *,
        params: None | Iterable[str] = None,
        process_group: Any = None,
        fd_step_scale: float = 1.0,
    ) -> None:
        import torch.distributed as dist
        from torch.distributed.tensor import Shard
        from torch.distributed.tensor._utils import compute_local_shape_and_global_offset

        from hessnorm.distributed import example_count

        if not (dist.is_available() and dist.is_initialized()):
            raise ShapeError(
                "the model's parameters are sharded (DTensor) but no torch.distributed process "
                "group exists; run under torchrun, or build the operator on an unsharded model"
            )
        self.group = process_group if process_group is not None else dist.group.WORLD
        self.rank = dist.get_rank(self.group)
        self.world = dist.get_world_size(self.group)
        for mname, m in model.named_modules():
            if isinstance(m, nn.modules.dropout._DropoutNd) and m.training and m.p > 0:
                from hessnorm.errors import StochasticModelError

                raise StochasticModelError(
                    f"the model is in train mode with active dropout ({mname or 'root'}: "
                    f"{type(m).__name__}(p={m.p})): call model.eval() first"
                )
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        plain = [n for n, p in named if not _is_dtensor(p)]
        if plain:
            raise ShapeError(
                f"parameters {plain[:5]} are not sharded while others are: apply fully_shard to "
                "the root module as well (fully_shard(model) after its submodules)"
            )
        wanted = None if params is None else ([params] if isinstance(params, str) else list(params))
        if wanted is not None:
            unknown = [w for w in wanted if w not in dict(named)]
            if unknown or not wanted:
                raise SelectionError(
                    f"unknown or frozen parameter names {unknown}; trainable parameters are: "
                    f"{[n for n, _ in named][:20]}"
                )
            keep = set(wanted)
            named = [(n, p) for n, p in named if n in keep]
        self.model = model
        self._loss_fn = loss_fn
        self._params = named
        self.param_names = [n for n, _ in named]
        self.param_shapes = {n: p.shape for n, p in named}
        self.local_ranges: list[tuple[int, int]] = []
        self.param_slices: dict[str, slice] = {}
        offset, start = 0, 0
        for n, p in named:
            if p.device_mesh.ndim != 1 or tuple(p.placements) != (Shard(0),):
                raise ShapeError(
                    f"parameter {n} has placements {p.placements} on a {p.device_mesh.ndim}-D "
                    "mesh; hessnorm supports FSDP2's default Shard(0) on a 1-D mesh"
                )
            shape, goff = compute_local_shape_and_global_offset(
                p.shape, p.device_mesh, p.placements
            )
            row = math.prod(p.shape[1:]) if p.dim() > 1 else 1
            size = math.prod(shape)
            lo = offset + (goff[0] if p.dim() else 0) * row
            self.local_ranges.append((lo, lo + size))
            self.param_slices[n] = slice(start, start + size)
            start += size
            offset += p.numel()
        self.d = offset
        self.local_d = start
        ref = named[0][1].to_local()
        self.dtype, self.device = ref.dtype, ref.device
        self.point = torch.cat([p.to_local().detach().reshape(-1) for _, p in named]).clone()
        self._restore = self.point  # the model's own values, written back after every call
        self._theta_norm = None
        # HessianOperator.from_module hands over its normalised batch list; a bare
        # (inputs, targets) pair of tensors is one batch
        pair = isinstance(data, (tuple, list)) and len(data) == 2
        batches = [tuple(data)] if pair and all(isinstance(t, Tensor) for t in data) else list(data)
        moved, counts = [], []
        for inputs, targets in batches:
            n = example_count((inputs, targets))
            if n:
                moved.append((inputs, targets))
                counts.append(n)
        info = torch.tensor([sum(counts), len(moved)], dtype=torch.int64)
        gathered = [torch.zeros_like(info) for _ in range(self.world)]
        dist.all_gather(gathered, self._comm(info), group=self.group)
        per_rank = [g.cpu().tolist() for g in gathered]
        self.counts = [r[0] for r in per_rank]
        empty = [r for r, c in enumerate(self.counts) if c == 0]
        if empty:
            raise EmptyDataError(
                f"rank(s) {empty} of {self.world} hold no evaluation example (examples per "
                f"rank: {self.counts}); give every rank at least one example"
            )
        self.total = sum(self.counts)
        self._passes = max(r[1] for r in per_rank)
        self._batches = moved
        self._weights = [c / self.total for c in counts]
        self.fd_step_scale = float(fd_step_scale)
        self.matvec_count = 0
        self.hvp_error = HVPErrorLog(sqnorms=self._sqnorms)
        self.description = (
            f"{type(model).__name__} sharded over {self.world} ranks (FSDP2), {self.total} "
            f"examples (rank {self.rank}: {self.counts[self.rank]}), finite-difference HVPs"
        )

    @classmethod
    def from_module(
        cls,
        model: nn.Module,
        loss_fn: Callable[[Any, Any], Tensor],
        data: Any,
        *,
        params: None | Iterable[str] = None,
        dtype: torch.dtype | None = None,
        device: Any = None,
        mode: str = "auto",
        process_group: Any = None,
        **ignored: Any,
    ) -> ShardedOperator:
        """What :meth:`HessianOperator.from_module` returns for an FSDP2-sharded model.

        The model is used in place (never copied): its dtype and device are the
        operator's, and HVPs are finite differences, so ``dtype``/``device`` must be
        None and ``mode`` ``"auto"`` or ``"fd"``. Memory options of the exact modes
        (``chunk_size``, ``memory_budget``, ...) do not apply and are ignored.
        """
        if dtype is not None or device is not None:
            raise ShapeError(
                "a sharded model is analysed in place, in its own dtype and on its own device: "
                "pass dtype=None and device=None (cast the model before fully_shard instead)"
            )
        if mode not in ("auto", "fd"):
            raise ShapeError(
                f"mode={mode!r} needs double backward, which FSDP does not support; sharded "
                "models use finite-difference HVPs: pass mode='auto' or mode='fd'"
            )
        if params is not None and callable(params):
            params = [n for n, _ in model.named_parameters() if params(n)]
        return cls(model, loss_fn, data, params=params, process_group=process_group)

    # ------------------------------------------------------------------ reductions
    def _comm(self, t: Tensor) -> Tensor:
        import torch.distributed as dist

        nccl = str(dist.get_backend(self.group)) == "nccl"
        return t.to(torch.device("cuda", torch.cuda.current_device()) if nccl else "cpu")

    def allreduce_(self, t: Tensor) -> Tensor:
        """``t`` summed over the ranks (returned; ``t`` itself is updated when it can be)."""
        import torch.distributed as dist

        buf = self._comm(t)
        dist.all_reduce(buf, group=self.group)
        if buf is not t:
            t.copy_(buf.to(t.device))
        return t

    def _sqnorms(self, X: Tensor) -> Tensor:
        return self.allreduce_((X.double() ** 2).sum(dim=1).cpu())

    # ------------------------------------------------------------------ model access
    def _write(self, x: Tensor) -> None:
        with torch.no_grad():
            for (_, p), s in zip(self._params, self.param_slices.values()):
                local = p.to_local()
                local.copy_(x[s].view(local.shape))

    def _with_settings(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` in eval mode with summed gradient reductions; restore everything."""
        groups = _fsdp_groups(self.model)
        saved = [
            (g, g.gradient_divide_factor, getattr(g, "force_sum_reduction_for_comms", False))
            for g in groups
        ]
        training = [(m, m.training) for m in self.model.modules()]
        try:
            for g in groups:
                g.gradient_divide_factor = 1.0
                g.force_sum_reduction_for_comms = True
            self.model.eval()
            return fn()
        finally:
            self._write(self._restore)
            for g, factor, force in saved:
                g.gradient_divide_factor = factor
                g.force_sum_reduction_for_comms = force
            for m, t in training:
                m.training = t

    def _passes_iter(self):
        """(weight, batch) for every pass this rank runs: its batches, then 0-weight repeats."""
        for i in range(self._passes):
            if i < len(self._batches):
                yield self._weights[i], self._batches[i]
            else:
                yield 0.0, self._batches[0]

    def _gradient_at(self, x: Tensor) -> Tensor:
        """The local shard of ∇L(x) (x a local shard); parameters are left at x."""
        self._write(x)
        for _, p in self.model.named_parameters():
            p.grad = None
        with torch.enable_grad():
            for w, (inputs, targets) in self._passes_iter():
                args = inputs if isinstance(inputs, tuple) else (inputs,)
                loss = self._loss_fn(self.model(*args), targets) * w
                loss.backward()
        parts = []
        for _, p in self._params:
            g = p.grad
            parts.append(
                torch.zeros(p.to_local().numel(), dtype=self.dtype, device=self.device)
                if g is None
                else g.to_local().reshape(-1)
            )
        g = torch.cat(parts)
        for _, p in self.model.named_parameters():
            p.grad = None
        self._check_finite("gradient", g)
        return g

    def _check_finite(self, what: str, t: Tensor) -> None:
        bad = torch.tensor([0.0 if bool(torch.isfinite(t).all()) else 1.0], dtype=torch.float64)
        if float(self.allreduce_(bad)[0]) > 0:
            raise NonFiniteError(
                f"the {what} is not finite on at least one rank; the loss may overflow in "
                f"{self.dtype} or the model may be diverged"
            )

    # ------------------------------------------------------------------ public
    def _check_vector(self, v: Tensor) -> tuple[Tensor, bool]:
        if not isinstance(v, Tensor) or v.dim() not in (1, 2) or v.shape[-1] != self.local_d:
            shape = tuple(v.shape) if isinstance(v, Tensor) else type(v).__name__
            raise ShapeError(
                f"v has shape {shape}; this sharded operator takes this rank's local shard, "
                f"shape ({self.local_d},) or (k, {self.local_d}) (op.scatter(full) makes one)"
            )
        if v.dtype != self.dtype or v.device != self.device:
            raise ShapeError(
                f"v is {v.dtype} on {v.device}; the operator works in {self.dtype} on "
                f"{self.device}: convert with v.to({self.device!s}, {self.dtype})"
            )
        return (v.unsqueeze(0), True) if v.dim() == 1 else (v, False)

    def _theta(self) -> float:
        if self._theta_norm is None:
            sq = (self.point.double() ** 2).sum().reshape(1).cpu()
            self._theta_norm = math.sqrt(float(self.allreduce_(sq)[0]))
        return self._theta_norm

    def hvp(self, v: Tensor) -> Tensor:
        """H v by shard-local central differences, for local shards (local_d,) or (k, local_d).

        Cost: k HVPs, each four gradients (D(h) and D(2h)); errors go to ``hvp_error``.
        """
        V, single = self._check_vector(v)
        theta = self._theta()
        vnorms = self._sqnorms(V).sqrt().tolist()

        def run():
            d1, d2 = [], []
            for u, un in zip(V, vnorms):
                h = fd_step(self.dtype, theta, un, self.fd_step_scale)
                a, b = central_difference_pair(self._gradient_at, self.point, u, h)
                d1.append(a)
                d2.append(b)
            return torch.stack(d1), torch.stack(d2)

        D1, D2 = self._with_settings(run)
        self.matvec_count += V.shape[0]
        self.hvp_error.add(V, D1, D2)
        return D1[0] if single else D1

    def matvec(self, v: Tensor) -> Tensor:
        return self.hvp(v)

    def gradient(self, x: Tensor | None = None) -> Tensor:
        """Local shard of the gradient of the mean loss at x (default: the point)."""
        x = self.point if x is None else self._check_vector(x)[0][0]
        return self._with_settings(lambda: self._gradient_at(x).clone())

    def loss(self, x: Tensor | None = None) -> float:
        """Mean loss over the examples of all ranks at x (default: the point)."""
        x = self.point if x is None else self._check_vector(x)[0][0]

        def run():
            self._write(x)
            total = torch.zeros(1, dtype=torch.float64)
            with torch.no_grad():
                for w, (inputs, targets) in self._passes_iter():
                    args = inputs if isinstance(inputs, tuple) else (inputs,)
                    total += w * float(self._loss_fn(self.model(*args), targets))
            return float(self.allreduce_(total)[0])

        return self._with_settings(run)

    def at(self, x: Tensor) -> ShardedOperator:
        """The same model and data at another point x (a local shard); shares the model."""
        (x,), _ = self._check_vector(x)
        other = copy.copy(self)
        other.point = x.detach().clone()
        other._theta_norm = None
        other.matvec_count = 0
        other.hvp_error = HVPErrorLog(sqnorms=other._sqnorms)
        return other

    def rotated(self, rotation) -> None:
        """Not available: rotations act on full-length vectors, which a shard never holds."""
        from hessnorm.errors import ConfigError

        raise ConfigError(
            "rotated estimators do not run on a sharded operator (a rotation mixes all d "
            "coordinates); drop the rotated-* estimators or analyse on one process"
        )

    def scatter(self, full: Tensor) -> Tensor:
        """This rank's shard of a full-length vector (d,) or (k, d)."""
        parts = [full[..., lo:hi] for lo, hi in self.local_ranges]
        return torch.cat(parts, dim=-1).to(self.device, self.dtype)

    def gather(self, local: Tensor) -> Tensor:
        """The full-length vector from every rank's shard (O(d) memory: tests, small d)."""
        import torch.distributed as dist

        items: list[Any] = [None] * self.world
        dist.all_gather_object(items, (self.local_ranges, local.detach().cpu()), group=self.group)
        full = torch.zeros(*local.shape[:-1], self.d, dtype=local.dtype)
        for ranges, vec in items:
            col = 0
            for lo, hi in ranges:
                full[..., lo:hi] = vec[..., col : col + hi - lo]
                col += hi - lo
        return full

    def memory(self) -> dict[str, int]:
        """Per-rank bytes of the model state an HVP holds (module docstring's model).

        ``state_bytes`` = 6 · local_d · itemsize (parameter shard, saved point, v,
        gradient shard, D(h)v, D(2h)v); ``peak_bytes`` is the measured CUDA peak on a
        GPU, else equal to ``state_bytes``.
        """
        item = torch.empty((), dtype=self.dtype).element_size()
        state = 6 * self.local_d * item
        peak = state
        if self.device.type == "cuda":
            peak = int(torch.cuda.max_memory_allocated(self.device))
        return {"local_d": self.local_d, "state_bytes": state, "peak_bytes": peak}

    def __repr__(self) -> str:
        return (
            f"ShardedOperator(d={self.d}, local_d={self.local_d}, dtype={self.dtype}, "
            f"device={self.device}, hvp: fd (central differences, Richardson error), "
            f"{self.description})"
        )
