"""The pieces every estimator shares, each with one home.

* probes: Rademacher rows and unit start vectors from a CPU ``torch.Generator``, and the
  counter-based Philox stream of standard Cauchy probes (any range drawn on its own);
* the chunk-size rule (about 2²⁷ entries per ``op.hvp`` call) and chunked, checked HVPs;
* the d unit-vector probes of an exact diagonal;
* the Student-t quantile (computed once per (p, dof)).

Private to :mod:`hessnorm.estimators` (the module name says so); the names here are the
estimators' shared vocabulary, imported by name.
"""

from __future__ import annotations

import functools
import math

import torch
from torch import Tensor

from hessnorm.errors import NonFiniteError
from hessnorm.operator import all_finite

__all__ = [
    "rademacher_rows",
    "unit_start",
    "random_unit",
    "CAUCHY_BLOCK",
    "cauchy_key",
    "philox_uniform",
    "cauchy_probes",
    "cauchy_probe_ranges",
    "default_chunk",
    "chunked_hvp",
    "unit_diagonal",
    "EXACT_ADVICE",
    "t_quantile",
]


def rademacher_rows(g: torch.Generator, k: int, d: int, dtype, device) -> Tensor:
    """(k, d) Rademacher ±1 probes from a CPU generator, one row after another.

    Drawn row by row as int8 so that neither the values nor the host memory depend
    on k (a 124M-entry row is 124 MB as int8).

    Example:
        >>> R = rademacher_rows(torch.Generator().manual_seed(0), 2, 5, torch.float64, "cpu")
        >>> tuple(R.shape), sorted(R.unique().tolist())
        ((2, 5), [-1.0, 1.0])
    """
    out = torch.empty(k, d, dtype=dtype, device=device)
    for i in range(k):
        bits = torch.randint(0, 2, (d,), generator=g, dtype=torch.int8)
        out[i] = (2 * bits - 1).to(device=device, dtype=dtype)
    return out


def chunked_hvp(op, V: Tensor, chunk_size: int | None, bar=None) -> Tensor:
    """H V for (k, d) V, ``chunk_size`` rows per ``op.hvp`` call, checked finite.

    ``bar`` (a :class:`~hessnorm.estimators._progress.ProgressBar`) counts the rows of
    every call as it returns.

    Example:
        >>> from hessnorm.operator import DenseOperator
        >>> op = DenseOperator(torch.diag(torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)))
        >>> chunked_hvp(op, torch.eye(3, dtype=torch.float64), 2).diag().tolist()
        [1.0, 2.0, 3.0]
        >>> bad = DenseOperator(torch.tensor([[float("nan")]], dtype=torch.float64))
        >>> try:
        ...     chunked_hvp(bad, torch.ones(1, 1, dtype=torch.float64), None)
        ... except NonFiniteError as exc:
        ...     print(str(exc).split(";")[0])
        a Hessian-vector product is not finite
    """
    k = V.shape[0]
    chunk = k if chunk_size is None else max(1, int(chunk_size))
    pieces = []
    for i in range(0, k, chunk):
        pieces.append(op.hvp(V[i : i + chunk]))
        if bar is not None:
            bar.update(min(chunk, k - i))
    out = torch.cat(pieces)
    if not all_finite(out):
        raise NonFiniteError(
            "a Hessian-vector product is not finite; try float64 or check the model"
        )
    return out


