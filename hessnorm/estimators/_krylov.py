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
3. The best polynomial. For a fixed x the smallest N(p) over p with p(x) = 1 and
   degree ≤ m − 1 is 1/√K_m(x), where K_m(x) = Σ_{k<m} φ_k(x)² is the Christoffel
   function of the discrete measure Σ_i w_i δ_{θ_i} and φ_k its orthonormal
   polynomials (Szegő, Orthogonal Polynomials, §3.1). Those are the Lanczos
   polynomials: φ_0 = 1, β_k φ_k(x) = (x − α_{k−1}) φ_{k−1}(x) − β_{k−1} φ_{k−2}(x),
   read off T_m with no eigen-decomposition. So on E, t²·K_m(λ*) ≤ 1: every x with
   t²·K_m(x) > 1 is excluded. The roots of every φ_k lie inside [min θ, max θ] (they
   are the Ritz values of T_k), so K_m(±x) increases with x ≥ max|θ|, and
   high := the largest x ≥ max|θ| with t²·K_m(x) ≤ 1 or t²·K_m(−x) ≤ 1 is found by
   bisection; ‖M‖₂ = |λ*| ≤ high on E. Being optimal over all polynomials, it is at
   least as tight as any fixed choice: the Chebyshev polynomial on the Ritz hull
   gives the gap-free Kuczyński–Woźniakowski rate
   ‖M‖₂ ≲ max|θ|·(1 + (ln(2/t))²/(2(m − 1)²)), and Chebyshev polynomials deflated at
   the outlying Ritz values give geometric convergence in the gap; K_m beats both.
   At an exact breakdown (invariant Krylov space) E implies that λ* is a Ritz value,
   so high = max|θ|.
4. Lower end (deterministic): ρ_m = σ_max([T_m; β_m e_mᵀ]) = max_{y∈range Q_m}
   ‖My‖/‖y‖ ≤ ‖M‖₂, and ρ_m ≥ max|θ_i|.

Rounding. The bounds hold for the operator the HVPs actually apply, M̃; with
‖M̃ − M‖₂ ≤ η‖M‖₂, ‖M‖₂ ∈ [ρ_m/(1 + η), high/(1 − η)]. η is the caller's
estimate of the HVP's relative error (see :func:`rounding_slack`).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.linalg import eig_banded, eigh_tridiagonal, eigvalsh_tridiagonal
from torch import Tensor

