"""Blockwise smoothness surrogate S(H, Φ) = Σ_{b,b'} √(d_b d_b') ‖H_{b,b'}‖₂ (paper 000).

For a partition Φ of the coordinates into blocks b of sizes d_b, S(H, Φ) is the
trace of the diagonal matrix A with a_b = Σ_{b'} √(d_{b'}/d_b)‖H_{b,b'}‖₂ on block
b, which satisfies −A ⪯ H ⪯ A (Lemma C.3; Defs. 3.8–3.9 and C.2 define the
Φ-smoothness it bounds; see DESIGN.md). Special cases: singleton blocks (Adam)
give ‖H‖₁,₁, one block (AdaSGD) gives d‖H‖₂; both are dispatched to the
dedicated estimators (:func:`~hessnorm.estimators.cauchy.l11_norm`,
:func:`~hessnorm.estimators.lanczos.spectral_norm`).

General partitions: a randomized block range finder over *block columns*.
For each block b' with d_b' > p(1 + 2q) + r (else see below):

1. Ω ∈ R^{d_b' × p} Gaussian, Q = orth(Ω); embed Q's columns on block b' and apply
   H: p HVPs give H[:, b']Q, i.e. H_{b,b'}Q for **every** row block b at once.
2. q power steps: (H · H[:, b']Q) restricted to block b' is (H[:, b']ᵀH[:, b'])Q;
   re-orthogonalise and apply H[:, b'] again (2p HVPs per step). Q then spans the
   dominant right-singular directions of the block column H[:, b'].
3. ‖H_{b,b'}Q‖₂ ≤ ‖H_{b,b'}‖₂ for every b — a deterministic lower bound.
4. A posteriori upper bound (Halko, Martinsson, Tropp 2011, Lemma 4.1 / eq. 4.3):
   with r Gaussian vectors g_i, projected u_i = (I − QQᵀ)g_i and r more HVPs,
   ‖H_{b,b'}(I − QQᵀ)‖₂ ≤ α·√(2/π)·max_i ‖H_{b,b'}u_i‖ with probability
   ≥ 1 − α^(−r), for all b at once from the same r HVPs (we take α = 2, trading a
   few more check vectors for a 5× tighter bound than HMT's α = 10). Then
   ‖H_{b,b'}‖₂ ≤ ‖H_{b,b'}Q‖₂ + that bound. r is chosen so that the union bound over
   every estimated pair fails with probability ≤ 1 − ``confidence``. A rounding
   slack of 1000·eps(dtype) relative is added to every upper bound.

Blocks with d_b' ≤ p(1 + 2q) + r are probed with the identity instead (d_b' HVPs,
cheaper than the sketch): their block columns, hence every ‖H_{b,b'}‖₂ with b' such
a block, are exact. Since ‖H_{b,b'}‖ = ‖H_{b',b}‖, each pair is estimated twice
and the larger lower / smaller upper bound is kept.

Cost: Σ_{b'} min(d_b', p(1 + 2q) + r) HVPs — at most n_blocks × (p(1 + 2q) + r) and
never more than d (+ the same small overhead). For ``Partition.by_row`` on a large
model (thousands of rows) this is thousands × ~40 HVPs: use ``max_blocks`` to
refuse such runs up front, and watch the progress bar.
"""

from __future__ import annotations

import math
import time

import torch
from torch import Tensor

from hessnorm.errors import ConfigError, TooLargeError
from hessnorm.estimate import Estimate
from hessnorm.operator import as_operator
from hessnorm.partition import Partition

__all__ = ["blockwise_smoothness"]

_HMT_ALPHA = 2.0


