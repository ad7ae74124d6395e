"""The Hessian operator: the one place in hessnorm that calls autograd for HVPs.

A :class:`HessianOperator` fixes a loss, an evaluation set and a point, and exposes
the Hessian of the **mean loss over every example of the set** as a linear map on
flat parameter vectors. Estimators only ever call :meth:`HessianOperator.hvp`.

Three HVP strategies are implemented; all compute the same numbers up to rounding:

``"fwd"``    forward-over-reverse, ``jvp(grad(f))`` under ``vmap`` over the k vectors,
             chunked to a memory budget. Best for many probes at once.
``"rev"``    reverse-over-reverse (double backward, ``is_grads_batched``). Works for
             ops without forward-mode AD rules.
``"graph"``  the gradient graph is built once per batch with ``create_graph=True``
             and kept alive, so each further HVP is a single backward pass (the
             PyHessian trick). Best for one vector at a time on a small set
             (Lanczos). Costs the memory of those graphs.
``"fd"``     central differences of two gradients (no second derivative at all),
             with a Richardson error estimate per HVP kept in ``op.hvp_error``
             (:mod:`hessnorm.fd`); four gradients per HVP. Explicit only.

``mode="auto"`` uses ``"graph"`` for single vectors when the evaluation set has at
most ``max_cached_batches`` batches, ``"fwd"`` for blocks of vectors, and falls back
to ``"rev"`` when the model has no forward-mode support. The rule is fixed (never
timing based), so the same call always takes the same path and gives the same bits.
"""

from __future__ import annotations

import contextlib
import copy
import math
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from hessnorm.distributed import example_count
from hessnorm.errors import (
    EmptyDataError,
    NonFiniteError,
    SelectionError,
    ShapeError,
    StochasticModelError,
)

__all__ = [
    "HessianLike",
    "all_finite",
    "LossOperator",
    "HessianOperator",
    "RotatedOperator",
    "DenseOperator",
    "as_operator",
]


@runtime_checkable
class HessianLike(Protocol):
    """The operator contract the norm estimators rely on (and nothing more).

    ``d``, ``dtype``, ``device``: the flat space R^d the Hessian acts on.
    ``matvec_count``: HVPs performed so far (estimators report differences of it).
    ``hvp(v)``: H v for v of shape (d,) or (k, d), in ``dtype`` on ``device``.

    Any object with these members works with :func:`hessnorm.spectral_norm`,
    :func:`hessnorm.l11_norm` and :func:`hessnorm.blockwise_smoothness`.

    Example:
        >>> import torch
        >>> isinstance(DenseOperator(torch.eye(2)), HessianLike)
        True
        >>> isinstance(torch.eye(2), HessianLike)
        False
    """

    d: int
    dtype: torch.dtype
    device: torch.device
    matvec_count: int

    def hvp(self, v: Tensor) -> Tensor: ...


@runtime_checkable
class LossOperator(HessianLike, Protocol):
    """A :class:`HessianLike` that also knows its loss: what local smoothness and ``exact`` use.

    ``point``: the flat point (d,) the Hessian is taken at.
    ``loss(x=None)``, ``gradient(x=None)``: the mean loss and its gradient at x
    (default: ``point``). ``at(x)``: the same loss at another point.
    ``dense(chunk_size=256)``: the dense (d, d) Hessian (small d; ground truth).

    :class:`HessianOperator`, :class:`RotatedOperator` and :class:`DenseOperator`
    implement it. Only :class:`HessianOperator` has named parameters
    (``param_names``, ``param_shapes``, ``param_slices``); the other two act on one
    unnamed flat vector.

    Example:
        >>> import torch
        >>> isinstance(DenseOperator(torch.eye(2)), LossOperator)
        True
    """

    point: Tensor

    def loss(self, x: Tensor | None = None) -> float: ...

    def gradient(self, x: Tensor | None = None) -> Tensor: ...

    def at(self, x: Tensor) -> LossOperator: ...

    def dense(self, chunk_size: int = 256) -> Tensor: ...


_MODES = ("auto", "fwd", "rev", "graph", "fd")
_OOM = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)
_BN_MODES = ("batch", "frozen")


def all_finite(t: Tensor) -> bool:
    """Whether every entry of ``t`` is finite, at the cost of one sum.

    A NaN or ±Inf anywhere makes the sum non-finite; only then (or when finite
    entries overflow the sum) is the exact element-wise test run. About 25× cheaper
    than ``torch.isfinite(t).all()`` on the CPU, which matters on every HVP at 10⁸
    parameters.

    Example:
        >>> all_finite(torch.tensor([1.0, 2.0])), all_finite(torch.tensor([1.0, float("nan")]))
        (True, False)
        >>> all_finite(torch.tensor([3e38, 3e38]))  # the sum overflows, the entries do not
        True
    """
    if math.isfinite(float(t.sum())):
        return True
    return bool(torch.isfinite(t).all())


def math_attention():
    """Route scaled-dot-product attention to the math kernel.

    The fused kernels (flash, memory-efficient, cuDNN) define neither forward-mode
    AD nor double backward; the math kernel is plain differentiable ops.

    Example:
        >>> import torch.nn.functional as F
        >>> g = torch.Generator().manual_seed(0)
        >>> q = torch.randn(1, 2, 3, 4, dtype=torch.float64, generator=g)
        >>> with math_attention():
        ...     out = F.scaled_dot_product_attention(q, q, q)
        >>> ref = torch.softmax(q @ q.transpose(-1, -2) / 2.0, dim=-1) @ q  # scale 1/√4
        >>> torch.allclose(out, ref)
        True
    """
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel
    except ImportError:  # torch < 2.3
        return contextlib.nullcontext()
    return sdpa_kernel(SDPBackend.MATH)


