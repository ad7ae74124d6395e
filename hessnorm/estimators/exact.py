"""Exact ground truth from the dense Hessian (small d only).

Every estimator in hessnorm is tested against these functions. For a
:class:`~hessnorm.operator.HessianOperator` the dense matrix is its public
:meth:`~hessnorm.operator.HessianOperator.dense`: **reverse-over-reverse**
differentiation (``jacrev`` of the gradient, chunked over basis vectors), a code
path independent of the forward-over-reverse HVPs that the estimators use, so
comparing the two is a real check. Any other operator (dense, rotated, or any
:class:`~hessnorm.operator.HessianLike`) is densified column by column through its
``hvp``.

All functions accept either an operator or a dense symmetric tensor.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from hessnorm.errors import SelectionError, ShapeError, TooLargeError
from hessnorm.operator import HessianOperator
from hessnorm.partition import Partition

__all__ = [
    "DEFAULT_MAX_DIM",
    "hessian",
    "eigvalsh",
    "spectral_norm",
    "l11_norm",
    "row_abs_sums",
    "blockwise_surrogate",
    "block_norms",
]

DEFAULT_MAX_DIM = 20_000


def hessian(
    op, *, max_dim: int | None = None, chunk_size: int = 256, symmetrize: bool = True
) -> Tensor:
    """Dense Hessian (d, d) of an operator, in the operator's dtype.

    Cost: d HVP-equivalents (reverse-over-reverse for a HessianOperator) and
    d² entries of memory.

    Args:
        op: a HessianOperator, any :class:`~hessnorm.operator.HessianLike`, or a dense tensor.
        max_dim: refuse d above this (default :data:`DEFAULT_MAX_DIM` = 20,000).
        chunk_size: basis vectors per vectorised call.
        symmetrize: return (H + Hᵀ)/2, removing rounding asymmetry.

    Raises:
        TooLargeError: when d exceeds ``max_dim``.

    Example:
        >>> import torch
        >>> from hessnorm.operator import HessianOperator
        >>> op = HessianOperator.from_function(lambda x: (x**3).sum(), torch.ones(2, dtype=torch.float64))
        >>> hessian(op).tolist()
        [[6.0, 0.0], [0.0, 6.0]]
    """
    if isinstance(op, Tensor):
        if op.dim() != 2 or op.shape[0] != op.shape[1]:
            raise ShapeError(f"expected a square matrix, got shape {tuple(op.shape)}")
        H = op
    else:
        limit = DEFAULT_MAX_DIM if max_dim is None else int(max_dim)
        if op.d > limit:
            gib = op.d**2 * torch.finfo(op.dtype).bits / 8 / 2**30
            raise TooLargeError(
                f"the dense Hessian has d = {op.d:,} > max_dim = {limit:,} "
                f"(it would need {gib:.1f} GiB); pass max_dim={op.d} to allow it, or use "
                "the HVP estimators instead"
            )
        if isinstance(op, HessianOperator):
            H = op.dense(chunk_size)
        else:
            eye = torch.eye(op.d, dtype=op.dtype, device=op.device)
            H = torch.cat([op.hvp(eye[i : i + chunk_size]) for i in range(0, op.d, chunk_size)])
    H = H.detach()
    return 0.5 * (H + H.T) if symmetrize else H


def _dense(op_or_H, max_dim: int | None = None) -> Tensor:
    if isinstance(op_or_H, Tensor):
        return hessian(op_or_H)
    return hessian(op_or_H, max_dim=max_dim)


def eigvalsh(op_or_H, *, max_dim: int | None = None) -> Tensor:
    """All eigenvalues, ascending, in float64.

    Example:
        >>> import torch
        >>> eigvalsh(torch.tensor([[2.0, -1.0], [-1.0, 2.0]], dtype=torch.float64)).tolist()
        [1.0, 3.0]
    """
    return torch.linalg.eigvalsh(_dense(op_or_H, max_dim).double())


def spectral_norm(op_or_H, *, max_dim: int | None = None) -> float:
    """‖H‖₂ = max |λᵢ(H)| (exact, float64).

    Example:
        >>> import torch
        >>> spectral_norm(torch.tensor([[2.0, -1.0], [-1.0, 2.0]], dtype=torch.float64))
        3.0
    """
    ev = eigvalsh(op_or_H, max_dim=max_dim)
    return float(ev.abs().max())


def row_abs_sums(op_or_H, *, max_dim: int | None = None) -> Tensor:
    """a_j = Σ_k |H_jk| for every row j (float64) — what the Cauchy estimator targets.

    Example:
        >>> import torch
        >>> row_abs_sums(torch.tensor([[2.0, -1.0], [-1.0, 2.0]], dtype=torch.float64)).tolist()
        [3.0, 3.0]
    """
    return _dense(op_or_H, max_dim).double().abs().sum(dim=1)


def l11_norm(op_or_H, *, max_dim: int | None = None) -> float:
    """‖H‖₁,₁ = Σ_jk |H_jk| (paper 000, Sec. 3.3).

    Example:
        >>> import torch
        >>> l11_norm(torch.tensor([[2.0, -1.0], [-1.0, 2.0]], dtype=torch.float64))
        6.0
    """
    return float(row_abs_sums(op_or_H, max_dim=max_dim).sum())


def _labels_tensor(labels, d: int) -> Tensor:
    if isinstance(labels, Partition):
        labels = labels.labels
    lab = torch.as_tensor(labels, dtype=torch.long).reshape(-1).cpu()
    if lab.numel() != d:
        raise SelectionError(f"the block labels cover {lab.numel()} coordinates but d = {d}")
    return lab


def block_norms(op_or_H, labels: Sequence[int] | Tensor, *, max_dim: int | None = None):
    """Spectral norms of all Hessian blocks.

    Returns:
        (norms, sizes, ids): ``norms[b, b'] = ‖H_{b,b'}‖₂`` (float64, B×B), the
        block sizes d_b, and the sorted distinct labels the rows/columns refer to.

    Example:
        >>> import torch
        >>> norms, sizes, ids = block_norms(torch.tensor([[2.0, -1.0], [-1.0, 2.0]], dtype=torch.float64), [0, 1])
        >>> norms.tolist(), sizes.tolist()
        ([[2.0, 1.0], [1.0, 2.0]], [1.0, 1.0])
    """
    H = _dense(op_or_H, max_dim).double().cpu()
    lab = _labels_tensor(labels, H.shape[0])
    ids = torch.unique(lab)
    index = [torch.nonzero(lab == b).flatten() for b in ids]
    B = len(index)
    norms = torch.zeros(B, B, dtype=torch.float64)
    for i in range(B):
        rows = H[index[i]]
        for j in range(i, B):
            val = torch.linalg.matrix_norm(rows[:, index[j]], ord=2)
            norms[i, j] = norms[j, i] = val
    sizes = torch.tensor([len(ix) for ix in index], dtype=torch.float64)
    return norms, sizes, ids


def blockwise_surrogate(op_or_H, labels, *, max_dim: int | None = None) -> tuple[float, float]:
    """S(H, Φ) = Σ_{b,b'} √(d_b d_b') ‖H_{b,b'}‖₂ and its diagonal part Σ_b d_b ‖H_{b,b}‖₂.

    Paper 000, Def. 3.9 / Lemma C.3: the diagonal matrix with
    a_b = Σ_{b'} √(d_{b'}/d_b) ‖H_{b,b'}‖₂ on block b has trace S and satisfies
    −A ⪯ H ⪯ A. For singleton blocks S = ‖H‖₁,₁; for one block S = d‖H‖₂.

    Args:
        labels: block id per coordinate, or a Partition.

    Example:
        >>> import torch
        >>> S, diag = blockwise_surrogate(torch.tensor([[2.0, -1.0], [-1.0, 2.0]], dtype=torch.float64), [0, 1])
        >>> round(S, 12), round(diag, 12)  # Σ √(d_b d_b') ‖H_bb'‖₂ = 2+1+1+2, diagonal 2+2
        (6.0, 4.0)
    """
    norms, sizes, _ = block_norms(op_or_H, labels, max_dim=max_dim)
    root = sizes.sqrt()
    S = float((root[:, None] * root[None, :] * norms).sum())
    diag = float((sizes * norms.diagonal()).sum())
    return S, diag
