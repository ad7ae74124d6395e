"""Probabilistic upper bounds for the largest |eigenvalue| from one Lanczos run.

The bound (used by :func:`~hessnorm.estimators.lanczos.spectral_norm` and, per block
pair, by :func:`~hessnorm.estimators.blockwise.blockwise_smoothness`) follows the
random-start argument of Kuczyński and Woźniakowski (1992), made a-posteriori so that
it also profits from a spectral gap once Lanczos has seen it.

Setting. Lanczos on a symmetric M (size n) from v = g/‖g‖, g Gaussian, built the
orthonormal Q_m and tridiagonal T_m = Q_mᵀ M Q_m. Let u be a unit eigenvector of an
eigenvalue λ* with |λ*| = ‖M‖₂ and c = ⟨v, u⟩.

1. Start vector. c² ~ Beta(1/2, (n−1)/2), whose density is at most
   Γ(n/2)/(√π Γ((n−1)/2)) ≤ √((n−1)/(2π)) (Wendel's inequality), hence
   P(|c| < t) ≤ t·√(2n/π). With t = δ/√(2n/π) the event E = {|c| ≥ t} has
   probability ≥ 1 − δ.
2. Krylov identity (exact arithmetic). For every polynomial p of degree ≤ m − 1,
   p(M)v = Q_m p(T_m) e₁, so ‖p(M)v‖² = Σ_i w_i p(θ_i)², with θ_i the Ritz values and
   w_i the squared first components of T_m's eigenvectors. Since
   ‖p(M)v‖² ≥ c² p(λ*)², on E every such p satisfies
   t·|p(λ*)| ≤ N(p) := (Σ_i w_i p(θ_i)²)^{1/2}. p may be chosen after looking at T_m:
   E does not depend on p.
3. The polynomials. For j = 0, 1, …, J let S_j be the j Ritz values of largest
   magnitude and [l_j, h_j] the hull of the others;
   p_j(x) = Π_{s∈S_j}(x − θ_s) · C_{m−1−j}((2x − l_j − h_j)/(h_j − l_j)) with C_k the
   Chebyshev polynomial. |C_k| ≤ 1 on the hull, so N(p_j) is at most the deflated
   Ritz weights, while |p_j(±x)| grows like e^{k·arccosh} for x ≥ max|θ|. On E,
   ‖M‖₂ = |λ*| ≤ high_j := the largest x ≥ max|θ| with t|p_j(x)| ≤ N(p_j) or
   t|p_j(−x)| ≤ N(p_j) (|p_j(±x)| increase with x there, so bisection finds it).
   high = min_j high_j. j = 0 is the gap-free Kuczyński–Woźniakowski-type bound
   ‖M‖₂ ≲ max|θ|·(1 + (ln(2/t))²/(2(m − 1)²)); j ≥ 1 deflates converged outliers
   and gives geometric convergence in the gap. At an exact breakdown (invariant Krylov
   space) E implies that λ* is a Ritz value, so high = max|θ|.
4. Lower end (deterministic): ρ_m = σ_max([T_m; β_m e_mᵀ]) = max_{y∈range Q_m}
   ‖My‖/‖y‖ ≤ ‖M‖₂, and ρ_m ≥ max|θ_i|.

Rounding. The bounds hold for the operator the HVPs actually apply, M̃; with
‖M̃ − M‖₂ ≤ η‖M‖₂, ‖M‖₂ ∈ [ρ_m/(1 + η), high/(1 − η)]. η is the caller's
estimate of the HVP's relative error (see :func:`rounding_slack`).
"""

from __future__ import annotations

import math

import numpy as np
from scipy.linalg import eigh_tridiagonal

__all__ = ["start_radius", "rounding_slack", "tridiag_eig", "norm_lower", "NormBound"]

_J_MAX = 8  # deflation depths tried (each costs one vectorised evaluation)


def start_radius(n: int, delta: float) -> float:
    """t with P(|⟨v, u⟩| < t) ≤ δ for v uniform on the unit sphere of R^n (step 1).

    t = min(1, δ/√(2n/π)); no HVP.

    Example:
        >>> start_radius(1, 0.05), round(start_radius(100, 0.05), 6)
        (1.0, 0.006267)
    """
    if n <= 1:
        return 1.0
    return min(1.0, delta / math.sqrt(2.0 * n / math.pi))


def rounding_slack(n: int, eps: float) -> float:
    """Relative HVP error η assumed for rounding: eps·max(10, √n).

    Each HVP entry accumulates O(n) rounded products; with blocked/pairwise
    summation and independent rounding errors the relative error is O(√n·eps) with
    high probability (Higham & Mary 2019, probabilistic rounding error analysis).
    The floor of 10·eps also covers treating β ≤ 10·eps·‖T‖ as a breakdown.

    Example:
        >>> rounding_slack(100, 1e-16), rounding_slack(10_000, 1e-16)
        (1e-15, 1e-14)
    """
    return eps * max(10.0, math.sqrt(n))


def tridiag_eig(alpha: np.ndarray, beta: np.ndarray):
    """Ritz values θ (ascending) and eigenvectors S of T (alpha diag, beta[:-1] off).

    Example:
        >>> theta, S = tridiag_eig(np.array([2.0, 2.0]), np.array([1.0, 0.0]))
        >>> theta.tolist(), np.abs(S).round(4).tolist()
        ([1.0, 3.0], [[0.7071, 0.7071], [0.7071, 0.7071]])
    """
    m = len(alpha)
    if m == 1:
        return alpha.astype(np.float64).copy(), np.ones((1, 1))
    return eigh_tridiagonal(alpha, beta[: m - 1])