def _segment_gram(Y: Tensor, labels: Tensor, n_blocks: int) -> Tensor:
    """G[b] = Y_bᵀ Y_b for Y (d, p) and row labels (d,): (B, p, p) in float64."""
    p = Y.shape[1]
    G = torch.zeros(n_blocks, p, p, dtype=torch.float64, device=Y.device)
    step = max(1, (1 << 24) // max(p * p, 1))
    for i in range(0, Y.shape[0], step):
        y = Y[i : i + step].double()
        G.index_add_(0, labels[i : i + step], y[:, :, None] * y[:, None, :])
    return G


def _block_col_norms(Y: Tensor, labels: Tensor, n_blocks: int) -> Tensor:
    """‖Y_b‖₂ (largest singular value) of each row block of Y (d, p): (B,) float64."""
    G = _segment_gram(Y, labels, n_blocks)
    return torch.linalg.eigvalsh(G)[:, -1].clamp(min=0).sqrt()


def _segment_sq_norms(E: Tensor, labels: Tensor, n_blocks: int) -> Tensor:
    """‖E_b[:, i]‖₂ for E (d, r): (B, r) float64."""
    out = torch.zeros(n_blocks, E.shape[1], dtype=torch.float64, device=E.device)
    out.index_add_(0, labels, E.double() ** 2)
    return out.sqrt()


def _embed(cols: Tensor, idx: Tensor, d: int, dtype, device) -> Tensor:
    """Vectors (k, d) equal to cols (d_b, k)ᵀ on the coordinates idx and 0 elsewhere."""
    V = torch.zeros(cols.shape[1], d, dtype=dtype, device=device)
    V[:, idx] = cols.T.to(device=device, dtype=dtype)
    return V


def blockwise_smoothness(
    op,
    partition: Partition,
    *,
    seed: int = 0,
    rank: int = 20,
    power_steps: int = 2,
    confidence: float = 0.95,
    n_cauchy: int = 50,
    tol: float = 1e-4,
    method: str = "auto",
    max_blocks: int | None = None,
    progress: bool = True,
) -> Estimate:
    """S(H, Φ) = Σ_{b,b'} √(d_b d_b') ‖H_{b,b'}‖₂ with an honest interval (module docstring).

    Args:
        op: a Hessian-like operator or a dense symmetric tensor.
        partition: the :class:`~hessnorm.partition.Partition` Φ (must cover op.d).
        seed: seeds every random probe (CPU generator); same seed, same number.
        rank: sketch size p per block column.
        power_steps: q, power iterations per block column (2p HVPs each).
        confidence: for the randomized path, the probability that every pair's upper
            bound holds simultaneously (the lower bound is deterministic); for the
            coordinates partition, the Cauchy bootstrap's coverage.
        n_cauchy: probes when Φ is the coordinate partition (then S = ‖H‖₁,₁).
        tol: Lanczos tolerance when Φ is a single block (then S = d‖H‖₂).
        method: ``"auto"`` (dispatch the two special cases) or ``"randomized"``
            (always the block range finder).
        max_blocks: refuse (TooLargeError) partitions with more blocks than this.
        progress: show a tqdm bar over block columns.

    Returns:
        Estimate ``blockwise_smoothness``: value = the lower bound Σ √(d_b d_b')·
        (estimated ‖H_{b,b'}‖₂), high from the HMT bound. Details: ``diagonal_part``
        (Σ_b d_b ‖H_{b,b}‖₂, with ``diagonal_part_high``), ``n_blocks``, ``method``,
        ``exact_blocks`` (block columns computed exactly), ``rank``, ``power_steps``,
        ``check_vectors``, ``block_norms`` (B×B nested list when B ≤ 256).

    Example:
        >>> H = torch.tensor([[2.0, 1.0, 0.0], [1.0, 2.0, 0.0], [0.0, 0.0, -4.0]], dtype=torch.float64)
        >>> est = blockwise_smoothness(H, Partition.from_labels([0, 0, 1]), progress=False)
        >>> round(est.value, 10)  # 2·3 + 1·4 (off-diagonal blocks are 0)
        10.0
    """
    op = as_operator(op)
    if not isinstance(partition, Partition):
        raise ConfigError(f"partition must be a hessnorm Partition, got {type(partition).__name__}")
    partition.check_dim(op.d)
    if method not in ("auto", "randomized"):
        raise ConfigError(f"method must be 'auto' or 'randomized', got {method!r}")
    if rank < 1 or power_steps < 0:
        raise ConfigError(f"rank must be >= 1 and power_steps >= 0, got {rank} and {power_steps}")
    if not 0.0 < confidence < 1.0:
        raise ConfigError(f"confidence must lie in (0, 1), got {confidence}")
    B, d = partition.n_blocks, op.d
    if max_blocks is not None and B > max_blocks:
        per = rank * (1 + 2 * power_steps) + 5
        raise TooLargeError(
            f"the partition has {B:,} blocks > max_blocks = {max_blocks:,}; the estimate would cost up to "
            f"~{min(B * per, d):,} HVPs. Raise max_blocks, or use a coarser partition (by_tensor)"
        )
    t0 = time.perf_counter()
    if method == "auto" and B == d:
        from hessnorm.estimators.cauchy import l11_norm

        e = l11_norm(op, n=n_cauchy, seed=seed, confidence=confidence, progress=progress)
        return _rename(
            e,
            t0,
            {"method": "cauchy (coordinates: S = ‖H‖₁,₁)", "n_blocks": B, "diagonal_part": None},
        )
    if method == "auto" and B == 1:
        from hessnorm.estimators.lanczos import spectral_norm

        e = spectral_norm(op, tol=tol, seed=seed, progress=progress)
        details = {
            "method": "lanczos (single block: S = d‖H‖₂)",
            "n_blocks": 1,
            "spectral_norm": e.value,
        }
        details["diagonal_part"] = d * e.value
        details["diagonal_part_high"] = d * e.high
        return Estimate(
            "blockwise_smoothness",
            d * e.value,
            d * e.low,
            d * e.high,
            e.confidence,
            e.n_hvp,
            time.perf_counter() - t0,
            d,
            details,
        )
    return _randomized(op, partition, seed, rank, power_steps, confidence, progress, t0)


def _rename(e: Estimate, t0: float, extra: dict) -> Estimate:
    details = dict(e.details)
    details.update(extra)
    return Estimate(
        "blockwise_smoothness",
        e.value,
        e.low,
        e.high,
        e.confidence,
        e.n_hvp,
        time.perf_counter() - t0,
        e.d,
        details,
    )


def _randomized(op, partition: Partition, seed, p, q, confidence, progress, t0) -> Estimate:
    from tqdm.auto import tqdm

    B, d = partition.n_blocks, op.d
    labels = partition.labels.to(op.device)
    blocks = partition.blocks()
    sizes = partition.sizes.tolist()
    sketch_cost = p * (1 + 2 * q)
    # Choose r from the number of pairs whose upper bound is random (union bound).
    n_large = sum(1 for s in sizes if s > sketch_cost)
    pairs = max(1, n_large * B)
    r = max(1, math.ceil(math.log(pairs / (1.0 - confidence)) / math.log(_HMT_ALPHA)))
    threshold = sketch_cost + r
    exact_cols = [s <= threshold for s in sizes]
    g = torch.Generator().manual_seed(int(seed))
    low = torch.zeros(B, B, dtype=torch.float64)  # low[b, b'] from block column b'
    res = torch.zeros(B, B, dtype=torch.float64)
    n_hvp = 0
    hmt = _HMT_ALPHA * math.sqrt(2.0 / math.pi)
    with tqdm(
        total=B, desc="blockwise_smoothness: block columns", disable=not progress, leave=False
    ) as bar:
        # Exact (small) block columns are probed with identity columns, many blocks per HVP call.
        group: list[int] = []
        exact_ids = [j for j in range(B) if exact_cols[j]]
        for pos, j in enumerate(exact_ids):
            group.append(j)
            if sum(sizes[i] for i in group) < 256 and pos + 1 < len(exact_ids):
                continue
            idx = torch.cat([blocks[i] for i in group]).to(op.device)
            Y = op.hvp(
                _embed(torch.eye(len(idx), dtype=torch.float64), idx, d, op.dtype, op.device)
            )
            n_hvp += len(idx)
            start = 0
            for i in group:
                low[:, i] = _block_col_norms(Y[start : start + sizes[i]].T, labels, B).cpu()
                start += sizes[i]
            bar.update(len(group))
            group = []
        for j, idx in enumerate(blocks):
            if exact_cols[j]:
                continue
            s = sizes[j]
            idx_dev = idx.to(op.device)
            Q = torch.linalg.qr(torch.randn(s, p, generator=g, dtype=torch.float64))[0]
            Y = op.hvp(_embed(Q, idx_dev, d, op.dtype, op.device))  # rows: H[:, b'] q_i
            n_hvp += p
            for _ in range(q):
                W = op.hvp(Y)[:, idx_dev].double().cpu()  # rows: (H[:, b']ᵀ H[:, b'] Q)ᵀ
                n_hvp += p
                Q = torch.linalg.qr(W.T)[0]
                Y = op.hvp(_embed(Q, idx_dev, d, op.dtype, op.device))
                n_hvp += p
            low[:, j] = _block_col_norms(Y.T, labels, B).cpu()
            G = torch.randn(s, r, generator=g, dtype=torch.float64)
            U = G - Q @ (Q.T @ G)
            E = op.hvp(_embed(U, idx_dev, d, op.dtype, op.device))
            n_hvp += r
            res[:, j] = hmt * _segment_sq_norms(E.T, labels, B).max(dim=1).values.cpu()
            bar.update(1)
    res += 1000 * torch.finfo(op.dtype).eps * low
    high = low + res
    # ‖H_{b,b'}‖ = ‖H_{b',b}‖: both estimates bound the same number.
    low_sym = torch.maximum(low, low.T)
    high_sym = torch.minimum(high, high.T)
    root = partition.sizes.double().sqrt()
    w = root[:, None] * root[None, :]
    S_value = float((w * low_sym).sum())
    S_low = S_value * (1 - 1000 * torch.finfo(op.dtype).eps)  # rounding slack
    S_high = float((w * high_sym).sum())
    sz = partition.sizes.double()
    all_exact = all(exact_cols)
    details = {
        "method": "exact block columns"
        if all_exact
        else "randomized block range finder + HMT bound",
        "n_blocks": B,
        "diagonal_part": float((sz * low_sym.diagonal()).sum()),
        "diagonal_part_high": float((sz * high_sym.diagonal()).sum()),
        "exact_blocks": int(sum(exact_cols)),
        "rank": p,
        "power_steps": q,
        "check_vectors": 0 if all_exact else r,
    }
    if B <= 256:
        details["block_norms"] = low_sym.tolist()
    return Estimate(
        name="blockwise_smoothness",
        value=S_value,
        low=S_low,
        high=S_high,
        confidence=1.0 if all_exact else confidence,
        n_hvp=n_hvp,
        seconds=time.perf_counter() - t0,
        d=d,
        details=details,
    )