def default_chunk(d: int) -> int:
    """Rows per ``op.hvp`` call: about 2²⁷ entries in all, at least one row.

    Example:
        >>> default_chunk(1000), default_chunk(1 << 30), default_chunk(0)
        (134217, 1, 134217728)
    """
    return max(1, (1 << 27) // max(d, 1))


EXACT_ADVICE = "ask for fewer HVPs than d (n < d) to estimate instead of reading all d columns"


def unit_diagonal(op, chunk: int, bar) -> Tensor:
    """diag(H) from the d unit vectors, ``chunk`` per HVP call, counted in ``bar``.

    Example:
        >>> from hessnorm.operator import DenseOperator
        >>> class Bar:
        ...     n = 0
        ...     def update(self, k):
        ...         self.n += k
        >>> H = torch.tensor([[1.0, 5.0, 0.0], [5.0, 2.0, 0.0], [0.0, 0.0, 3.0]]).double()
        >>> bar = Bar()
        >>> unit_diagonal(DenseOperator(H), 2, bar).tolist(), bar.n
        ([1.0, 2.0, 3.0], 3)
    """
    d = op.d
    diag = torch.empty(d, dtype=torch.float64)
    for s in range(0, d, chunk):
        e = min(d, s + chunk)
        E = torch.zeros(e - s, d, dtype=op.dtype, device=op.device)
        E[torch.arange(e - s), torch.arange(s, e)] = 1
        HE = chunked_hvp(op, E, None)
        diag[s:e] = HE[torch.arange(e - s), torch.arange(s, e)].double().cpu()
        bar.update(e - s)
    return diag


@functools.cache
def t_quantile(p: float, dof: int) -> float:
    """Student-t quantile (scipy), dof ≥ 1.

    Example:
        >>> round(t_quantile(0.975, 10), 4), t_quantile(0.5, 3)
        (2.2281, 0.0)
    """
    from scipy import stats

    return float(stats.t.ppf(p, dof))


# ---------------------------------------------------------------------- lockstep Lanczos
def unit_start(seed: int, d: int, start: str, dtype, device) -> Tensor:
    """A unit start vector from ``seed``: Rademacher for ``start="rademacher"``, else Gaussian.

    Example:
        >>> unit_start(0, 4, "rademacher", torch.float64, "cpu").tolist()
        [-0.5, 0.5, 0.5, -0.5]
        >>> v = unit_start(0, 4, "gaussian", torch.float32, "cpu")
        >>> v.dtype, round(float(v.norm()), 6)
        (torch.float32, 1.0)
    """
    g = torch.Generator().manual_seed(int(seed))
    if start == "rademacher":
        v = (2 * torch.randint(0, 2, (d,), generator=g, dtype=torch.int8) - 1).double()
    else:
        v = torch.randn(d, generator=g, dtype=torch.float64)
    return (v / v.norm()).to(device=device, dtype=dtype)


def random_unit(d: int, g: torch.Generator) -> Tensor:
    """A uniformly random unit vector of R^d (float64, CPU) drawn from ``g``.

    Example:
        >>> v = random_unit(5, torch.Generator().manual_seed(0))
        >>> v.dtype, tuple(v.shape), round(float(v.norm()), 12)
        (torch.float64, (5,), 1.0)
    """
    v = torch.randn(d, generator=g, dtype=torch.float64)
    return v / v.norm()


# The probe stream. Entry j of probe i is tan(π(u − ½)) with u the (i·d + j)-th float64
# of a counter-based Philox4x64 stream keyed by the seed. The stream is cut into blocks
# of CAUCHY_BLOCK values, block b starting at counter b·2⁶⁴, so any range of it can be drawn
# on its own: chunks of probes and blocks drawn in parallel threads give the same bits.
# CAUCHY_BLOCK is part of the definition of the probes: changing it changes every l11 number.
CAUCHY_BLOCK = 1 << 20


def cauchy_key(seed: int) -> int:
    """The Philox key of ``seed`` (any Python int; negative seeds wrap modulo 2¹²⁸).

    Example:
        >>> cauchy_key(7), cauchy_key(-1) == 2**128 - 1
        (7, True)
    """
    return int(seed) % (1 << 128)


def philox_uniform(key: int, lo: int, hi: int):
    """Uniform [0, 1) float64 values (numpy) at positions [lo, hi) of the Philox stream ``key``.

    The stream is cut into blocks of :data:`CAUCHY_BLOCK` values, block b starting at
    counter b·2⁶⁴, so any range is read on its own; every hessnorm probe stream (Cauchy,
    and the sharded Gaussian / Rademacher draws) reads its positions here.

    Example:
        >>> import numpy as np
        >>> whole = philox_uniform(3, 0, 10)
        >>> bool(np.array_equal(np.concatenate([philox_uniform(3, 0, 4), philox_uniform(3, 4, 10)]), whole))
        True
    """
    import numpy as np

    out = np.empty(max(hi - lo, 0), dtype=np.float64)
    pos = lo
    while pos < hi:
        b = pos // CAUCHY_BLOCK
        end = min(hi, (b + 1) * CAUCHY_BLOCK)
        bits = np.random.Philox(key=key, counter=b << 64)
        off = pos - b * CAUCHY_BLOCK
        bits.advance(off // 4)  # Philox gives 4 values per counter step
        gen = np.random.Generator(bits)
        if off % 4:
            gen.random(off % 4)
        out[pos - lo : end - lo] = gen.random(end - pos)
        pos = end
    return out


def fill_cauchy_block(key: int, b: int, lo: int, hi: int, out: Tensor) -> None:
    """Write the Cauchy values at stream positions [lo, hi) of block b into ``out``.

    Example:
        Positions 2..4 of seed 0's stream are entries 2..4 of its probes, flattened:

        >>> out = torch.empty(3, dtype=torch.float64)
        >>> fill_cauchy_block(cauchy_key(0), 0, 2, 5, out)
        >>> torch.equal(out, cauchy_probes(0, 0, 2, 3).view(-1)[2:5])
        True
    """
    import numpy as np

    assert b * CAUCHY_BLOCK <= lo and hi <= (b + 1) * CAUCHY_BLOCK, (b, lo, hi)
    u = philox_uniform(key, lo, hi)
    np.subtract(u, 0.5, out=u)
    np.multiply(u, math.pi, out=u)
    np.tan(u, out=u)
    out.copy_(torch.from_numpy(u))


def cauchy_probes(
    seed: int, first: int, k: int, d: int, dtype: torch.dtype = torch.float64, workers: int = 1
) -> Tensor:
    """Probes first … first + k − 1 of ``seed`` as a (k, d) CPU tensor in ``dtype``.

    Standard Cauchy entries computed in float64 and rounded once to ``dtype``. The
    blocks are filled by ``workers`` threads (numpy releases the GIL); the bits do
    not depend on ``workers``, ``k`` or ``first``'s chunking. About 8 ns per entry
    on one core (1 s per probe at d = 1.24·10⁸).

    Example:
        >>> P = cauchy_probes(0, 0, 2, 3)
        >>> tuple(P.shape), P.dtype, torch.equal(cauchy_probes(0, 1, 1, 3), P[1:])
        ((2, 3), torch.float64, True)
        >>> torch.equal(cauchy_probes(0, 0, 2, 3, workers=2), P)
        True
    """
    key = cauchy_key(seed)
    out = torch.empty(k, d, dtype=dtype)
    flat = out.view(-1)
    p0, p1 = first * d, (first + k) * d
    if p1 <= p0:
        return out
    jobs = []
    for b in range(p0 // CAUCHY_BLOCK, (p1 - 1) // CAUCHY_BLOCK + 1):
        lo, hi = max(p0, b * CAUCHY_BLOCK), min(p1, (b + 1) * CAUCHY_BLOCK)
        jobs.append((b, lo, hi))
    if workers <= 1 or len(jobs) == 1:
        for b, lo, hi in jobs:
            fill_cauchy_block(key, b, lo, hi, flat[lo - p0 : hi - p0])
    else:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=min(workers, len(jobs))) as pool:
            futures = [
                pool.submit(fill_cauchy_block, key, b, lo, hi, flat[lo - p0 : hi - p0])
                for b, lo, hi in jobs
            ]
            for f in futures:
                f.result()
    return out


def cauchy_probe_ranges(
    seed: int, first: int, k: int, d: int, ranges, dtype: torch.dtype = torch.float64
) -> Tensor:
    """The columns ``ranges`` ([lo, hi) pairs, concatenated) of probes first … first + k − 1.

    The same stream positions as :func:`cauchy_probes` (entry j of probe i at i·d + j),
    so a sharded operator's local shard of each probe equals those columns of the
    unsharded probe, bit for bit, for any number of ranks.

    Example:
        >>> whole = cauchy_probes(5, 0, 2, 10)
        >>> part = cauchy_probe_ranges(5, 0, 2, 10, [(1, 3), (7, 10)])
        >>> torch.equal(part, torch.cat([whole[:, 1:3], whole[:, 7:10]], dim=1))
        True
    """
    key = cauchy_key(seed)
    width = sum(hi - lo for lo, hi in ranges)
    out = torch.empty(k, width, dtype=dtype)
    buf = torch.empty(CAUCHY_BLOCK, dtype=torch.float64)
    for i in range(k):
        col = 0
        for lo, hi in ranges:
            p, end = (first + i) * d + lo, (first + i) * d + hi
            while p < end:
                b = p // CAUCHY_BLOCK
                stop = min(end, (b + 1) * CAUCHY_BLOCK)
                view = buf[: stop - p]
                fill_cauchy_block(key, b, p, stop, view)
                out[i, col : col + stop - p] = view
                col += stop - p
                p = stop
    return out