__all__ = ["start_radius", "rounding_slack", "tridiag_eig", "norm_lower", "KrylovBound", "ritz"]


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
    """ρ_m = σ_max([T_m; β_m e_mᵀ]) (step 4): √ of the top eigenvalue of TᵀT + β_m² e eᵀ.

    That Gram matrix is pentadiagonal, so only its largest eigenvalue is computed from
    the banded form (LAPACK ``dsbevx``), O(m²) instead of a dense O(m³) solve.

    Example:
        >>> alpha = np.array([2.0, 2.0])  # T = [[2, 1], [1, 2]], eigenvalues 1 and 3
        >>> round(norm_lower(alpha, np.array([1.0, 0.0])), 12)  # breakdown: ρ = max|θ|
        3.0
        >>> round(norm_lower(alpha, np.array([1.0, 1.0])), 6)  # √((11 + √65)/2)
        3.087253
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
    top = eig_banded(
        ab, eigvals_only=True, select="i", select_range=(m - 1, m - 1), check_finite=False
    )[0]
    return float(math.sqrt(max(top, 0.0)))


class KrylovBound:
    """The step-3 bound for one Lanczos state: ``exceeds(x)`` and ``high()``.

    Cost: O(m) per point x (the three-term recurrence), no eigen-decomposition.

    Args:
        alpha, beta: T_m's diagonal (m,) and off-diagonal (``beta[:m-1]``; a last
            entry, the residual coupling, is ignored).
        t: start radius (:func:`start_radius`); breakdown: whether β_m = 0.
        floor: a known lower bound of ‖M‖₂ that is ≥ max|θ| (e.g. :func:`norm_lower`),
            where the search starts; default max|θ| (one eigenvalue solve).

    Example:
        >>> alpha = np.array([2.0, 2.0])  # T = [[2, 1], [1, 2]], eigenvalues 1 and 3
        >>> round(KrylovBound(alpha, np.array([1.0, 0.0]), start_radius(2, 0.05), True).high(), 12)
        3.0
        >>> b = KrylovBound(alpha, np.array([1.0, 1.0]), start_radius(1000, 0.05), False)
        >>> round(b.top, 12), round(b.high(), 4), b.exceeds(3.0), b.exceeds(1000.0)  # loose
        (3.0, 506.6255, False, True)
    """

    def __init__(self, alpha, beta, t: float, breakdown: bool, floor: float | None = None):
        self.a = np.asarray(alpha, dtype=np.float64)
        self.m = len(self.a)
        self.b = np.asarray(beta, dtype=np.float64)[: max(self.m - 1, 0)]
        self.lim = 1.0 / (t * t)
        self._a, self._b = self.a.tolist(), self.b.tolist()  # plain floats for the hot path
        self.breakdown = breakdown
        if floor is None:
            if self.m == 1:
                floor = abs(float(self.a[0]))
            else:
                ends = eigvalsh_tridiagonal(
                    self.a, self.b, select="i", select_range=(0, self.m - 1)
                )
                floor = float(np.abs(ends).max())
        self.top = float(floor)

    def exceeds(self, x: float) -> bool:
        """Whether x is at least the bound (so ‖M‖₂ ≤ x on the event E)."""
        if x < self.top:
            return False
        if self.breakdown:
            return True
        return self.m > 1 and self._excluded_at(x) and self._excluded_at(-x)

    def _excluded_at(self, z: float) -> bool:
        """t²·K_m(z) > 1 for one point, in plain floats (the stopping rule's hot path)."""
        a, b, lim = self._a, self._b, self.lim
        p_prev, p, total = 0.0, 1.0, 1.0
        for k in range(self.m - 1):
            coupling = b[k - 1] * p_prev if k > 0 else 0.0
            p_prev, p = p, ((z - a[k]) * p - coupling) / b[k]
            total += p * p
            if not total <= lim:  # past the limit (or overflowed): excluded
                return True
        return False

    def high(self, rel: float = 1e-12) -> float:
        """The bound itself, to relative precision ``rel``, rounded up.

        Bisection on log x with the scalar recurrence (early exit once a point is
        excluded): O(m·log(1/rel)) flops.
        """
        if self.breakdown or self.top == 0.0:
            return self.top
        if self.m == 1:
            return math.inf  # p is a constant: nothing is excluded
        lo = self.top
        if self.exceeds(lo):
            return lo
        hi = 2.0 * lo
        while not self.exceeds(hi):
            lo, hi = hi, hi * hi / lo  # square the ratio each time
            if hi > 1e300:
                return math.inf
        # invariant: lo is not excluded, hi is; exclusion is monotone in x ≥ top
        while hi - lo > rel * hi:
            mid = math.sqrt(lo * hi)
            if self.exceeds(mid):
                hi = mid
            else:
                lo = mid
        return hi


def ritz(alpha: Tensor, beta: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Ritz values (ascending), eigenvectors of T and residual norms β_m |s_m|, float64.

    Example:
        >>> theta, S, resid = ritz(torch.tensor([2.0, 2.0]), torch.tensor([1.0, 0.5]))
        >>> theta.tolist(), S.abs().round(decimals=4).tolist()  # T = [[2, 1], [1, 2]]
        ([1.0, 3.0], [[0.7071, 0.7071], [0.7071, 0.7071]])
        >>> resid.round(decimals=4).tolist(), resid.dtype  # β_2 = 0.5 times |s_2| = 1/√2
        ([0.3536, 0.3536], torch.float64)
    """
    a = alpha.double().cpu().numpy()
    b = beta.double().cpu().numpy()
    theta, S = tridiag_eig(a, b)
    resid = abs(b[-1]) * np.abs(S[-1])
    return (
        torch.from_numpy(theta),
        torch.from_numpy(np.ascontiguousarray(S)),
        torch.from_numpy(resid),
    )
