"""Vector-space operations that also work on sharded operators (internal).

A sharded operator (:class:`hessnorm.sharded.ShardedOperator`) hands the estimators
vectors that are this rank's **local shard** of the flat parameter vector: ``op.d``
is the global dimension, ``op.local_d`` the shard's length, ``op.local_ranges`` the
global index ranges ``[lo, hi)`` the shard holds (in order), and
``op.allreduce_(t)`` sums a tensor over the ranks in place. Every inner product,
norm and sum over coordinates an estimator takes goes through this module, which
is the plain torch operation for every other operator (same bits as before).

Random vectors for sharded operators are drawn **by global coordinate** from a
counter-based Philox stream (entry j of draw r is a function of (seed, r, j) only),
so the same seed gives the same vectors, hence the same numbers up to the order of
the all-reduced sums, for any number of ranks.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from hessnorm.estimators._common import philox_uniform

__all__ = [
    "is_sharded",
    "local_d",
    "allreduce",
    "dot",
    "norm",
    "reducer",
    "gaussian_unit",
    "rademacher_rows",
]

_GAUSS_TAG = 0x6A09E667F3BCC908  # separates the Gaussian / Rademacher streams from Cauchy's
_RADEMACHER_TAG = 0xBB67AE8584CAA73B


def is_sharded(op) -> bool:
    """Whether ``op`` acts on local shards (has ``local_ranges``).

    Example:
        >>> from hessnorm.operator import DenseOperator
        >>> is_sharded(DenseOperator(torch.eye(2)))
        False
    """
    return getattr(op, "local_ranges", None) is not None


def local_d(op) -> int:
    """Length of the vectors ``op.hvp`` takes on this process (``op.d`` unless sharded).

    Example:
        >>> from hessnorm.operator import DenseOperator
        >>> local_d(DenseOperator(torch.eye(3)))
        3
    """
    return int(getattr(op, "local_d", op.d))


def allreduce(op, t: Tensor) -> Tensor:
    """``t`` summed over the ranks of a sharded operator (in place); ``t`` otherwise.

    Example:
        >>> from hessnorm.operator import DenseOperator
        >>> allreduce(DenseOperator(torch.eye(2)), torch.ones(2)).tolist()
        [1.0, 1.0]
    """
    fn = getattr(op, "allreduce_", None) if is_sharded(op) else None
    return t if fn is None else fn(t)


def reducer(op):
    """The all-reduce callable for a sharded operator, None otherwise.

    Example:
        >>> from hessnorm.operator import DenseOperator
        >>> reducer(DenseOperator(torch.eye(2))) is None
        True
    """
    return (lambda t: allreduce(op, t)) if is_sharded(op) else None


def dot(op, a: Tensor, b: Tensor) -> float:
    """⟨a, b⟩ over all coordinates (a gemv locally; all-reduced in float64 if sharded).

    Example:
        >>> from hessnorm.operator import DenseOperator
        >>> dot(DenseOperator(torch.eye(2)), torch.tensor([1.0, 2.0]), torch.tensor([3.0, 4.0]))
        11.0
    """
    if not is_sharded(op):
        return float(torch.mv(a.unsqueeze(0), b))  # gemv: BLAS dot's threading is slow on CPU
    part = torch.mv(a.unsqueeze(0).double(), b.double())
    return float(allreduce(op, part.reshape(1))[0])


def norm(op, a: Tensor) -> float:
    """‖a‖₂ over all coordinates.

    Example:
        >>> from hessnorm.operator import DenseOperator
        >>> norm(DenseOperator(torch.eye(2)), torch.tensor([3.0, 4.0]))
        5.0
    """
    if not is_sharded(op):
        return float(a.norm())
    sq = (a.double() ** 2).sum().reshape(1)
    return math.sqrt(max(float(allreduce(op, sq)[0]), 0.0))


def _ranges(op) -> list[tuple[int, int]]:
    return list(op.local_ranges) if is_sharded(op) else [(0, op.d)]


def gaussian_unit(op, seed: int, draw: int) -> Tensor:
    """Draw ``draw`` of a unit Gaussian direction in R^d, this rank's shard, float64.

    Entry j is Box–Muller of the stream values at 2(r·d + j) and 2(r·d + j) + 1, so
    it depends on (seed, draw, j) only; the norm is all-reduced.

    Example:
        >>> class Half:  # the second half of R^4, as rank 1 of 2 would hold it
        ...     d, local_d, local_ranges = 4, 2, [(2, 4)]
        >>> class Whole:
        ...     d, local_d, local_ranges = 4, 4, [(0, 4)]
        ...     def allreduce_(self, t):
        ...         return t
        >>> full = gaussian_unit(Whole(), seed=0, draw=0)
        >>> half = gaussian_unit(Half(), seed=0, draw=0)  # normalised locally: no peer here
        >>> torch.allclose(half, full[2:] / full[2:].norm())
        True
    """
    key = (int(seed) ^ _GAUSS_TAG) % (1 << 128)
    d = op.d
    parts = []
    for lo, hi in _ranges(op):
        u = philox_uniform(key, 2 * (draw * d + lo), 2 * (draw * d + hi)).reshape(-1, 2)
        parts.append(np.sqrt(-2.0 * np.log1p(-u[:, 0])) * np.cos(2.0 * math.pi * u[:, 1]))
    v = torch.from_numpy(np.concatenate(parts) if parts else np.zeros(0))
    return v / norm(op, v)


def rademacher_rows(op, seed: int, first: int, k: int, dtype, device) -> Tensor:
    """Rows first … first + k − 1 of ±1 probes, by global coordinate: (k, local_d).

    Example:
        >>> class Whole:
        ...     d, local_d, local_ranges = 6, 6, [(0, 6)]
        >>> class Tail:
        ...     d, local_d, local_ranges = 6, 2, [(4, 6)]
        >>> a = rademacher_rows(Whole(), 0, 0, 2, torch.float64, "cpu")
        >>> b = rademacher_rows(Tail(), 0, 0, 2, torch.float64, "cpu")
        >>> torch.equal(a[:, 4:], b), set(a.flatten().tolist()) <= {-1.0, 1.0}
        (True, True)
    """
    key = (int(seed) ^ _RADEMACHER_TAG) % (1 << 128)
    d = op.d
    out = torch.empty(k, local_d(op), dtype=dtype, device=device)
    for i in range(k):
        r = first + i
        u = np.concatenate(
            [philox_uniform(key, r * d + lo, r * d + hi) for lo, hi in _ranges(op)] or [np.zeros(0)]
        )
        out[i] = torch.from_numpy(np.where(u < 0.5, -1.0, 1.0)).to(device=device, dtype=dtype)
    return out
