import math

import numpy as np
import pytest
import torch

from hessnorm.errors import ConfigError, TooLargeError
from hessnorm.estimators import exact
from hessnorm.estimators._krylov import KrylovBound, rounding_slack, start_radius, tridiag_eig
from hessnorm.estimators.lanczos import lanczos, spectral_norm, top_eigenpairs


def covers(est, truth, rel=1e-12):
    """Interval check up to rounding (HVP path and dense Hessian differ by ~1e-15)."""
    return est.low <= truth * (1 + rel) and truth * (1 - rel) <= est.high


# Upper bounds on the HVPs Lanczos needs for tol = 1e-4 at 99% confidence (seed 0 uses
# 15, 21, 15 with the Christoffel bound; 16, 23, 20 with the earlier deflated-Chebyshev
# family); a rise means the bound or the algorithm got weaker.
MAX_HVPS = {"mlp": 17, "conv_bn": 23, "transformer": 17}


@pytest.mark.parametrize("name", sorted(MAX_HVPS))
def test_spectral_norm_matches_exact(problems, name):
    op, H = problems[name]
    ev = exact.eigvalsh(H)
    truth = ev.abs().max().item()
    est = spectral_norm(op, tol=1e-4, progress=False)
    assert abs(est.value - truth) / truth < 1e-4
    assert covers(est, truth), (est, truth)
    assert (est.high - est.low) / est.low <= 1e-4 * (1 + 1e-9)
    assert 0 < est.confidence < 1 and est.confidence == 0.99
    assert est.n_hvp <= MAX_HVPS[name]
    assert est.details["converged"]
    # Ritz values lie inside the spectrum; the dominant end is converged.
    assert (
        ev[0].item() - 1e-12
        <= est.details["lambda_min"]
        <= est.details["lambda_max"]
        <= ev[-1].item() + 1e-12
    )
    dominant = "lambda_max" if ev[-1].abs() >= ev[0].abs() else "lambda_min"
    assert abs(abs(est.details[dominant]) - truth) < 1e-4 * truth
    again = spectral_norm(op, tol=1e-4, progress=False)
    assert again.value == est.value and again.n_hvp == est.n_hvp


def test_interval_shrinks_with_tol(problems):
    op, H = problems["mlp"]
    truth = exact.spectral_norm(H)
    loose = spectral_norm(op, tol=1e-2, progress=False)
    tight = spectral_norm(op, tol=1e-8, progress=False)
    assert loose.n_hvp < tight.n_hvp
    assert covers(loose, truth) and covers(tight, truth)
    assert abs(tight.value - truth) / truth < 1e-10
    assert (tight.high - tight.low) / tight.low <= 1e-8 * (1 + 1e-6)


def clustered(d=400, seed=0, shape="dense"):
    """Top eigenvalues 10, 9.99, −9.98 (relative gaps 1e-3), the rest uniform in [−8, 8].

    ``shape``: "dense" (random eigenvectors: strongly dependent rows), "banded"
    (tridiagonal, eigenvalues only approximately these: rows weakly dependent), or
    "low-rank" (the three outliers alone, rank 3).
    """
    g = torch.Generator().manual_seed(1000 + seed)
    U = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))[0]
    ev = torch.empty(d, dtype=torch.float64).uniform_(-8, 8, generator=g)
    ev[:3] = torch.tensor([10.0, 9.99, -9.98], dtype=torch.float64)
    if shape == "low-rank":
        ev[3:] = 0.0
    if shape == "banded":
        return (
            torch.diag(ev)
            + torch.diag(torch.full((d - 1,), 1e-3, dtype=torch.float64), 1)
            + (torch.diag(torch.full((d - 1,), 1e-3, dtype=torch.float64), -1))
        )
    return (U * ev) @ U.T


