"""Spectral norm and extreme eigenpairs of the Hessian by Lanczos (paper 000, App. D.3).

Lanczos builds an orthonormal basis q_1, ..., q_m of the Krylov space
span{q_1, Hq_1, ..., H^{m-1}q_1} with one HVP per step, and the tridiagonal
T_m = Q_mᵀ H Q_m. The eigenvalues θ of T_m (Ritz values) approximate the extreme
eigenvalues of H fast (error shrinking geometrically with the spectral gap). Here
the basis is fully re-orthogonalised (classical Gram–Schmidt, applied twice), so
the computed Ritz residuals can be trusted, and every small-matrix computation
(T, its eigen-decomposition, residuals) is done in float64 even when the operator
works in float32.

Error bars. For a Ritz pair (θ, y = Q_m s) the residual is
r = ‖Hy − θy‖₂ = β_m |s_m| (β_m the next off-diagonal, s_m the last entry of s).

* Lower bound (rigorous): θ is a Rayleigh quotient, so λ_min ≤ θ_min ≤ θ_max ≤
  λ_max and ‖H‖₂ ≥ max(|θ_min|, |θ_max|) always.
* Upper bound: some eigenvalue lies in [θ − r, θ + r]. When that eigenvalue is
  the extreme one, |λ_extreme| ≤ |θ_extreme| + r, giving
  ‖H‖₂ ≤ max(|θ_max| + r_max, |θ_min| + r_min). This is a bound on ‖H‖₂ only if
  Lanczos has not missed an eigenvalue beyond the extreme Ritz values; that can
  happen only if the start vector is (numerically) orthogonal to the corresponding
  eigenvectors. With a random Gaussian start this has probability zero in exact
  arithmetic and is vanishingly unlikely in floating point, but it is not a
  certificate, so the Estimate's ``confidence`` is ``nan`` (no probability
  attached) rather than 1.
"""

from __future__ import annotations

import math
import time
from typing import NamedTuple

import torch
from torch import Tensor

from hessnorm.errors import ConfigError, NonFiniteError
from hessnorm.estimate import Estimate
from hessnorm.operator import as_operator

__all__ = ["spectral_norm", "top_eigenpairs", "Eigenpairs", "lanczos"]


class LanczosState(NamedTuple):
    """The result of a Lanczos run.

    Attributes:
        alpha, beta: diagonal (m,) and off-diagonal (m,) of T_m in float64;
            ``beta[-1]`` is the residual coupling β_m to the next (unused) vector.
        basis: the (m, d) orthonormal Lanczos vectors (operator dtype), or None.
        n_hvp: HVPs spent (= m).
        breakdown: True when β_m ≈ 0, i.e. the Krylov space is invariant and the
            Ritz values are exact eigenvalues of H.
    """

    alpha: Tensor
    beta: Tensor
    basis: Tensor | None
    n_hvp: int
    breakdown: bool


