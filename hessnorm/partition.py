"""Partitions Φ of the d parameter coordinates into blocks.

A partition is the object that distinguishes the adaptive optimizers of paper 000
(Xie, Mohamadi, Li, Sec. 3.2, Algorithm 3): Adam adapts one step size per
coordinate (``Partition.coordinates``), AdaSGD one for the whole vector
(``Partition.single``), and blockwise Adam one per block in between
(``Partition.by_tensor``, ``Partition.by_row``). The blockwise smoothness surrogate
S(H, Φ) = Σ_{b,b'} √(d_b d_b') ‖H_{b,b'}‖₂ is measured for a partition by
:func:`hessnorm.estimators.blockwise_smoothness`.

A partition is stored as one label per coordinate: ``labels[i]`` is the block of
flat coordinate ``i`` (flat order = the operator's parameter order). Since every
coordinate carries exactly one label, every coordinate lies in exactly one block by
construction; the constructors check that the labels are dense ids 0..B-1 and that
they cover exactly d coordinates.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal, get_args

import torch
from torch import Tensor

from hessnorm.errors import SelectionError

__all__ = ["Partition", "PARTITIONS"]

# the names Partition.named (and ``hessnorm train --partition``) accepts
# the named partitions (Partition.named); estimators take one as a ``PartitionName`` option
PartitionName = Literal["by_tensor", "by_row", "coordinates", "single"]
PARTITIONS = get_args(PartitionName)


def _named_shapes(obj: Any) -> dict[str, tuple[int, ...]]:
    """Name -> shape, in flat order, from an operator or a mapping (of shapes or slices)."""
    if hasattr(obj, "param_shapes") and hasattr(obj, "param_names"):
        return {n: tuple(obj.param_shapes[n]) for n in obj.param_names}
    if isinstance(obj, Mapping):
        out: dict[str, tuple[int, ...]] = {}
        for name, val in obj.items():
            if isinstance(val, slice):
                if val.step not in (None, 1):
                    raise SelectionError(
                        f"the slice of {name!r} has step {val.step}; flat slices must be contiguous"
                    )
                out[name] = (int(val.stop) - int(val.start),)
            elif isinstance(val, Tensor):
                out[name] = tuple(val.shape)
            else:
                out[name] = tuple(int(s) for s in val)
        if not out:
            raise SelectionError(
                "the mapping of parameter shapes is empty: there is nothing to partition"
            )
        return out
    raise SelectionError(
        f"expected a HessianOperator or a mapping name -> shape, got {type(obj).__name__}; "
        "pass e.g. {n: p.shape for n, p in model.named_parameters()}"
    )


def _check_slices(obj: Any) -> None:
    """Mapping of slices must tile [0, d) in order (as an operator's param_slices do)."""
    if isinstance(obj, Mapping) and obj and all(isinstance(v, slice) for v in obj.values()):
        pos = 0
        for name, s in obj.items():
            if int(s.start) != pos:
                raise SelectionError(
                    f"the parameter slices do not tile the flat vector: {name!r} starts at "
                    f"{s.start}, expected {pos}; give the slices in flat order without gaps"
                )
            pos = int(s.stop)


class Partition:
    """A partition Φ of {0, ..., d-1} into B blocks, as one block id per coordinate.

    Args:
        labels: integer tensor (d,) with values in 0..B-1, every id used at least once.
        names: optional list of B block names (e.g. ``"net.0.weight[3]"``).
        spec: optional JSON-able description used by :attr:`spec` (set by the constructors).

    Raises:
        SelectionError: if the labels are not a 1-D integer vector of dense ids 0..B-1.

    Example:
        >>> p = Partition.from_labels([5, 5, 2, 7])
        >>> p.n_blocks, p.sizes.tolist(), p.labels.tolist()
        (3, [2, 1, 1], [0, 0, 1, 2])
    """

    def __init__(
        self, labels, names: Sequence[str] | None = None, spec: dict | None = None
    ) -> None:
        lab = torch.as_tensor(labels)
        if lab.dim() != 1 or lab.numel() == 0:
            raise SelectionError(
                f"partition labels must be a non-empty 1-D tensor, got shape {tuple(lab.shape)}"
            )
        if lab.is_floating_point() or lab.is_complex() or lab.dtype == torch.bool:
            raise SelectionError(f"partition labels must be integers, got dtype {lab.dtype}")
        lab = lab.to(device="cpu", dtype=torch.long)
        lo, hi = int(lab.min()), int(lab.max())
        if lo < 0:
            raise SelectionError(
                f"partition labels must be >= 0, found {lo}; use Partition.from_labels to relabel"
            )
        counts = torch.bincount(lab, minlength=hi + 1)
        empty = torch.nonzero(counts == 0).flatten()
        if len(empty):
            raise SelectionError(
                f"block ids must be 0..B-1 with every id used, but ids {empty[:10].tolist()} have no "
                "coordinate; use Partition.from_labels(labels) to relabel arbitrary ids"
            )
        self.labels: Tensor = lab
        self.d: int = int(lab.numel())
        self.n_blocks: int = hi + 1
        self.sizes: Tensor = counts
        if names is not None:
            names = [str(n) for n in names]
            if len(names) != self.n_blocks:
                raise SelectionError(f"got {len(names)} block names for {self.n_blocks} blocks")
        self.names: list[str] | None = names
        self._spec = spec if spec is not None else {"kind": "labels", "labels": lab.tolist()}
        self._blocks: list[Tensor] | None = None

    # ------------------------------------------------------------------ views
    def blocks(self) -> list[Tensor]:
        """Index arrays (LongTensor) of the coordinates of each block, in block order."""
        if self._blocks is None:
            order = torch.argsort(self.labels, stable=True)
            self._blocks = list(torch.split(order, self.sizes.tolist()))
        return self._blocks

    @property
    def spec(self) -> dict:
        """JSON-able description; :meth:`from_spec` rebuilds the same partition."""
        return dict(self._spec)

    def check_dim(self, d: int) -> None:
        """Raise SelectionError unless the partition covers exactly ``d`` coordinates."""
        if self.d != int(d):
            raise SelectionError(
                f"the partition covers {self.d} coordinates but the operator has d = {d}; build it "
                "from the same operator (Partition.by_tensor(op)) or the same parameter selection"
            )

    def __len__(self) -> int:
        return self.n_blocks

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Partition) and torch.equal(self.labels, other.labels)

    def __repr__(self) -> str:
        return f"Partition(d={self.d}, n_blocks={self.n_blocks}, kind={self._spec.get('kind')})"

    # ------------------------------------------------------------------ constructors
    @classmethod
    def named(cls, name: str, op_or_shapes: Any) -> Partition:
        """The partition called ``name`` (one of :data:`PARTITIONS`) of an operator's coordinates.

        Args:
            name: ``"by_tensor"``, ``"by_row"``, ``"coordinates"`` or ``"single"``.
            op_or_shapes: a HessianOperator or a mapping name -> shape in flat order.

        Raises:
            SelectionError: an unknown name (or shapes the constructor rejects).

        Example:
            >>> Partition.named("by_tensor", {"w": (2, 3), "b": (2,)}).sizes.tolist()
            [6, 2]
            >>> len(Partition.named("coordinates", {"w": (2, 3)}))
            6
        """
        if name not in PARTITIONS:
            raise SelectionError(f"unknown partition {name!r}; choose one of {PARTITIONS}.")
        if name in ("by_tensor", "by_row"):
            return getattr(cls, name)(op_or_shapes)
        shapes = _named_shapes(op_or_shapes)
        d = sum(math.prod(s) for s in shapes.values())
        return cls.coordinates(d) if name == "coordinates" else cls.single(d)

    @classmethod
    def coordinates(cls, d: int) -> Partition:
        """Every coordinate its own block (Adam's Φ; S(H, Φ) = ‖H‖₁,₁)."""
        d = _positive(d)
        return cls(torch.arange(d), spec={"kind": "coordinates", "d": d})

    @classmethod
    def single(cls, d: int) -> Partition:
        """One block holding everything (AdaSGD's Φ; S(H, Φ) = d‖H‖₂)."""
        d = _positive(d)
        return cls(torch.zeros(d, dtype=torch.long), names=["all"], spec={"kind": "single", "d": d})

    @classmethod
    def by_tensor(cls, op_or_shapes: Any) -> Partition:
        """One block per parameter tensor.

        Args:
            op_or_shapes: a HessianOperator, or a mapping name -> shape (or name -> flat
                slice, as ``op.param_slices``) in flat order.
        """
        _check_slices(op_or_shapes)
        shapes = _named_shapes(op_or_shapes)
        sizes = [math.prod(s) for s in shapes.values()]
        labels = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
        return cls(
            labels, names=list(shapes), spec={"kind": "by_tensor", "shapes": _jsonable(shapes)}
        )

    @classmethod
    def by_row(cls, op_or_shapes: Any) -> Partition:
        """One block per output row of each weight matrix (Adam-mini / Adalayer style).

        The rule, for tensors in flat order:

        * a tensor with ≥ 2 dimensions of shape (r, ...) gives r blocks, one per
          index of dim 0 (its flattened row ``W[i]``; for a conv kernel, one output
          channel);
        * a 1-D tensor whose name ends with ``"bias"`` joins those rows when the same
          module has a ≥ 2-D ``"weight"`` (name with ``bias`` replaced by ``weight``, so
          ``attn.in_proj_bias`` pairs with ``attn.in_proj_weight``) with r == len(bias):
          ``bias[i]`` goes into the block of ``weight[i]``;
        * every other tensor (LayerNorm / BatchNorm gains and shifts, unmatched biases,
          scalars) is one block of its own.

        Block ids follow the order in which blocks first appear in the flat vector.

        Args:
            op_or_shapes: a HessianOperator or a mapping name -> shape in flat order.
        """
        shapes = _named_shapes(op_or_shapes)
        names_all = list(shapes)
        sizes = [math.prod(s) for s in shapes.values()]
        joined: dict[str, str] = {}
        for name, shape in shapes.items():
            if len(shape) == 1 and name.endswith("bias"):
                wname = name[: -len("bias")] + "weight"
                wshape = shapes.get(wname)
                if wshape is not None and len(wshape) >= 2 and wshape[0] == shape[0]:
                    joined[name] = wname
        labels = torch.empty(sum(sizes), dtype=torch.long)
        starts = dict(zip(names_all, [sum(sizes[:i]) for i in range(len(sizes))]))
        block_names: list[str] = []
        first_row: dict[str, int] = {}
        for name, shape in shapes.items():
            start, size = starts[name], math.prod(shape)
            if name in joined:
                continue
            if len(shape) >= 2:
                r = shape[0]
                first_row[name] = len(block_names)
                ids = torch.arange(len(block_names), len(block_names) + r)
                labels[start : start + size] = ids.repeat_interleave(size // r)
                block_names.extend(f"{name}[{i}]" for i in range(r))
            else:
                labels[start : start + size] = len(block_names)
                block_names.append(name)
        for bname, wname in joined.items():
            start, r = starts[bname], shapes[bname][0]
            labels[start : start + r] = torch.arange(first_row[wname], first_row[wname] + r)
        # Ids were handed out in flat order of the weights; biases stored before their
        # weight would break the "order of first appearance" rule, so relabel once.
        _, remap = _first_appearance(labels)  # labels are 0..B-1, so remap[old] = new
        names_sorted = [""] * len(block_names)
        for old, new in enumerate(remap.tolist()):
            names_sorted[new] = block_names[old]
        return cls(
            remap[labels], names=names_sorted, spec={"kind": "by_row", "shapes": _jsonable(shapes)}
        )

    @classmethod
    def from_labels(cls, labels, names: Sequence[str] | None = None) -> Partition:
        """Any integer labels (d,), relabelled to 0..B-1 in order of first appearance."""
        lab = torch.as_tensor(labels)
        if lab.dim() != 1 or lab.numel() == 0 or lab.is_floating_point() or lab.dtype == torch.bool:
            raise SelectionError(
                f"labels must be a non-empty 1-D integer sequence, got shape {tuple(lab.shape)} and dtype {lab.dtype}"
            )
        lab = lab.to("cpu", torch.long)
        _, rank = _first_appearance(lab)
        inverse = torch.unique(lab, return_inverse=True)[1]
        return cls(rank[inverse], names=names)

    @classmethod
    def from_blocks(
        cls, blocks: Sequence[Sequence[int] | Tensor], d: int | None = None, names=None
    ) -> Partition:
        """Build from index arrays, checking each coordinate lies in exactly one block.

        Raises:
            SelectionError: naming the first coordinates that are missing or repeated.
        """
        if len(blocks) == 0:
            raise SelectionError("no block given: a partition needs at least one block")
        idx = [torch.as_tensor(b, dtype=torch.long).reshape(-1) for b in blocks]
        for i, b in enumerate(idx):
            if b.numel() == 0:
                raise SelectionError(
                    f"block {i} is empty; every block needs at least one coordinate"
                )
        flat = torch.cat(idx)
        d = int(flat.max()) + 1 if d is None else int(d)
        if int(flat.min()) < 0 or int(flat.max()) >= d:
            raise SelectionError(
                f"block indices must lie in [0, {d}), found {int(flat.min())}..{int(flat.max())}"
            )
        count = torch.bincount(flat, minlength=d)
        missing = torch.nonzero(count == 0).flatten()
        repeated = torch.nonzero(count > 1).flatten()
        if len(missing) or len(repeated):
            raise SelectionError(
                "every coordinate must be in exactly one block: "
                f"{len(missing)} coordinate(s) in no block (first {missing[:5].tolist()}), "
                f"{len(repeated)} in several (first {repeated[:5].tolist()})"
            )
        labels = torch.empty(d, dtype=torch.long)
        for i, b in enumerate(idx):
            labels[b] = i
        return cls(labels, names=names)

    @classmethod
    def from_spec(cls, spec: Mapping, named_shapes: Any = None) -> Partition:
        """Rebuild a partition from :attr:`spec` (``named_shapes`` for tensor-based kinds).

        ``named_shapes`` (an operator or mapping name -> shape) overrides the shapes
        stored in the spec, so a partition can be rebuilt for the same model.
        """
        kind = spec.get("kind")
        if kind == "coordinates":
            return cls.coordinates(spec["d"])
        if kind == "single":
            return cls.single(spec["d"])
        if kind in ("by_tensor", "by_row"):
            shapes = (
                named_shapes
                if named_shapes is not None
                else {k: tuple(v) for k, v in spec["shapes"].items()}
            )
            return getattr(cls, kind)(shapes)
        if kind == "labels":
            return cls(spec["labels"])
        raise SelectionError(
            f"unknown partition kind {kind!r}; expected coordinates, single, by_tensor, by_row or labels"
        )


def _first_appearance(labels: Tensor) -> tuple[Tensor, Tensor]:
    """Sorted unique labels and the rank (0..U-1) of each by first position."""
    uniq, inverse = torch.unique(labels, return_inverse=True)
    pos = torch.full((len(uniq),), labels.numel(), dtype=torch.long)
    pos.scatter_reduce_(0, inverse, torch.arange(labels.numel()), reduce="amin")
    order = torch.argsort(pos)
    rank = torch.empty_like(order)
    rank[order] = torch.arange(len(order))
    return uniq, rank


def _positive(d: int) -> int:
    d = int(d)
    if d < 1:
        raise SelectionError(f"the dimension d must be a positive integer, got {d}")
    return d


def _jsonable(shapes: Mapping[str, tuple[int, ...]]) -> dict[str, list[int]]:
    return {k: [int(s) for s in v] for k, v in shapes.items()}