@pytest.mark.parametrize("shape", ["dense", "banded", "low-rank"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_clustered_spectrum_coverage(dtype, shape):
    """The 99% interval covers ‖H‖₂ (10 up to the band's 1e-3 coupling) for every one of
    20 seeds (≥ 95% required) and is tight: high/‖H‖₂ ≤ 1.01 (in fact ≤ 1 + 2·tol) at
    the default tol; on dense, banded and rank-3 Hessians."""
    H = clustered(shape=shape)
    truth = float(torch.linalg.eigvalsh(H).abs().max())
    H = H.to(dtype)
    hits, ratios = 0, []
    for seed in range(20):
        est = spectral_norm(H, seed=seed, progress=False)
        assert 0 < est.confidence < 1
        hits += est.low <= truth <= est.high
        ratios.append(est.high / truth)
        assert est.details["converged"]
    assert hits >= 19
    assert max(ratios) <= 1.01 and max(ratios) <= 1 + 2e-4


def test_upper_bound_is_the_random_start_bound():
    """Before convergence the upper end is wide but still valid; the gap-free part alone
    (j = 0) reproduces the Kuczyński–Woźniakowski rate and the rounding widens it."""
    H = clustered(seed=1)
    for m in (3, 6, 12):
        est = spectral_norm(H, max_iter=m, progress=False)
        assert est.n_hvp == m and not est.details["converged"]
        assert est.low <= 10.0 <= est.high
    # Gap-free bound: Ritz values uniform in [−1, 1] with equal weights. The Chebyshev
    # polynomial C_{m−1} is one candidate p with N(p) ≤ 1, so the optimal bound is at
    # most the closed form cosh(arccosh(1/t)/(m − 1)).
    a, b = _jacobi(np.linspace(-1.0, 1.0, 20), np.full(20, 1 / 20))
    t = start_radius(1000, 0.01)
    bound = KrylovBound(a, b, t, False)
    assert bound.top == pytest.approx(1.0, rel=1e-12)
    assert 1.0 < bound.high() <= math.cosh(math.acosh(1 / t) / 19) * (1 + 1e-9)


def _jacobi(nodes, weights):
    """(α, β) of the tridiagonal whose spectral measure at e₁ is Σ w_i δ_{x_i}: Lanczos on
    diag(nodes) from the start vector √w, with full re-orthogonalisation (numpy)."""
    D = np.asarray(nodes, dtype=np.float64)
    q = np.sqrt(np.asarray(weights, dtype=np.float64))
    q /= np.linalg.norm(q)
    Q, alpha, beta = [q], [], []
    for _ in range(len(D)):
        w = D * Q[-1]
        alpha.append(float(Q[-1] @ w))
        for _ in range(2):
            w = w - np.array(Q).T @ (np.array(Q) @ w)
        beta.append(float(np.linalg.norm(w)))
        if len(Q) == len(D):
            break
        Q.append(w / beta[-1])
    return np.array(alpha), np.array(beta)


@pytest.mark.parametrize("seed", range(5))
def test_krylov_bound_is_the_best_polynomial(seed):
    """t²·K_m(x) > 1 exactly when every polynomial p of degree < m with p(x) = 1 has
    Σ w_i p(θ_i)² < t²: K_m(x) = 1 / min_p Σ w_i p(θ_i)² (the Christoffel function),
    checked against a brute-force constrained least-squares fit over degree < m."""
    rng = np.random.default_rng(seed)
    m = 6
    theta = np.sort(rng.uniform(-2.0, 1.0, m))
    w = rng.dirichlet(np.ones(m))
    a, b = _jacobi(theta, w)
    top = float(np.abs(theta).max())
    V = np.polynomial.chebyshev.chebvander(theta / 3.0, m - 2)  # degree ≤ m − 2
    G = V.T @ (w[:, None] * V)

    def brute_k(x):  # 1 / min_p Σ w_i p(θ_i)² over p(x) = 1: a Lagrange-multiplier solve
        vx = np.polynomial.chebyshev.chebvander(np.array([x / 3.0]), m - 2)[0]
        return float(vx @ np.linalg.solve(G, vx))

    # K_{m−1} (degree ≤ m − 2; degree m − 1 could vanish on every node) from T's first
    # m − 1 rows, compared at ±x because the bound excludes x only when both sides are
    bound = KrylovBound(a[: m - 1], b[: m - 1], 1.0, False)
    for x in (top * 1.01, top * 1.3, top * 3.0):
        assert _christoffel(bound, x) == pytest.approx(min(brute_k(x), brute_k(-x)), rel=1e-8)


def _christoffel(bound, x):
    """min(K(±x)) read back from the bound's exclusion test by bisection on 1/t²."""
    lo, hi = 1e-12, 1e12
    for _ in range(200):
        mid = math.sqrt(lo * hi)
        bound.lim = mid
        if bound._excluded_at(x) and bound._excluded_at(-x):
            lo = mid
        else:
            hi = mid
    return lo


def test_float32_operator_float64_ritz():
    g = torch.Generator().manual_seed(0)
    A = torch.randn(300, 300, dtype=torch.float64, generator=g)
    H = (A + A.T) / 2
    truth = exact.spectral_norm(H)
    est = spectral_norm(H.float(), tol=1e-4, progress=False)
    assert abs(est.value - truth) / truth < 1e-4 and est.covers(truth)
    assert est.details["rounding"] == pytest.approx(torch.finfo(torch.float32).eps * math.sqrt(300))


def test_rounding_limited():
    """A slack wider than tol stops at the Krylov part ≤ tol/4 and says so."""
    H = torch.diag(torch.linspace(-1, 3, 50, dtype=torch.float64))
    est = spectral_norm(H, tol=1e-4, hvp_rel_error=1e-3, progress=False)
    assert est.details["rounding_limited"] and est.covers(3.0)
    assert est.high / est.low == pytest.approx((1 + 1e-3) / (1 - 1e-3), rel=2e-4)


def test_breakdown_gives_exact_values():
    H = torch.diag(torch.tensor([3.0, -5.0, 3.0, 3.0, 1.0], dtype=torch.float64))
    est = spectral_norm(H, progress=False)
    assert est.details["breakdown"] and est.n_hvp == 3  # three distinct eigenvalues
    assert est.high / est.low < 1 + 1e-12 and est.covers(5.0)
    zero = spectral_norm(torch.zeros(4, 4, dtype=torch.float64), progress=False)
    assert zero.value == 0.0 and zero.high == 0.0 and zero.n_hvp == 1


def test_basis_spills_off_device_with_same_result(problems):
    """A zero on-device budget puts every vector in CPU chunks: the same arithmetic."""
    op, _ = problems["mlp"]
    a = lanczos(op, max_iter=20, seed=3, keep_basis=True)
    b = lanczos(op, max_iter=20, seed=3, keep_basis=True, basis_budget_bytes=0, basis_device="cpu")
    assert b.basis.disk is None and b.basis.spilled == 20
    assert torch.allclose(a.alpha, b.alpha, rtol=1e-12, atol=1e-14)
    assert torch.allclose(a.basis.dense(), b.basis.dense(), atol=1e-12)
    Q = a.basis.dense()
    assert torch.allclose(Q @ Q.T, torch.eye(20, dtype=Q.dtype), atol=1e-12)


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_long_run_stays_orthonormal(dtype, tol):
    """120 steps with one Gram–Schmidt pass per step (a second only on the DGKS test)
    keep the basis orthonormal to rounding, and T's extreme Ritz values are H's."""
    g = torch.Generator().manual_seed(7)
    A = torch.randn(400, 400, generator=g, dtype=torch.float64)
    H = A + A.T
    st = lanczos(H.to(dtype), max_iter=120, seed=1, keep_basis=True)
    Q = st.basis.dense().double()
    st.basis.close()
    assert float((Q @ Q.T - torch.eye(120, dtype=Q.dtype)).abs().max()) < tol
    theta = torch.linalg.eigvalsh(
        torch.diag(st.alpha) + torch.diag(st.beta[:-1], 1) + torch.diag(st.beta[:-1], -1)
    )
    ev = torch.linalg.eigvalsh(H)
    # converged ends agree up to the HVP rounding the bounds allow for, η = eps·max(10, √d)
    eta = rounding_slack(400, torch.finfo(dtype).eps) * float(ev.abs().max())
    assert abs(float(theta[-1] - ev[-1])) < eta and abs(float(theta[0] - ev[0])) < eta


def _dense_problem(d=300, seed=0):
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(d, d, generator=g, dtype=torch.float64)
    return (A + A.T) / 2 + torch.diag(torch.linspace(0, 30, d, dtype=torch.float64))


@pytest.mark.parametrize("budget_rows", [0, 5])
def test_basis_spills_to_disk_with_same_result(tmp_path, budget_rows):
    """A tiny budget sends the basis to a temporary file: same T, estimate and vectors."""
    H = _dense_problem()
    d = H.shape[0]
    kw = dict(max_iter=60, seed=1, keep_basis=True)
    a = lanczos(H, **kw)
    b = lanczos(H, **kw, basis_budget_bytes=budget_rows * d * 8, basis_device=tmp_path)
    assert b.basis.disk is not None and b.basis.spilled == 60 - budget_rows
    assert list(tmp_path.iterdir()) == []  # the file is unlinked at once
    read, written = b.basis.io_bytes
    assert written == (60 - budget_rows) * d * 8 and read > 0
    assert torch.allclose(a.alpha, b.alpha, rtol=1e-12, atol=1e-12)
    assert torch.allclose(a.beta, b.beta, rtol=1e-10, atol=1e-12)
    Qa, Qb = a.basis.dense(), b.basis.dense()
    assert torch.allclose(Qa, Qb, atol=1e-10)
    assert torch.allclose(Qb @ Qb.T, torch.eye(60, dtype=Qb.dtype), atol=1e-12)
    c = torch.randn(3, 60, dtype=torch.float64)
    assert torch.allclose(a.basis.combine(c), b.basis.combine(c), atol=1e-10)
    b.basis.close()
    assert b.basis.disk is None

    ea = spectral_norm(H, tol=1e-6, progress=False)
    eb = spectral_norm(H, tol=1e-6, progress=False, basis_budget_bytes=budget_rows * d * 8)
    assert ea.n_hvp == eb.n_hvp
    assert eb.value == pytest.approx(ea.value, rel=1e-12)
    assert eb.high == pytest.approx(ea.high, rel=1e-9)
    pa = top_eigenpairs(H, 3, progress=False)
    pb = top_eigenpairs(H, 3, progress=False, basis_budget_bytes=budget_rows * d * 8)
    assert pa.n_hvp == pb.n_hvp
    assert torch.allclose(pa.values, pb.values, rtol=1e-12)
    assert torch.allclose(pa.vectors, pb.vectors, atol=1e-8)
    ev = torch.linalg.eigvalsh(H)
    top = ev.abs().argsort(descending=True)[:3]
    assert ((pb.values - ev[top]).abs() <= pb.residuals + 1e-12).all()
    assert torch.allclose(
        torch.linalg.norm(H @ pb.vectors.T - pb.vectors.T * pb.values, dim=0),
        pb.residuals,
        rtol=1e-6,
        atol=1e-10,
    )


def test_basis_spill_full_disk_is_a_clear_error(monkeypatch, tmp_path):
    def full(fd, off, n):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("os.posix_fallocate", full)
    with pytest.raises(TooLargeError, match="TMPDIR"):
        lanczos(_dense_problem(50), max_iter=5, basis_budget_bytes=0, basis_device=tmp_path)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "name, H, values",
    [
        ("zero", torch.zeros(6, 6, dtype=torch.float64), [0.0, 0.0, 0.0]),
        ("identity", torch.eye(6, dtype=torch.float64), [1.0, 1.0, 1.0]),
        ("rank-1", None, [4.0, 0.0, 0.0]),
    ],
)
def test_top_eigenpairs_returns_k_pairs_after_breakdown(name, H, values):
    if H is None:
        u = torch.arange(1.0, 7.0, dtype=torch.float64)
        u = u / u.norm()
        H = 4.0 * torch.outer(u, u)
    pairs = top_eigenpairs(H, 3, progress=False)
    assert len(pairs.values) == 3 and pairs.vectors.shape == (3, 6)
    assert torch.allclose(pairs.values, torch.tensor(values, dtype=torch.float64), atol=1e-12)
    assert pairs.restarts >= 1 and pairs.converged and pairs.n_hvp <= 4
    V = pairs.vectors
    assert torch.allclose(V @ V.T, torch.eye(3, dtype=V.dtype), atol=1e-12)
    for i in range(3):
        assert float((H @ V[i] - pairs.values[i] * V[i]).norm()) < 1e-12


def test_top_eigenpairs(problems):
    op, H = problems["conv_bn"]
    ev, U = torch.linalg.eigh(H)
    order = torch.argsort(ev.abs(), descending=True)
    pairs = top_eigenpairs(op, 3, tol=1e-6, progress=False)
    assert torch.allclose(pairs.values, ev[order[:3]], rtol=1e-8)
    for i in range(3):
        u = U[:, order[i]]
        assert abs(abs(float(pairs.vectors[i] @ u)) - 1) < 1e-6
        assert float((H @ pairs.vectors[i] - pairs.values[i] * pairs.vectors[i]).norm()) < 1e-5
    sa = top_eigenpairs(H, 2, which="SA", progress=False)
    assert torch.allclose(sa.values, ev[:2], rtol=1e-6)
    la = top_eigenpairs(H, 2, which="LA", progress=False)
    assert torch.allclose(la.values, ev[-2:].flip(0), rtol=1e-6)


def test_tridiag_eig_one_step():
    theta, S = tridiag_eig(torch.tensor([2.5]).numpy(), torch.tensor([0.0]).numpy())
    assert theta.tolist() == [2.5] and S.tolist() == [[1.0]]


def test_errors():
    H = torch.eye(3, dtype=torch.float64)
    with pytest.raises(ConfigError, match="tol must be positive"):
        spectral_norm(H, tol=0)
    with pytest.raises(ConfigError, match="confidence must lie in"):
        spectral_norm(H, confidence=1.0)
    with pytest.raises(ConfigError, match="hvp_rel_error must lie in"):
        spectral_norm(H, hvp_rel_error=0.7)
    with pytest.raises(ConfigError, match="max_iter must be at least 1"):
        lanczos(H, max_iter=0)
    with pytest.raises(ConfigError, match="k must be between 1 and d = 3"):
        top_eigenpairs(H, 4)
    with pytest.raises(ConfigError, match="which must be one of"):
        top_eigenpairs(H, 1, which="XX")
    with pytest.raises(TypeError, match="expected a Hessian operator"):
        spectral_norm([1, 2])