_HALF = (torch.float16, torch.bfloat16)
# Share of the currently available memory one chunk of vmapped HVPs may take.
_CPU_BUDGET_FRACTION = 0.5
_CUDA_BUDGET_FRACTION = 0.5
_CPU_BUDGET_FALLBACK = 2 << 30  # when /proc/meminfo cannot be read
# Forward-over-reverse keeps, per vector, tangents of the saved activations, of the
# backward pass's intermediates (for an LM: logits, log-softmax, its gradient and their
# tangents, about 5 logits-sized buffers) and a few d-sized buffers. Measured on GPT
# language models (vocab 256-50304, d 1e5-1e8) the marginal memory per vector was
# 4.3-6.5x the activations plus < 1 d-vector; 7x and 4 d-vectors keep the estimate
# above every measurement (tests/test_scale.py checks it).
_ACT_PER_VECTOR = 7
_D_PER_VECTOR = 4
# The gradient graph kept by "graph" mode: the forward's saved tensors, the backward's
# (about as many again) and the gradient itself, per cached batch.
_ACT_PER_GRAPH = 3


def available_memory(device: torch.device) -> int:
    """Bytes free for new tensors now: ``MemAvailable`` (CPU) or ``mem_get_info`` (CUDA).

    -1 when the CPU figure cannot be read (no ``/proc/meminfo``).

    Example:
        >>> m = available_memory(torch.device("cpu"))
        >>> isinstance(m, int) and (m > 0 or m == -1)
        True
    """
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return -1


def _default_budget(device: torch.device) -> int:
    """Default memory budget of one chunk: half the memory available on ``device`` now."""
    avail = available_memory(device)
    if avail < 0:
        return _CPU_BUDGET_FALLBACK
    frac = _CUDA_BUDGET_FRACTION if device.type == "cuda" else _CPU_BUDGET_FRACTION
    return int(avail * frac)


def _analysis_dtype(stored: torch.dtype, requested: torch.dtype | None) -> torch.dtype:
    """float32 for half-precision models unless a dtype is requested (then warn if half).

    HVPs are differences of gradients; in bf16 (8 bits of mantissa) or fp16 their
    relative rounding error is ~1e-2 or worse, so half-precision weights are upcast.
    """
    if requested is None:
        return torch.float32 if stored in _HALF else stored
    if requested in _HALF:
        warnings.warn(
            f"analysing the Hessian in {requested}: HVPs then carry relative rounding "
            "errors of ~1e-2 or worse (8-11 bits of mantissa), enough to bias norm "
            "estimates; leave dtype=None (float32 for half-precision models) unless "
            "memory forces it",
            UserWarning,
            stacklevel=3,
        )
    return requested


def _process_group(group: Any) -> Any:
    """The group a new operator reduces over: ``group``, else the default one if initialised."""
    if group is not None:
        return group
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.group.WORLD
    return None


def _fmt_bytes(n: int) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


def _to_device(obj: Any, device: torch.device, dtype: torch.dtype | None) -> Any:
    if isinstance(obj, Tensor):
        if dtype is not None and obj.is_floating_point():
            return obj.to(device=device, dtype=dtype)
        return obj.to(device=device)
    if isinstance(obj, (tuple, list)):
        return type(obj)(_to_device(o, device, dtype) for o in obj)
    if isinstance(obj, Mapping):
        return {k: _to_device(v, device, dtype) for k, v in obj.items()}
    return obj


def _normalize_batches(data: Any) -> list[tuple[Any, Any]]:
    """Accept one ``(inputs, targets)`` batch or a re-iterable of them."""
    if isinstance(data, (tuple, list)) and len(data) == 2 and isinstance(data[0], Tensor):
        if isinstance(data[1], Tensor) and data[0].shape[:1] == data[1].shape[:1]:
            return [(data[0], data[1])]
    if isinstance(data, Tensor):
        raise ShapeError(
            "data must be (inputs, targets) or an iterable of such batches, not a tensor"
        )
    try:
        batches = list(data)
    except TypeError as exc:
        raise ShapeError(
            "data must be one (inputs, targets) batch or a re-iterable of such batches"
        ) from exc
    out = []
    for i, b in enumerate(batches):
        if not (isinstance(b, (tuple, list)) and len(b) == 2):
            raise ShapeError(f"batch {i} is not an (inputs, targets) pair (got {type(b).__name__})")
        out.append((b[0], b[1]))
    return out


def _select_params(model: nn.Module, params: Any) -> list[str]:
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    names = [n for n, _ in named]
    if params is None:
        chosen = names
    elif callable(params):
        chosen = [n for n in names if params(n)]
    else:
        wanted = [params] if isinstance(params, str) else list(params)
        unknown = [w for w in wanted if w not in names]
        if unknown:
            raise SelectionError(
                f"unknown or frozen parameter names {unknown}; trainable parameters are: "
                f"{names[:20]}{' ...' if len(names) > 20 else ''}"
            )
        keep = set(wanted)
        chosen = [n for n in names if n in keep]
    if not chosen:
        raise SelectionError(
            "the parameter selection is empty: no trainable parameter matched `params`. "
            "Pass None for all parameters, a list of names, or a predicate on names "
            f"(trainable names start with {names[:5]})"
        )
    return chosen


class _Base:
    """Shared conveniences for everything with ``d``, ``dtype``, ``device`` and ``hvp``."""

    d: int
    dtype: torch.dtype
    device: torch.device
    matvec_count: int

    def _check_vector(self, v: Tensor) -> tuple[Tensor, bool]:
        if not isinstance(v, Tensor):
            raise ShapeError(f"v must be a torch.Tensor, got {type(v).__name__}")
        if v.dim() not in (1, 2) or v.shape[-1] != self.d:
            raise ShapeError(
                f"v has shape {tuple(v.shape)}; the operator acts on vectors of shape "
                f"({self.d},) or (k, {self.d})"
            )
        if v.dtype != self.dtype:
            raise ShapeError(
                f"v has dtype {v.dtype} but the operator works in {self.dtype}; "
                f"convert with v.to({self.dtype})"
            )
        if v.device != self.device:
            raise ShapeError(
                f"v is on {v.device} but the operator is on {self.device}; move it with "
                f"v.to('{self.device}')"
            )
        return (v.unsqueeze(0), True) if v.dim() == 1 else (v, False)

    def matvec(self, v: Tensor) -> Tensor:
        """Alias of ``hvp`` so the operator also reads as a plain linear map."""
        return self.hvp(v)

    def __matmul__(self, v: Tensor) -> Tensor:
        return self.hvp(v)

    def to_scipy(self):
        """A :class:`scipy.sparse.linalg.LinearOperator` view, float64 in and out."""
        import numpy as np
        from scipy.sparse.linalg import LinearOperator

        def mv(x):
            x = np.asarray(x, dtype=np.float64)
            single = x.ndim == 1
            t = torch.as_tensor(
                x.reshape(self.d, -1).T.copy(), dtype=self.dtype, device=self.device
            )
            y = self.hvp(t).detach().to("cpu", torch.float64).numpy().T
            return y.reshape(-1) if single else y

        return LinearOperator((self.d, self.d), matvec=mv, matmat=mv, rmatvec=mv, dtype=np.float64)

    def rotated(self, rotation) -> RotatedOperator:
        """The Hessian of the rotated loss L(R x~): v -> R^T H R v (paper 000, Sec. 4)."""
        return RotatedOperator(self, rotation)

    def dense(self, chunk_size: int = 256) -> Tensor:
        """The dense (d, d) matrix, column block by column block through ``hvp``.

        Cost: d HVPs (counted) and d² entries of memory; small d only.
        """
        eye = torch.eye(self.d, dtype=self.dtype, device=self.device)
        return torch.cat([self.hvp(eye[i : i + chunk_size]) for i in range(0, self.d, chunk_size)])


