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
from scipy.linalg import eig_banded, eigh_tridiagonal

__all__ = ["start_radius", "rounding_slack", "tridiag_eig", "norm_lower", "NormBound"]

_J_MAX = 8  # deflation depths tried (each costs one vectorised evaluation)


def start_radius(n: int, delta: float) -> float:
    """t with P(|⟨v, u⟩| < t) ≤ δ for v uniform on the unit sphere of R^n (step 1)."""
    if n <= 1:
        return 1.0
    return min(1.0, delta / math.sqrt(2.0 * n / math.pi))


def rounding_slack(n: int, eps: float) -> float:
    """Relative HVP error η assumed for rounding: eps·max(10, √n).

    Each HVP entry accumulates O(n) rounded products; with blocked/pairwise
    summation and independent rounding errors the relative error is O(√n·eps) with
    high probability (Higham & Mary 2019, probabilistic rounding error analysis).
    The floor of 10·eps also covers treating β ≤ 10·eps·‖T‖ as a breakdown.
    """
    return eps * max(10.0, math.sqrt(n))


def tridiag_eig(alpha: np.ndarray, beta: np.ndarray):
    """Ritz values θ (ascending) and eigenvectors S of T (alpha diag, beta[:-1] off)."""
    m = len(alpha)
    if m == 1:
        return alpha.astype(np.float64).copy(), np.ones((1, 1))
    return eigh_tridiagonal(alpha, beta[: m - 1])


def norm_lower(alpha: np.ndarray, beta: np.ndarray) -> float:
    """ρ_m = σ_max([T_m; β_m e_mᵀ]) (step 4): √ of the top eigenvalue of TᵀT + β_m² e eᵀ.

    That Gram matrix is pentadiagonal, so only its largest eigenvalue is computed from
    the banded form (LAPACK ``dsbevx``), O(m²) instead of a dense O(m³) solve.

    Example:
        >>> round(norm_lower(np.array([3.0]), np.array([4.0])), 12)
        5.0
    """
    m = len(alpha)
    a = np.asarray(alpha, dtype=np.float64)
    b = np.asarray(beta, dtype=np.float64)
    if m == 1:
        return float(math.hypot(a[0], b[0]))
    off = b[: m - 1]
    ab = np.zeros((3, m))
    ab[2] = a * a  # main diagonal of T²
    ab[2, :-1] += off * off
    ab[2, 1:] += off * off
    ab[2, -1] += b[m - 1] ** 2
    ab[1, 1:] = off * (a[:-1] + a[1:])  # first super-diagonal
    ab[0, 2:] = off[:-1] * off[1:]  # second super-diagonal
    top = eig_banded(ab, eigvals_only=True, select="i", select_range=(m - 1, m - 1))[0]
    return float(math.sqrt(max(top, 0.0)))


class NormBound:
    """The step-3 bound for one Lanczos state: ``exceeds(x)`` and ``high()``.

    Args:
        theta, S: Ritz values (ascending) and T's eigenvectors.
        t: start radius; breakdown: whether β_m = 0 (invariant Krylov space).
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

    def _f(self, x) -> np.ndarray | float:
        """max_j min_± [log t + log|p_j(±x)| − log N_j]; ≥ 0 means x ≥ high.

        ``x`` may be a scalar or a 1-d array of points (evaluated in one pass).
        """
        xs = np.atleast_1d(np.asarray(x, dtype=np.float64))
        s = np.concatenate([xs, -xs])  # (2n,)
        L = np.log(np.abs(s[:, None] - self.roots[None, :]) + 1e-300)  # (2n, J)
        P = np.concatenate([np.zeros((len(s), 1)), np.cumsum(L, axis=1)], axis=1)
        y = (2.0 * s[:, None] - self.lo[None, :] - self.hi[None, :]) / self.width[None, :]
        a = np.arccosh(np.maximum(np.abs(y), 1.0))
        cheb = self.k * a + np.log1p(np.exp(-2.0 * self.k * a)) - math.log(2.0)
        v = self.log_t - self.logN[None, :] + P + cheb  # (2n, J+1)
        n = len(xs)
        out = np.minimum(v[:n], v[n:]).max(axis=1)
        return float(out[0]) if np.ndim(x) == 0 else out

    def exceeds(self, x: float) -> bool:
        """Whether x is at least the bound (so ‖M‖₂ ≤ x on the event E)."""
        if self.breakdown:
            return x >= self.top
        return x >= self.top and self._f(x) >= 0.0

    def high(self, rel: float = 1e-12) -> float:
        """The bound itself, to relative precision ``rel``, rounded up.

        A bracketing search on log x: 32 points per round in one vectorised
        evaluation, so each round shrinks the bracket 32-fold.
        """
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
        # invariant: f(lo) < 0 ≤ f(hi); f is increasing in x on [top, ∞)
        while hi - lo > rel * hi:
            grid = np.exp(np.linspace(math.log(lo), math.log(hi), 34)[1:-1])
            ok = self._f(grid) >= 0.0
            i = int(np.argmax(ok)) if ok.any() else len(grid)
            if i < len(grid):
                hi = float(grid[i])
            if i > 0:
                lo = float(grid[i - 1])
        return hi