def _ritz(alpha: Tensor, beta: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Ritz values (ascending), eigenvectors of T and residual norms β_m |s_m|, float64."""
    m = alpha.numel()
    T = torch.diag(alpha)
    if m > 1:
        off = beta[: m - 1]
        T = T + torch.diag(off, 1) + torch.diag(off, -1)
    theta, S = torch.linalg.eigh(T)
    resid = beta[m - 1].abs() * S[m - 1].abs()
    return theta, S, resid


def _start_vector(d: int, seed: int, dtype, device) -> Tensor:
    g = torch.Generator().manual_seed(int(seed))
    v = torch.randn(d, generator=g, dtype=torch.float64)
    return (v / v.norm()).to(device=device, dtype=dtype)


def lanczos(
    op, *, max_iter: int = 200, seed: int = 0, stop=None, keep_basis: bool = False, progress=None
):
    """Run Lanczos with full re-orthogonalisation on a Hessian-like operator.

    Cost: one HVP per iteration, at most ``min(max_iter, d)`` HVPs. Memory: the
    basis, (iterations + 1) × d entries in the operator's dtype and device.

    Args:
        op: anything with ``d``, ``dtype``, ``device`` and ``hvp`` (or a dense tensor).
        max_iter: maximal number of iterations (HVPs).
        seed: seeds the Gaussian start vector (CPU generator, float64).
        stop: optional callable ``stop(theta, resid) -> bool`` evaluated after every
            iteration on the current Ritz values and residuals (float64).
        keep_basis: return the basis (needed for Ritz vectors).
        progress: optional tqdm bar updated once per iteration.

    Returns:
        LanczosState.
    """
    op = as_operator(op)
    d = op.d
    m_max = int(min(max_iter, d))
    if m_max < 1:
        raise ConfigError(f"max_iter must be at least 1, got {max_iter}")
    cap = min(m_max + 1, 32)
    Q = torch.empty(cap, d, dtype=op.dtype, device=op.device)
    Q[0] = _start_vector(d, seed, op.dtype, op.device)
    alphas: list[float] = []
    betas: list[float] = []
    breakdown = False
    scale = 0.0
    eps = torch.finfo(op.dtype).eps
    for j in range(m_max):
        w = op.hvp(Q[j])
        if not torch.isfinite(w).all():
            raise NonFiniteError(
                "a Hessian-vector product in Lanczos is not finite; try float64 or check the model"
            )
        a = float(torch.dot(Q[j].double(), w.double()))
        alphas.append(a)
        # Full re-orthogonalisation against every previous vector, twice ("twice is enough").
        basis = Q[: j + 1]
        for _ in range(2):
            w = w - (basis @ w) @ basis
        b = float(w.double().norm())
        betas.append(b)
        scale = max(scale, abs(a), b)
        if progress is not None:
            progress.update(1)
        if b <= 10 * eps * scale or b == 0.0:
            breakdown = True
        theta, _, resid = _ritz(
            torch.tensor(alphas, dtype=torch.float64), torch.tensor(betas, dtype=torch.float64)
        )
        if breakdown:
            resid = torch.zeros_like(resid)
        if breakdown or (stop is not None and stop(theta, resid)) or j + 1 == m_max:
            break
        if j + 1 >= Q.shape[0]:
            new = torch.empty(min(2 * Q.shape[0], m_max + 1), d, dtype=op.dtype, device=op.device)
            new[: Q.shape[0]] = Q
            Q = new
        Q[j + 1] = w / b
    n = len(alphas)
    beta_t = torch.tensor(betas, dtype=torch.float64)
    if breakdown:
        beta_t[-1] = 0.0
    return LanczosState(
        torch.tensor(alphas, dtype=torch.float64),
        beta_t,
        Q[:n].clone() if keep_basis else None,
        n,
        breakdown,
    )


def _bar(progress: bool, total: int, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=not progress, leave=False)


def _norm_bounds(theta: Tensor, resid: Tensor) -> tuple[float, float]:
    low = max(abs(float(theta[0])), abs(float(theta[-1])))
    high = max(abs(float(theta[0])) + float(resid[0]), abs(float(theta[-1])) + float(resid[-1]))
    return low, high


def spectral_norm(
    op, *, tol: float = 1e-4, max_iter: int = 200, seed: int = 0, progress: bool = True
) -> Estimate:
    """‖H‖₂ = max(|λ_max|, |λ_min|) by Lanczos with full re-orthogonalisation.

    Stops as soon as the interval [low, high] (module docstring) has relative width
    (high − low) / low < ``tol``, or after ``max_iter`` iterations. Each iteration
    costs one HVP; on the test models 20–60 HVPs reach tol = 1e-4. Paper 000,
    App. D.3 measures ‖∇²L‖₂ this way (Table 2, "AdaSGD" row, d·‖H‖₂).

    Args:
        op: a HessianOperator, any Hessian-like (``d``, ``dtype``, ``device``,
            ``hvp``), or a dense symmetric tensor.
        tol: relative width of the reported interval at which to stop.
        max_iter: cap on iterations (= HVPs); the result then carries a wider interval.
        seed: seeds the random start vector; same seed, same number.
        progress: show a tqdm bar.

    Returns:
        Estimate ``spectral_norm`` with value max|θ| (the rigorous lower end), high
        from the Ritz residuals, ``confidence=nan`` (see module docstring), and
        details ``lambda_max``, ``lambda_min``, ``residual_max``, ``residual_min``,
        ``iterations``, ``converged``, ``breakdown``, ``history`` (low, high per step).

    Example:
        >>> H = torch.diag(torch.tensor([3.0, -5.0, 1.0, 0.5], dtype=torch.float64))
        >>> est = spectral_norm(H, progress=False)
        >>> round(est.value, 10), est.details["lambda_min"]
        (5.0, -5.0)
    """
    if not tol > 0:
        raise ConfigError(f"tol must be positive, got {tol}")
    op = as_operator(op)
    t0 = time.perf_counter()
    history: list[tuple[float, float]] = []

    def stop(theta, resid):
        low, high = _norm_bounds(theta, resid)
        history.append((low, high))
        return low > 0 and (high - low) / low < tol

    with _bar(progress, min(max_iter, op.d), "spectral_norm (Lanczos)") as bar:
        st = lanczos(op, max_iter=max_iter, seed=seed, stop=stop, progress=bar)
    theta, _, resid = _ritz(st.alpha, st.beta)
    if st.breakdown:
        resid = torch.zeros_like(resid)
    low, high = _norm_bounds(theta, resid)
    if len(history) < st.n_hvp:
        history.append((low, high))
    converged = st.breakdown or (low > 0 and (high - low) / low < tol) or (low == high)
    return Estimate(
        name="spectral_norm",
        value=low,
        low=low,
        high=high,
        confidence=math.nan,
        n_hvp=st.n_hvp,
        seconds=time.perf_counter() - t0,
        d=op.d,
        details={
            "lambda_max": float(theta[-1]),
            "lambda_min": float(theta[0]),
            "residual_max": float(resid[-1]),
            "residual_min": float(resid[0]),
            "iterations": st.n_hvp,
            "converged": bool(converged),
            "breakdown": bool(st.breakdown),
            "tol": tol,
            "history": history,
        },
    )


class Eigenpairs(NamedTuple):
    """Ritz approximations of k eigenpairs.

    Attributes:
        values: (k,) float64 Ritz values, ordered as requested by ``which``.
        vectors: (k, d) unit Ritz vectors (operator dtype), row i for values[i].
        residuals: (k,) float64 ‖Hy − θy‖₂; an eigenvalue of H lies within
            ``residuals[i]`` of ``values[i]``.
        n_hvp: HVPs spent.
        converged: whether every residual reached ``tol · max|θ|``.
    """

    values: Tensor
    vectors: Tensor
    residuals: Tensor
    n_hvp: int
    converged: bool


_WHICH = ("LM", "LA", "SA")


def _select(theta: Tensor, k: int, which: str) -> Tensor:
    if which == "LA":
        return torch.arange(len(theta) - 1, len(theta) - 1 - k, -1).clamp(min=0)[
            : min(k, len(theta))
        ]
    if which == "SA":
        return torch.arange(min(k, len(theta)))
    return torch.argsort(theta.abs(), descending=True, stable=True)[:k]


def top_eigenpairs(
    op,
    k: int,
    *,
    which: str = "LM",
    tol: float = 1e-4,
    max_iter: int = 300,
    seed: int = 0,
    progress: bool = True,
) -> Eigenpairs:
    """The k extreme eigenpairs of H by Lanczos with full re-orthogonalisation.

    Stops when every wanted Ritz pair has residual ‖Hy − θy‖ ≤ tol · max|θ|.
    Cost: one HVP per iteration (≤ ``max_iter``), plus memory for the basis
    ((iterations + 1) × d in the operator dtype); Ritz vectors are formed in float64.

    Args:
        op: a Hessian-like operator or a dense symmetric tensor.
        k: number of eigenpairs (1 ≤ k ≤ d).
        which: ``"LM"`` largest magnitude, ``"LA"`` largest, ``"SA"`` smallest (algebraic).
        tol, max_iter, seed, progress: as in :func:`spectral_norm`.

    Example:
        >>> H = torch.diag(torch.arange(1.0, 11.0, dtype=torch.float64))
        >>> pairs = top_eigenpairs(H, 2, progress=False)
        >>> [round(v, 8) for v in pairs.values.tolist()]
        [10.0, 9.0]
    """
    op = as_operator(op)
    if which not in _WHICH:
        raise ConfigError(f"which must be one of {_WHICH}, got {which!r}")
    if not 1 <= int(k) <= op.d:
        raise ConfigError(f"k must be between 1 and d = {op.d}, got {k}")
    k = int(k)

    def stop(theta, resid):
        if len(theta) < k:
            return False
        idx = _select(theta, k, which)
        return bool((resid[idx] <= tol * theta.abs().max()).all())

    with _bar(progress, min(max_iter, op.d), f"top_eigenpairs (k={k})") as bar:
        st = lanczos(
            op, max_iter=max(max_iter, k), seed=seed, stop=stop, keep_basis=True, progress=bar
        )
    theta, S, resid = _ritz(st.alpha, st.beta)
    if st.breakdown:
        resid = torch.zeros_like(resid)
    idx = _select(theta, k, which)
    coeffs = S[:, idx].T.to(device=st.basis.device)  # (k, m) float64
    vectors = (coeffs @ st.basis.double()).to(st.basis.dtype)
    converged = bool((resid[idx] <= tol * theta.abs().max()).all()) or st.breakdown
    return Eigenpairs(theta[idx], vectors, resid[idx], st.n_hvp, converged)