class HessianOperator(_Base):
    """Hessian of a mean loss as a linear operator on flat parameter vectors.

    Build it with :meth:`from_module` (a model, a loss and data) or
    :meth:`from_function` (a scalar function of a flat vector). See the module
    docstring for the HVP strategies.

    Example:
        >>> import torch
        >>> A = torch.tensor([[2.0, 1.0], [1.0, 3.0]], dtype=torch.float64)
        >>> op = HessianOperator.from_function(lambda x: 0.5 * x @ A @ x, torch.zeros(2, dtype=torch.float64))
        >>> op.hvp(torch.tensor([1.0, 0.0], dtype=torch.float64))
        tensor([2., 1.], dtype=torch.float64)
    """

    def __init__(
        self,
        batch_loss: Callable[[Tensor, Any], Tensor],
        batches: Sequence[Any],
        weights: Sequence[float],
        point: Tensor,
        names: Sequence[str],
        shapes: Mapping[str, torch.Size],
        *,
        mode: str = "auto",
        chunk_size: int | None = None,
        memory_budget: int | None = None,
        max_cached_batches: int = 8,
        description: str = "",
        _fwd_ok: bool | None = None,
        _dist: Any = None,
    ) -> None:
        if mode not in _MODES:
            raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")
        if chunk_size is not None and chunk_size < 1:
            raise ValueError(f"chunk_size must be a positive integer or None, got {chunk_size}")
        self._batch_loss = batch_loss
        self._batches = list(batches)
        self._weights = [float(w) for w in weights]
        self.point = point.detach()
        self.d = int(point.numel())
        self.dtype = point.dtype
        self.device = point.device
        self.param_names = list(names)
        self.param_shapes = dict(shapes)
        self.param_slices: dict[str, slice] = {}
        start = 0
        for n in self.param_names:
            size = math.prod(self.param_shapes[n])
            self.param_slices[n] = slice(start, start + size)
            start += size
        if start != self.d:
            raise ShapeError(
                f"parameter shapes add up to {start} entries but the point has {self.d}"
            )
        self.mode = mode
        self.chunk_size = chunk_size
        self.memory_budget = memory_budget
        self.max_cached_batches = max_cached_batches
        self.description = description
        self.matvec_count = 0
        self._fwd_ok = _fwd_ok
        self._dist = _dist  # hessnorm.distributed.DataParallel, or None
        self._graphs: list[tuple[Tensor, Tensor]] | None = None
        self._auto_chunk: int | None = None
        # mode="fd": finite-difference HVPs and their measured errors (hessnorm.fd)
        self.hvp_error = None
        if mode == "fd":
            from hessnorm.fd import HVPErrorLog

            self.hvp_error = HVPErrorLog()

    # ------------------------------------------------------------------ builders
    @classmethod
    def from_module(
        cls,
        model: nn.Module,
        loss_fn: Callable[[Any, Any], Tensor],
        data: Any,
        *,
        params: None | str | Iterable[str] | Callable[[str], bool] = None,
        dtype: torch.dtype | None = None,
        device: str | torch.device | None = None,
        chunk_size: int | None = None,
        batchnorm: str = "batch",
        mode: str = "auto",
        memory_budget: int | None = None,
        max_cached_batches: int = 8,
        process_group: Any = None,
    ) -> HessianOperator:
        """Hessian of the mean of ``loss_fn(model(inputs), targets)`` over ``data``.

        Args:
            model: any ``nn.Module``. It is copied; the original is never modified.
            loss_fn: returns the **mean** loss of a batch (as ``F.cross_entropy`` does).
            data: one ``(inputs, targets)`` batch or a re-iterable of batches.
                Batches are weighted by their number of examples, so the operator is
                the Hessian of the mean over all examples however the set is split.
            params: which trainable parameters span the flat vector: None (all), a
                name, a list of names, or a predicate on names.
            dtype: compute dtype. Default: the model's, except that a model stored in
                bfloat16 or float16 is analysed in float32 (``repr(op)`` says so).
                A half dtype may be asked for explicitly, with a warning: its HVPs
                carry ~1e-2 relative rounding error. Float inputs follow it.
            device: compute device (default: the model's).
            chunk_size: vectors per vmapped HVP call (default: from ``memory_budget``).
            batchnorm: ``"batch"`` normalises with the statistics of each batch (as
                when training with ``track_running_stats=False``, paper 000's
                setting); ``"frozen"`` uses the running statistics.
            mode: HVP strategy, see the module docstring; ``"fd"`` for
                finite differences of gradients (models without double backward),
                whose errors the estimators add to their intervals.
            memory_budget: bytes a chunk of vmapped HVPs, or the cached graphs of
                ``"graph"`` mode, may use (default: half of what is available when the
                first HVP runs: ``MemAvailable`` of /proc/meminfo on the CPU,
                ``torch.cuda.mem_get_info`` on CUDA).
            max_cached_batches: ``"graph"`` mode keeps at most this many batch graphs,
                and only while they fit in ``memory_budget``; otherwise single
                vectors take the ``"fwd"`` path.
            process_group: a ``torch.distributed`` group over which ``data`` is
                sharded. Default: the default group when ``torch.distributed`` is
                initialised, otherwise none. With a group, ``data`` is this rank's
                shard and ``loss()``, ``gradient()``, ``hvp()`` and ``dense()`` are
                those of the mean over the examples of ALL ranks (batch terms weighted
                by ``n_b / N``, ``N`` all-reduced once here; partial sums all-reduced),
                identical on every rank; every rank must make the same calls. See
                :mod:`hessnorm.distributed`: each rank holds the whole model.
                A model whose parameters are FSDP2-sharded (DTensor) gives a
                :class:`hessnorm.sharded.ShardedOperator` instead: local-shard
                vectors, finite-difference HVPs, the model used in place.

        Raises:
            EmptyDataError, SelectionError, StochasticModelError, ShapeError.
            DistributedError: the ranks hold different models, or another rank failed.
            With a process group an empty shard on any rank raises EmptyDataError on
            every rank.
        """
        from hessnorm.sharded import ShardedOperator, is_sharded_module

        if is_sharded_module(model):  # FSDP2 (DTensor) parameters: hessnorm.sharded
            return ShardedOperator.from_module(  # type: ignore[return-value]
                model,
                loss_fn,
                _normalize_batches(data),
                params=params,
                dtype=dtype,
                device=device,
                mode=mode,
                process_group=process_group,
            )
        group = _process_group(process_group)
        if group is None:
            parts = cls._local_parts(
                model, loss_fn, data, params, dtype, device, batchnorm, allow_empty=False
            )
            total, dp = float(sum(parts["counts"])), None
        else:
            from hessnorm.distributed import DataParallel

            dp = DataParallel(group)
            error, parts = None, None
            try:
                parts = cls._local_parts(
                    model, loss_fn, data, params, dtype, device, batchnorm, allow_empty=True
                )
            except Exception as exc:  # noqa: BLE001 - raised on every rank by check()
                error = exc
            dp.check("building the Hessian operator", error)
            dp.setup(sum(parts["counts"]), parts["checked"], int(parts["point"].numel()))
            total = float(dp.total)
        weights = [w / total for w in parts["counts"]]
        desc = parts["desc"].format(
            examples=f"{int(total)} examples"
            if dp is None
            else f"{int(total)} examples over {dp.world} ranks "
            f"(rank {dp.rank}: {dp.counts[dp.rank]})",
        )
        return cls(
            parts["batch_loss"],
            parts["batches"],
            weights,
            parts["point"],
            parts["names"],
            parts["shapes"],
            mode=mode,
            chunk_size=chunk_size,
            memory_budget=memory_budget,
            max_cached_batches=max_cached_batches,
            description=desc,
            _dist=dp,
        )

    @staticmethod
    def _local_parts(model, loss_fn, data, params, dtype, device, batchnorm, allow_empty):
        """This process's part of :meth:`from_module`: model copy, point, batches, counts."""
        if batchnorm not in _BN_MODES:
            raise ValueError(f"batchnorm must be one of {_BN_MODES}, got {batchnorm!r}")
        for mname, m in model.named_modules():
            if isinstance(m, nn.modules.dropout._DropoutNd) and m.training and m.p > 0:
                raise StochasticModelError(
                    f"the model is in train mode with active dropout ({mname or 'root'}: "
                    f"{type(m).__name__}(p={m.p})): the loss is then a random function and "
                    "has no Hessian. Call model.eval() first (hessnorm evaluates without "
                    "dropout) or set the dropout probability to 0."
                )
        names = _select_params(model, params)
        ref = dict(model.named_parameters())[names[0]]
        device = torch.device(device) if device is not None else ref.device
        if dtype is not None and not dtype.is_floating_point:
            raise ShapeError(f"dtype must be a floating dtype, got {dtype}")
        stored_dtype = ref.dtype
        dtype = _analysis_dtype(stored_dtype, dtype)

        net = copy.deepcopy(model).to(device=device, dtype=dtype)
        net.eval()
        bn_types = (nn.modules.batchnorm._BatchNorm,)
        for mname, m in net.named_modules():
            if isinstance(m, bn_types):
                if batchnorm == "batch":
                    # eval mode with no running buffers makes BatchNorm use the batch's
                    # own statistics and update nothing: deterministic and vmap-safe.
                    m.track_running_stats = False
                    m.running_mean = None
                    m.running_var = None
                    m.num_batches_tracked = None
                elif m.running_mean is None:
                    raise SelectionError(
                        f"batchnorm='frozen' needs running statistics, but {mname} was built "
                        "with track_running_stats=False; use batchnorm='batch'"
                    )
        all_params = dict(net.named_parameters())
        shapes = {n: all_params[n].shape for n in names}
        fixed = {n: p.detach() for n, p in net.named_parameters() if n not in set(names)}
        fixed.update({n: b.detach() for n, b in net.named_buffers()})
        point = torch.cat([all_params[n].detach().reshape(-1) for n in names])
        for p in net.parameters():
            p.requires_grad_(False)

        batches = _normalize_batches(data)
        if not batches and not allow_empty:
            raise EmptyDataError("data holds no batch: give at least one (inputs, targets) batch")
        moved, weights = [], []
        for inputs, targets in batches:
            n = example_count((inputs, targets))
            if n == 0:
                continue
            moved.append((_to_device(inputs, device, dtype), _to_device(targets, device, dtype)))
            weights.append(n)
        if not moved and not allow_empty:
            raise EmptyDataError("every batch in data is empty: the mean loss is undefined")
        splits = [math.prod(shapes[n]) for n in names]

        def batch_loss(x: Tensor, batch: Any) -> Tensor:
            inputs, targets = batch
            views = {n: t.view(shapes[n]) for n, t in zip(names, torch.split(x, splits))}
            args = inputs if isinstance(inputs, tuple) else (inputs,)
            with math_attention():
                out = torch.func.functional_call(net, (views, fixed), args, tie_weights=True)
            return loss_fn(out, targets)

        desc = (
            f"{type(model).__name__} on {{examples}} in {len(moved)} batches, batchnorm={batchnorm}"
        )
        if dtype != stored_dtype:
            desc += f", model stored in {stored_dtype} analysed in {dtype}"
        return {
            "batch_loss": batch_loss,
            "batches": moved,
            "counts": weights,
            "point": point,
            "names": names,
            "shapes": shapes,
            "desc": desc,
            # what the ranks of a process group must agree on
            "checked": [point, *(fixed[k] for k in sorted(fixed))],
        }

    @classmethod
    def from_function(
        cls,
        fn: Callable[[Tensor], Tensor],
        x0: Tensor,
        *,
        mode: str = "auto",
        chunk_size: int | None = None,
        name: str = "x",
    ) -> HessianOperator:
        """Hessian of a scalar function ``fn`` of a flat vector, at ``x0``.

        Example:
            >>> import torch
            >>> op = HessianOperator.from_function(lambda x: (x**4).sum(), torch.ones(3))
            >>> op.hvp(torch.ones(3)).tolist()
            [12.0, 12.0, 12.0]
        """
        if not isinstance(x0, Tensor) or x0.dim() != 1 or not x0.is_floating_point():
            raise ShapeError("x0 must be a 1-D floating tensor")

        def batch_loss(x: Tensor, batch: Any) -> Tensor:
            return fn(x)

        return cls(
            batch_loss,
            [None],
            [1.0],
            x0.detach(),
            [name],
            {name: x0.shape},
            mode=mode,
            chunk_size=chunk_size,
            description=f"function {getattr(fn, '__name__', 'fn')}",
        )

    def at(self, x: Tensor) -> HessianOperator:
        """The same loss and data, at another point ``x`` (flat, shape (d,))."""
        (x,), _ = self._check_vector(x)
        return HessianOperator(
            self._batch_loss,
            self._batches,
            self._weights,
            x.detach().clone(),
            self.param_names,
            self.param_shapes,
            mode=self.mode,
            chunk_size=self.chunk_size,
            memory_budget=self.memory_budget,
            max_cached_batches=self.max_cached_batches,
            description=self.description,
            _fwd_ok=self._fwd_ok,
            _dist=self._dist,
        )

    # ------------------------------------------------------------------ flat views
    def flatten(self, tensors: Mapping[str, Tensor]) -> Tensor:
        """Concatenate a name -> tensor mapping into a flat vector in operator order."""
        missing = [n for n in self.param_names if n not in tensors]
        if missing:
            raise ShapeError(f"flatten: missing tensors for {missing}")
        parts = []
        for n in self.param_names:
            t = tensors[n]
            if tuple(t.shape) != tuple(self.param_shapes[n]):
                raise ShapeError(
                    f"flatten: {n} has shape {tuple(t.shape)}, expected {tuple(self.param_shapes[n])}"
                )
            parts.append(t.reshape(-1).to(self.device, self.dtype))
        return torch.cat(parts)

    def unflatten(self, vec: Tensor) -> dict[str, Tensor]:
        """Split a flat vector (d,) into a name -> tensor dict (views of ``vec``)."""
        if vec.dim() != 1 or vec.numel() != self.d:
            raise ShapeError(
                f"unflatten expects a vector of shape ({self.d},), got {tuple(vec.shape)}"
            )
        return {n: vec[s].view(self.param_shapes[n]) for n, s in self.param_slices.items()}

    # ------------------------------------------------------------------ values
    def _resolve_point(self, x: Tensor | None) -> Tensor:
        if x is None:
            return self.point
        (x,), _ = self._check_vector(x)
        return x

    def loss(self, x: Tensor | None = None) -> float:
        """Mean loss over the evaluation set at ``x`` (default: the operator's point)."""
        if self._dist is not None:
            return float(self._dist.reduce("the loss", lambda: self._loss_tensor(x))[0])
        return self._local_loss(x)

    def _local_loss(self, x: Tensor | None) -> float:
        x = self._resolve_point(x)
        total = 0.0
        with torch.no_grad():
            for i, (w, b) in enumerate(zip(self._weights, self._batches)):
                val = self._batch_loss(x, b)
                if not torch.isfinite(val):
                    self._raise_nonfinite("loss", val, x, batch=i)
                total += w * float(val)
        return total

    def _loss_tensor(self, x: Tensor | None) -> Tensor:
        return torch.tensor([self._local_loss(x)], dtype=torch.float64, device=self.device)

    def gradient(self, x: Tensor | None = None) -> Tensor:
        """Gradient of the mean loss at ``x`` (default: the operator's point), shape (d,)."""
        if self._dist is not None:
            return self._dist.reduce("the gradient", lambda: self._local_gradient(x))
        return self._local_gradient(x)

    def _local_gradient(self, x: Tensor | None) -> Tensor:
        x = self._resolve_point(x)
        g = torch.zeros_like(x)
        grad_fn = torch.func.grad(self._batch_loss)
        for i, (w, b) in enumerate(zip(self._weights, self._batches)):
            gb = grad_fn(x, b)
            if not all_finite(gb):
                self._raise_nonfinite("gradient", gb, x, batch=i)
            g.add_(gb, alpha=w)
        return g

    def dense(self, chunk_size: int = 256) -> Tensor:
        """The dense (d, d) Hessian by reverse-over-reverse differentiation.

        ``jacrev`` of the gradient, batch by batch and weighted like every other
        method: a code path independent of the forward-over-reverse and graph HVPs
        the estimators use, so comparing the two is a real check (this is the
        ground truth of :mod:`hessnorm.estimators.exact`). Not counted in
        ``matvec_count`` (it performs no HVP).

        Cost: about d gradient-sized backward passes per batch and d² entries of
        memory; small d only (the estimators exist for the rest).

        Example:
            >>> import torch
            >>> A = torch.tensor([[2.0, 1.0], [1.0, 3.0]], dtype=torch.float64)
            >>> op = HessianOperator.from_function(lambda x: 0.5 * x @ A @ x, torch.zeros(2, dtype=torch.float64))
            >>> torch.equal(op.dense(), A)
            True
        """
        if self._dist is not None:
            return self._dist.reduce("the dense Hessian", lambda: self._local_dense(chunk_size))
        return self._local_dense(chunk_size)

    def _local_dense(self, chunk_size: int) -> Tensor:
        x0 = self.point.detach()
        H = torch.zeros(self.d, self.d, dtype=self.dtype, device=self.device)
        for w, b in zip(self._weights, self._batches):
            grad_fn = torch.func.grad(lambda x, b=b: self._batch_loss(x, b))
            H.add_(torch.func.jacrev(grad_fn, chunk_size=chunk_size)(x0), alpha=w)
        return H

    # ------------------------------------------------------------------ HVPs
    def hvp(self, v: Tensor) -> Tensor:
        """Hessian-vector product(s) ``H v`` for ``v`` of shape (d,) or (k, d).

        Cost: k HVPs (counted in ``matvec_count``), each about two gradient passes.
        """
        if self.mode == "fd":
            return self._hvp_fd(v)
        if self._dist is not None:
            # the shape check runs inside the reduction: a bad v on one rank stops all
            out = self._dist.reduce("a Hessian-vector product", lambda: self._local_hvp(v))
            single = v.dim() == 1
        else:
            out = self._local_hvp(v)
            single = v.dim() == 1
        self.matvec_count += out.shape[0]
        if not all_finite(out):
            self._raise_nonfinite("Hessian-vector product", out, self.point)
        return out[0] if single else out

    def _local_hvp(self, v: Tensor) -> Tensor:
        """H_shard V of shape (k, d): this process's batches, weighted by n_b / N."""
        V, _ = self._check_vector(v)
        mode = self._mode_for(V.shape[0])
        if mode == "graph":
            return self._hvp_graph(V)
        chunk = self._chunk(V.shape[0])
        pieces = [self._hvp_block(V[i : i + chunk], mode) for i in range(0, V.shape[0], chunk)]
        return torch.cat(pieces) if len(pieces) > 1 else pieces[0]

    def _hvp_fd(self, v: Tensor) -> Tensor:
        """``mode="fd"``: central differences of gradients, error logged (:mod:`hessnorm.fd`).

        Both step sizes are reduced together under a process group, so the logged
        error is that of the all-reduced product.
        """
        from hessnorm.fd import central_difference_pair, fd_step

        def pair() -> Tensor:
            V, _ = self._check_vector(v)
            theta = float(self.point.double().norm())
            rows = []
            for u in V:
                h = fd_step(self.dtype, theta, float(u.double().norm()))
                rows.append(
                    torch.stack(central_difference_pair(self._local_gradient, self.point, u, h))
                )
            return torch.stack(rows)  # (k, 2, d)

        both = self._dist.reduce("a Hessian-vector product", pair) if self._dist else pair()
        V, single = self._check_vector(v)
        out = both[:, 0]
        self.matvec_count += out.shape[0]
        if not all_finite(out):
            self._raise_nonfinite("Hessian-vector product", out, self.point)
        self.hvp_error.add(V, out, both[:, 1])
        return out[0] if single else out.contiguous()

    @property
    def strategy(self) -> str:
        """The HVP paths this operator takes: (single vector, block of vectors)."""
        return f"single={self._mode_for(1)}, batched={self._mode_for(2)}"

    def _forward_mode_works(self) -> bool:
        """False once forward-mode AD has failed on this model; unknown counts as True.

        There is no separate probe HVP: the first block of vectors in ``"auto"`` mode
        tries forward mode and falls back to reverse mode on failure (see
        :meth:`_hvp_block`), so every HVP performed is one the caller asked for.
        """
        return self._fwd_ok is not False

    def _mode_for(self, k: int) -> str:
        if self.mode != "auto":
            return self.mode
        if k == 1 and len(self._batches) <= self.max_cached_batches and self._graph_fits():
            return "graph"
        return "fwd" if self._forward_mode_works() else "rev"

    def _chunk(self, k: int) -> int:
        if self.chunk_size is not None:
            return min(k, self.chunk_size)
        if self._auto_chunk is None:
            self._auto_chunk = self._estimate_chunk()
        return max(1, min(k, self._auto_chunk))

    def _memory_profile(self) -> tuple[int, int]:
        """(activation bytes of the largest batch, memory budget in bytes), measured once."""
        prof = getattr(self, "_mem_profile", None)
        if prof is None:
            budget = self.memory_budget
            if budget is None:
                budget = _default_budget(self.device)
            prof = (self._activation_bytes(), int(budget))
            self._mem_profile = prof
        return prof

    def _activation_bytes(self) -> int:
        """Bytes of the tensors the forward pass saves for backward, on the largest batch.

        Measured with saved-tensor hooks, counting each storage once and leaving out
        the parameters (views of the point: their tangents are views of the probe
        vector and cost nothing).
        """
        x = self.point.detach().requires_grad_(True)
        own = x.untyped_storage().data_ptr()
        seen: dict[int, int] = {}

        def pack(t):
            try:
                st = t.untyped_storage()
                ptr, size = st.data_ptr(), st.nbytes()
            except (RuntimeError, NotImplementedError):  # sparse / storage-less tensors
                ptr, size = id(t), t.numel() * t.element_size()
            if ptr != own:
                seen[ptr] = max(seen.get(ptr, 0), size)
            return t

        idx = max(range(len(self._batches)), key=lambda i: self._weights[i])
        with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            self._batch_loss(x, self._batches[idx])
        return sum(seen.values())

    def _chunk_cost(self) -> tuple[int, int]:
        """(fixed bytes, bytes per vector) of one vmapped forward-over-reverse call."""
        act, _ = self._memory_profile()
        dbytes = self.d * self.point.element_size()
        fixed = 2 * act + 3 * dbytes  # the primal forward/backward and gradient, shared
        return fixed, _ACT_PER_VECTOR * act + _D_PER_VECTOR * dbytes

    def _estimate_chunk(self) -> int:
        """Vectors per vmapped call so that one chunk stays inside the memory budget.

        Per vector, forward-over-reverse keeps tangents of every saved activation and
        of the backward's intermediates (measured once with saved-tensor hooks on the
        largest batch; at LM vocabulary sizes the k x T x V logits tangents dominate)
        plus a few d-sized buffers; the primal pass is paid once per chunk.
        """
        _, budget = self._memory_profile()
        fixed, per_vector = self._chunk_cost()
        return int(max(1, min(1024, (budget - fixed) // max(per_vector, 1))))

    def _graph_bytes(self) -> int:
        """Memory held by the cached gradient graphs of ``"graph"`` mode (an estimate)."""
        act, _ = self._memory_profile()
        dbytes = self.d * self.point.element_size()
        n = min(len(self._batches), self.max_cached_batches)
        return n * (_ACT_PER_GRAPH * act + 2 * dbytes)

    def _graph_fits(self) -> bool:
        return self._graph_bytes() <= self._memory_profile()[1]

    def _hvp_block(self, V: Tensor, mode: str) -> Tensor:
        if mode == "fwd" and self.mode == "auto" and self._fwd_ok is None:
            # the first block tries forward mode; ops without forward-mode rules raise
            try:
                out = self._hvp_block_fwd(V, self._batches, self._weights)
            except _OOM:
                raise
            except (RuntimeError, NotImplementedError):
                self._fwd_ok = False
                return self._hvp_block_rev(V)
            self._fwd_ok = True
            return out
        if mode == "fwd" and (self.mode == "fwd" or self._fwd_ok):
            return self._hvp_block_fwd(V, self._batches, self._weights)
        return self._hvp_block_rev(V)

    def _hvp_block_fwd(self, V: Tensor, batches, weights) -> Tensor:
        x = self.point
        grad_fn = torch.func.grad(self._batch_loss)
        out = torch.zeros_like(V)
        for w, b in zip(weights, batches):

            def one(v, b=b):
                return torch.func.jvp(lambda p: grad_fn(p, b), (x,), (v,))[1]

            with warnings.catch_warnings():
                # torch's first forward-AD call scripts its decompositions and warns
                # that torch.jit.script is deprecated: torch's business, not the user's
                warnings.filterwarnings(
                    "ignore", message=".*torch.jit.script", category=FutureWarning
                )
                out.add_(torch.func.vmap(one)(V), alpha=w)
        return out

    def _hvp_block_rev(self, V: Tensor) -> Tensor:
        out = torch.zeros_like(V)
        for w, b in zip(self._weights, self._batches):
            x = self.point.detach().requires_grad_(True)
            with torch.enable_grad():
                (g,) = torch.autograd.grad(self._batch_loss(x, b), x, create_graph=True)
                if V.shape[0] == 1:
                    (hv,) = torch.autograd.grad(g, x, V[0])
                    hv = hv.unsqueeze(0)
                else:
                    (hv,) = torch.autograd.grad(g, x, V, is_grads_batched=True)
            out.add_(hv.detach(), alpha=w)
        return out

    def _gradient_graph(self, b: Any) -> tuple[Tensor, Tensor]:
        x = self.point.detach().requires_grad_(True)
        with torch.enable_grad():
            (g,) = torch.autograd.grad(self._batch_loss(x, b), x, create_graph=True)
        return x, g

    def _hvp_graph(self, V: Tensor) -> Tensor:
        # At most max_cached_batches graphs stay alive; further batches (only with an
        # explicit mode="graph") get a graph built and dropped on every call.
        keep = self.max_cached_batches
        if self._graphs is None:
            self._graphs = [self._gradient_graph(b) for b in self._batches[:keep]]
        if len(self._batches) == 1 and V.shape[0] == 1 and self._graphs:
            # one batch, one vector (Lanczos): no accumulator, no extra pass over d
            x, g = self._graphs[0]
            (hv,) = torch.autograd.grad(g, x, V[0], retain_graph=True)
            w = self._weights[0]
            return (hv if w == 1.0 else hv.mul_(w)).unsqueeze(0)
        out = torch.zeros_like(V)
        for j, (w, b) in enumerate(zip(self._weights, self._batches)):
            x, g = self._graphs[j] if j < len(self._graphs) else self._gradient_graph(b)
            for i in range(V.shape[0]):
                (hv,) = torch.autograd.grad(g, x, V[i], retain_graph=True)
                out[i].add_(hv, alpha=w)
            del x, g
        return out

    def release(self) -> None:
        """Free the cached gradient graphs of ``"graph"`` mode (rebuilt when needed)."""
        self._graphs = None

    # ------------------------------------------------------------------ errors
    def _raise_nonfinite(self, what: str, value: Tensor, x: Tensor, batch: int | None = None):
        where = f" on batch {batch}" if batch is not None else ""
        bad_params = [n for n, s in self.param_slices.items() if not torch.isfinite(x[s]).all()]
        if bad_params:
            raise NonFiniteError(
                f"the {what}{where} is not finite because the parameters are not: "
                f"'{bad_params[0]}' is the first tensor holding NaN/Inf "
                f"({len(bad_params)} tensor(s) affected). Check the checkpoint or point."
            )
        if value.dim() >= 1 and value.shape[-1] == self.d:
            flat = value.reshape(-1, self.d)
            for n, s in self.param_slices.items():
                if not torch.isfinite(flat[:, s]).all():
                    raise NonFiniteError(
                        f"the {what}{where} is not finite; '{n}' is the first parameter "
                        "tensor whose entries went NaN/Inf. The loss may overflow in this "
                        "dtype (try dtype=torch.float64) or the model may be diverged."
                    )
        raise NonFiniteError(
            f"the {what}{where} is not finite (value {value.flatten()[:1].tolist()}). "
            "The loss may overflow in this dtype (try float64) or the inputs hold NaN/Inf."
        )

    def __repr__(self) -> str:
        strategy = self.strategy  # measures the memory profile if not done yet
        budget = "auto" if self.memory_budget is None else _fmt_bytes(self.memory_budget)
        prof = getattr(self, "_mem_profile", None)
        if prof is not None:
            budget = _fmt_bytes(prof[1]) + (" (auto)" if self.memory_budget is None else "")
        chunk = self.chunk_size or self._auto_chunk or "auto"
        return (
            f"HessianOperator(d={self.d}, dtype={self.dtype}, device={self.device}, "
            f"hvp: {strategy}, chunk={chunk}, memory_budget={budget}, "
            f"{self.description})"
        )


class RotatedOperator(_Base):
    """Hessian of the rotated loss L~(x~) = L(R x~): v -> R^T H (R v).

    A composition, not a new code path: every HVP is one HVP of the base operator
    between two applications of the orthogonal map (paper 000, Sec. 4 and App. D.2).

    Example:
        >>> from hessnorm.rotation import ExpSkew
        >>> H = torch.diag(torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64))
        >>> R = ExpSkew(3, 0.5, seed=0)
        >>> op = RotatedOperator(DenseOperator(H), R)
        >>> M = R.matrix()
        >>> torch.allclose(op.dense(), M.T @ H @ M), op.matvec_count  # 3 HVPs of the base
        (True, 3)
    """

    def __init__(self, base, rotation) -> None:
        if rotation.d != base.d:
            raise ShapeError(f"rotation acts on R^{rotation.d} but the operator on R^{base.d}")
        self.base = base
        self.rotation = rotation
        self.d = base.d
        self.dtype = base.dtype
        self.device = base.device

    @property
    def matvec_count(self) -> int:
        return self.base.matvec_count

    @property
    def point(self) -> Tensor:
        return self.rotation.apply_T(self.base.point)

    def hvp(self, v: Tensor) -> Tensor:
        V, single = self._check_vector(v)
        out = self.rotation.apply_T(self.base.hvp(self.rotation.apply(V)))
        return out[0] if single else out

    def loss(self, x: Tensor | None = None) -> float:
        return self.base.loss(None if x is None else self.rotation.apply(x))

    def gradient(self, x: Tensor | None = None) -> Tensor:
        return self.rotation.apply_T(
            self.base.gradient(None if x is None else self.rotation.apply(x))
        )

    def at(self, x: Tensor) -> RotatedOperator:
        return RotatedOperator(self.base.at(self.rotation.apply(x)), self.rotation)

    def __repr__(self) -> str:
        return f"RotatedOperator({self.rotation!r} of {self.base!r})"


class DenseOperator(_Base):
    """A dense symmetric matrix posing as a Hessian operator (tests, small problems).

    ``loss(x) = x^T H x / 2`` and ``gradient(x) = H x``, so it is the operator of a
    quadratic centred at 0; its point is the origin.

    Example:
        >>> op = DenseOperator(torch.diag(torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)))
        >>> x = torch.ones(3, dtype=torch.float64)
        >>> op.hvp(x).tolist(), op.loss(x), op.gradient(x).tolist(), op.matvec_count
        ([1.0, 2.0, 3.0], 3.0, [1.0, 2.0, 3.0], 1)
    """

    def __init__(self, H: Tensor) -> None:
        if H.dim() != 2 or H.shape[0] != H.shape[1]:
            raise ShapeError(f"a dense operator needs a square matrix, got shape {tuple(H.shape)}")
        self.H = H
        self.d = H.shape[0]
        self.dtype = H.dtype
        self.device = H.device
        self.matvec_count = 0
        self.point = torch.zeros(self.d, dtype=H.dtype, device=H.device)

    def hvp(self, v: Tensor) -> Tensor:
        V, single = self._check_vector(v)
        self.matvec_count += V.shape[0]
        out = V @ self.H.T
        return out[0] if single else out

    def loss(self, x: Tensor | None = None) -> float:
        x = self.point if x is None else x
        return float(0.5 * x @ self.H @ x)

    def gradient(self, x: Tensor | None = None) -> Tensor:
        x = self.point if x is None else x
        return self.H @ x

    def at(self, x: Tensor) -> DenseOperator:
        return self

    def dense(self, chunk_size: int = 256) -> Tensor:
        """The matrix itself (no HVP is performed)."""
        return self.H

    def __repr__(self) -> str:
        return f"DenseOperator(d={self.d}, dtype={self.dtype})"


class CountingOperator(_Base):
    """A user's operator (``d``, ``dtype``, ``device``, ``hvp``) that keeps no HVP count.

    :func:`as_operator` wraps such objects so that estimators can report how many HVPs
    they used; ``hvp`` is passed through unchanged (one count per vector), and a
    ``param_slices`` dict (name -> slice of rows), if the object has one, is kept.

    Example:
        >>> import torch
        >>> class Scale:
        ...     d, dtype, device = 3, torch.float64, torch.device("cpu")
        ...     def hvp(self, v):
        ...         return 2 * v
        >>> op = as_operator(Scale())
        >>> op.hvp(torch.ones(2, 3, dtype=torch.float64)).sum().item(), op.matvec_count
        (12.0, 2)
    """

    def __init__(self, base: Any) -> None:
        self.base = base
        self.d = int(base.d)
        self.dtype = base.dtype
        self.device = torch.device(base.device)
        self.matvec_count = 0
        if getattr(base, "param_slices", None):  # named row ranges, e.g. for per-tensor sums
            self.param_slices = dict(base.param_slices)

    def hvp(self, v: Tensor) -> Tensor:
        self.matvec_count += 1 if v.dim() == 1 else v.shape[0]
        return self.base.hvp(v)

    def __repr__(self) -> str:
        return f"CountingOperator({self.base!r})"


def as_operator(obj) -> HessianLike:
    """Return ``obj`` if it is :class:`HessianLike`; wrap a dense square tensor otherwise.

    An object with ``d``, ``dtype``, ``device`` and ``hvp`` but no ``matvec_count`` is
    wrapped in a :class:`CountingOperator`, so user-written operators need only those four.

    Example:
        >>> import torch
        >>> as_operator(torch.eye(3)).d
        3
    """
    if isinstance(obj, HessianLike):
        return obj
    if isinstance(obj, Tensor):
        return DenseOperator(obj)
    if all(hasattr(obj, a) for a in ("d", "dtype", "device", "hvp")):
        return CountingOperator(obj)
    raise TypeError(
        "expected a Hessian operator (with .hvp, .d, .dtype and .device) or a dense square "
        f"tensor, got {type(obj).__name__}"
    )
