"""Data-parallel Hessian operators on ``torch.distributed`` (gloo on CPUs, NCCL on GPUs).

Every rank holds the whole model and one shard of the evaluation examples. A
:class:`~hessnorm.operator.HessianOperator` built while a process group exists sums
its shard's batch terms weighted by ``n_b / N`` (``N``: the examples of ALL ranks,
all-reduced once at construction) and all-reduces (SUM) the partial loss, gradient,
HVP or dense Hessian, so

    H v = sum_r sum_{b in shard r} (n_b / N) H_b v,

the Hessian of the mean over the union of the shards, exact for uneven shards. An
all-reduce hands every rank the same reduced buffer, so every rank gets the same bits,
and the estimators (which draw their probes from ``seed`` alone) take the same path on
every rank. Each HVP costs one local HVP per rank plus an all-reduce of k·d numbers.

Errors, not hangs: before every reduction the ranks all-reduce a flag vector saying
which rank failed; if one did, every rank raises (the failing rank its own exception,
the others :class:`~hessnorm.errors.DistributedError` quoting it), so no rank waits in
a collective its peer never reaches. At construction the ranks also compare their
example counts (a rank with an empty shard is an error) and a checksum of the
parameters and buffers (ranks with different models are an error). A rank that dies
outright is caught by the process group's own ``timeout`` (``init(timeout=...)``).

Limit: each rank holds the whole model plus the HVP tangents; this spreads the
evaluation examples, not the parameters (docs/distributed.md sketches model sharding).
"""

from __future__ import annotations

import datetime
import hashlib
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from hessnorm.errors import DistributedError, EmptyDataError, ShapeError

__all__ = ["init_from_env", "is_distributed", "rank", "world_size", "shard_batches", "DataParallel"]