def norm_lower(alpha: np.ndarray, beta: np.ndarray) -> float:
    """ρ_m = σ_max([T_m; β_m e_mᵀ]) (step 4), from the m×m Gram matrix TᵀT + β_m² e e ᵀ.

    Example:
        >>> alpha = np.array([2.0, 2.0])  # T = [[2, 1], [1, 2]], eigenvalues 1 and 3
        >>> norm_lower(alpha, np.array([1.0, 0.0]))  # breakdown: ρ = max|θ|
        3.0
        >>> round(norm_lower(alpha, np.array([1.0, 1.0])), 6)  # √((11 + √65)/2)
        3.087253
    """
    m = len(alpha)
    T = np.diag(alpha)
    if m > 1:
        T += np.diag(beta[: m - 1], 1) + np.diag(beta[: m - 1], -1)
    G = T @ T
    G[m - 1, m - 1] += beta[m - 1] ** 2
    return float(math.sqrt(max(np.linalg.eigvalsh(G)[-1], 0.0)))


class NormBound:
    """The step-3 bound for one Lanczos state: ``exceeds(x)`` and ``high()``.

    Args:
        theta, S: Ritz values (ascending) and T's eigenvectors.
        t: start radius; breakdown: whether β_m = 0 (invariant Krylov space).

    Example:
        >>> alpha = np.array([2.0, 2.0])
        >>> theta, S = tridiag_eig(alpha, np.array([1.0, 0.0]))
        >>> NormBound(theta, S, start_radius(2, 0.05), breakdown=True).high()
        3.0
        >>> theta, S = tridiag_eig(alpha, np.array([1.0, 1.0]))
        >>> b = NormBound(theta, S, start_radius(1000, 0.05), breakdown=False)
        >>> round(b.high(), 4), b.exceeds(3.0), b.exceeds(1000.0)  # two steps: loose
        (506.6265, False, True)
    """

    def __init__(self, theta: np.ndarray, S: np.ndarray, t: float, breakdown: bool):
        self.top = float(np.abs(theta).max())
        self.breakdown = breakdown
        self.log_t = math.log(t)
        m = len(theta)
        w = S[0] ** 2
        order = np.argsort(-np.abs(theta), kind="stable")
        J = min(_J_MAX, m - 1)
        th = theta[order]  # by decreasing magnitude; S_j = th[:j]
        wo = w[order]
        self.roots = th[:J]
        j = np.arange(J + 1)
        # hull of th[j:], for every j
        self.lo = np.minimum.accumulate(th[::-1])[::-1][: J + 1]
        self.hi = np.maximum.accumulate(th[::-1])[::-1][: J + 1]
        k = m - 1 - j
        k = np.where(self.hi > self.lo, k, 0)
        self.k = k
        width = np.where(self.hi > self.lo, self.hi - self.lo, 1.0)
        self.width = width
        # log|Π_{s<j} (θ_i − th_s)| for every i (rows) and j (cols): prefix sums
        D = np.log(np.abs(th[:, None] - self.roots[None, :]) + 1e-300)  # (m, J)
        P = np.concatenate([np.zeros((m, 1)), np.cumsum(D, axis=1)], axis=1)  # (m, J+1)
        y = (2.0 * th[:, None] - self.lo[None, :] - self.hi[None, :]) / width[None, :]
        C = np.abs(np.cos(k[None, :] * np.arccos(np.clip(y, -1.0, 1.0))))
        lw = np.log(wo + 1e-300)[:, None] + 2.0 * (P + np.log(C + 1e-300))
        lw = np.where(np.arange(m)[:, None] >= j[None, :], lw, -np.inf)  # i ∉ S_j
        mx = lw.max(axis=0)
        self.logN = 0.5 * (mx + np.log(np.exp(lw - mx[None, :]).sum(axis=0)))

    def _f(self, x: float) -> float:
        """max_j min_± [log t + log|p_j(±x)| − log N_j]; ≥ 0 means x ≥ high."""
        s = np.array([x, -x])
        L = np.log(np.abs(s[:, None] - self.roots[None, :]) + 1e-300)  # (2, J)
        P = np.concatenate([np.zeros((2, 1)), np.cumsum(L, axis=1)], axis=1)  # (2, J+1)
        y = (2.0 * s[:, None] - self.lo[None, :] - self.hi[None, :]) / self.width[None, :]
        a = np.arccosh(np.maximum(np.abs(y), 1.0))
        cheb = self.k * a + np.log1p(np.exp(-2.0 * self.k * a)) - math.log(2.0)
        v = self.log_t - self.logN[None, :] + P + cheb
        return float(v.min(axis=0).max())

    def exceeds(self, x: float) -> bool:
        """Whether x is at least the bound (so ‖M‖₂ ≤ x on the event E)."""
        if self.breakdown:
            return x >= self.top
        return x >= self.top and self._f(x) >= 0.0

    def high(self, rel: float = 1e-12) -> float:
        """The bound itself (bisection on log x, to relative precision ``rel``, rounded up)."""
        if self.breakdown or self.top == 0.0:
            return self.top
        lo = self.top
        if self._f(lo) >= 0.0:
            return lo
        if len(self.roots) == 0 and not self.k.any():
            return math.inf  # one step: p is a constant, nothing is excluded
        factor = 2.0
        hi = factor * lo
        while self._f(hi) < 0.0:
            lo, factor = hi, factor * factor
            hi = lo * factor
            if hi > 1e300:
                return math.inf
        while hi - lo > rel * hi:
            mid = math.sqrt(lo * hi)
            if self._f(mid) >= 0.0:
                hi = mid
            else:
                lo = mid
        return hi