def is_distributed() -> bool:
    """True when ``torch.distributed`` is available and a default process group exists.

    Example:
        >>> is_distributed()
        False
    """
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This process's rank in the default group (0 without one).

    Example:
        >>> rank()
        0
    """
    import torch.distributed as dist

    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    """Processes in the default group (1 without one).

    Example:
        >>> world_size()
        1
    """
    import torch.distributed as dist

    return dist.get_world_size() if is_distributed() else 1


def init_from_env(device: str | None = None, timeout: float = 600.0) -> bool:
    """Join the process group ``torchrun`` describes (``WORLD_SIZE``, ``RANK``, ...).

    Backend: NCCL when ``device`` is ``"cuda"`` (each rank takes GPU ``LOCAL_RANK``),
    gloo otherwise. ``timeout`` (seconds) bounds every collective, so a rank that
    dies or stalls stops its peers with an error instead of a hang.

    Returns:
        True when a group was created here, False when none is wanted (no
        ``WORLD_SIZE`` in the environment) or one exists already.

    Example:
        >>> "WORLD_SIZE" in os.environ or init_from_env() is False
        True
    """
    import torch.distributed as dist

    if "WORLD_SIZE" not in os.environ or is_distributed():
        return False
    if not dist.is_available():
        raise DistributedError("this torch build has no torch.distributed; run one process")
    backend = "nccl" if device == "cuda" else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group(backend, timeout=datetime.timedelta(seconds=float(timeout)))
    return True


def example_count(batch: Any) -> int:
    """Examples in an ``(inputs, targets)`` batch: the first dimension of either tensor.

    Also the operator's rule for its batch weights (``hessnorm.operator`` imports it).

    Example:
        >>> example_count((torch.zeros(4, 3), torch.zeros(4)))
        4
        >>> example_count(([torch.zeros(5, 2)], None))  # inputs as a list of tensors
        5
        >>> example_count((torch.zeros(2), torch.tensor(1.0)))  # 0-d targets: ask the inputs
        2
        >>> try:
        ...     example_count(({"x": 1}, 3))
        ... except ShapeError as exc:
        ...     print(str(exc).split(":")[0])
        cannot tell the batch size
    """
    for obj in (batch[1], batch[0]):
        if isinstance(obj, Tensor) and obj.dim() > 0:
            return int(obj.shape[0])
        if isinstance(obj, (tuple, list)) and obj and isinstance(obj[0], Tensor):
            return int(obj[0].shape[0])
    raise ShapeError(
        "cannot tell the batch size: give inputs or targets as tensors whose first "
        "dimension indexes examples"
    )


def _slice(obj: Any, a: int, b: int) -> Any:
    if isinstance(obj, Tensor):
        return obj[a:b]
    if isinstance(obj, (tuple, list)):
        return type(obj)(_slice(o, a, b) for o in obj)
    if isinstance(obj, Mapping):
        return {k: _slice(v, a, b) for k, v in obj.items()}
    return obj


def shard_batches(batches: Sequence[Any], rank: int, world: int, *, whole_batches: bool = False):
    """This rank's contiguous shard of an evaluation set given as ``(inputs, targets)`` batches.

    Examples are numbered 0..N-1 in batch order; rank r gets examples
    ``[floor(r N / W), floor((r+1) N / W))``, keeping the original batch boundaries
    inside the shard (a batch crossing a shard boundary is cut in two). With
    ``whole_batches=True`` (models whose loss depends on the batch, e.g. BatchNorm
    on batch statistics) rank r gets batches ``[floor(r B / W), floor((r+1) B / W))``
    instead, so no batch is cut. Deterministic: the same on every rank.

    Example:
        >>> b = [(torch.arange(4), torch.arange(4)), (torch.arange(3), torch.arange(3))]
        >>> [x.tolist() for x, _ in shard_batches(b, 0, 2)], [x.tolist() for x, _ in shard_batches(b, 1, 2)]
        ([[0, 1, 2]], [[3], [0, 1, 2]])
    """
    batches = list(batches)
    if whole_batches:
        n = len(batches)
        return batches[rank * n // world : (rank + 1) * n // world]
    sizes = [example_count(b) for b in batches]
    total = sum(sizes)
    lo, hi = rank * total // world, (rank + 1) * total // world
    out, start = [], 0
    for b, size in zip(batches, sizes):
        a, e = max(lo, start), min(hi, start + size)
        if a < e:
            out.append(b if (a, e) == (start, start + size) else _slice(b, a - start, e - start))
        start += size
    return out


def _checksum(tensors: Sequence[Tensor]) -> int:
    """A 63-bit hash of the bytes of ``tensors`` (dtype and shape included)."""
    h = hashlib.blake2b(digest_size=8)
    for t in tensors:
        t = t.detach()
        h.update(f"{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return int.from_bytes(h.digest(), "little") >> 1


class DataParallel:
    """The reductions of a data-parallel operator over one process group (internal).

    Built once by :meth:`HessianOperator.from_module`; :meth:`reduce` runs a local
    computation and all-reduces it, raising on every rank if any rank failed.

    Example:
        A one-process gloo group (torchrun starts one process per rank):

        >>> import torch.distributed as dist
        >>> dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
        >>> try:
        ...     dp = DataParallel(dist.group.WORLD)
        ...     dp.setup(5, [torch.ones(3)], d=3)
        ...     summed = dp.reduce("an HVP", lambda: torch.ones(2))
        ... finally:
        ...     dist.destroy_process_group()
        >>> dp.rank, dp.world, dp.counts, summed.tolist()
        (0, 1, [5], [1.0, 1.0])
    """

    def __init__(self, group: Any) -> None:
        import torch.distributed as dist

        self.group = group
        # NCCL reduces CUDA tensors only; gloo CPU tensors (results are moved back)
        nccl = str(dist.get_backend(group)) == "nccl"
        self.device = torch.device("cuda", torch.cuda.current_device()) if nccl else None
        self.device = self.device or torch.device("cpu")
        self.rank = dist.get_rank(group)
        self.world = dist.get_world_size(group)
        self.total = 0
        self.counts: list[int] = []

    def check(self, what: str, error: BaseException | None) -> None:
        """Raise on every rank when ``error`` is set on any rank (one collective)."""
        import torch.distributed as dist

        flags = torch.zeros(self.world, dtype=torch.int64, device=self.device)
        if error is not None:
            flags[self.rank] = 1
        self._collective(what, lambda: dist.all_reduce(flags, group=self.group))
        failed = flags.nonzero().flatten().tolist()
        if not failed:
            return
        messages: list[Any] = [None] * self.world
        mine = None if error is None else f"{type(error).__name__}: {error}"
        dist.all_gather_object(messages, mine, group=self.group)
        if error is not None:
            raise error
        detail = "; ".join(f"rank {r}: {messages[r]}" for r in failed)
        raise DistributedError(
            f"{what} failed on rank(s) {failed} of {self.world}, so every rank stops ({detail})"
        )

    def _collective(self, what: str, call: Callable[[], Any]) -> None:
        """Run one collective; a dead or stalled peer becomes a DistributedError."""
        try:
            call()
        except RuntimeError as exc:  # gloo/NCCL: connection closed, timeout
            raise DistributedError(
                f"{what}: rank {self.rank} lost contact with the other ranks ({exc}). "
                "Another rank died or stalled past the process group's timeout; its own "
                "output says why"
            ) from exc

    def reduce(self, what: str, compute: Callable[[], Tensor]) -> Tensor:
        """``compute()`` on this rank's shard, summed over all ranks (identical on every rank)."""
        import torch.distributed as dist

        out, error = None, None
        try:
            out = compute()
        except Exception as exc:  # noqa: BLE001 - re-raised on this rank by check()
            error = exc
        self.check(what, error)
        buf = out.to(self.device)
        self._collective(what, lambda: dist.all_reduce(buf, group=self.group))
        return buf if buf.device == out.device else buf.to(out.device)

    def setup(self, count: int, tensors: Sequence[Tensor], d: int) -> None:
        """Agree on the example counts and the model; raise on every rank if they do not."""
        import torch.distributed as dist

        local = torch.tensor([count, d, _checksum(tensors)], dtype=torch.int64, device=self.device)
        gathered = [torch.empty_like(local) for _ in range(self.world)]
        dist.all_gather(gathered, local, group=self.group)
        rows = [g.tolist() for g in gathered]
        self.counts = [r[0] for r in rows]
        self.total = sum(self.counts)
        empty = [r for r, c in enumerate(self.counts) if c == 0]
        if empty:
            most = sum(c > 0 for c in self.counts)
            raise EmptyDataError(
                f"rank(s) {empty} of {self.world} hold no evaluation example (examples per "
                f"rank: {self.counts}); give every rank at least one example, e.g. run at "
                f"most {max(most, 1)} processes or evaluate on more examples"
            )
        if len({(r[1], r[2]) for r in rows}) > 1:
            groups: dict[tuple[int, int], list[int]] = {}
            for r, row in enumerate(rows):
                groups.setdefault((row[1], row[2]), []).append(r)
            listed = " vs ".join(f"ranks {v} (d={k[0]})" for k, v in groups.items())
            raise DistributedError(
                f"the ranks hold different models: the checksums of their parameters and "
                f"buffers differ ({listed}); load the same checkpoint with the same dtype and "
                "parameter selection on every rank"
            )
