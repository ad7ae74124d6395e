import pytest
import torch

from hessnorm.errors import ConfigError, ShapeError
from hessnorm.estimators import exact
from hessnorm.rotation import ExpSkew, Identity, RandPerm, from_spec

EYE = lambda d: torch.eye(d, dtype=torch.float64)  # noqa: E731


@pytest.mark.parametrize("d", [1, 2, 97, 513, 1009, 4096])
def test_randperm_is_orthogonal(d):
    R = RandPerm(d, depth=2, seed=3).matrix()
    err = (R.T @ R - EYE(d)).abs().max().item()
    assert err < 1e-12, f"d={d}: max |RᵀR − I| = {err}"
    assert not torch.allclose(R, EYE(d)) or d == 1


def test_randperm_apply_T_inverts_and_batches():
    R = RandPerm(1009, depth=3, seed=1)
    X = torch.randn(4, 1009, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    Y = R.apply(X)
    assert torch.allclose(R.apply_T(Y), X, atol=1e-12)
    assert torch.allclose(R.apply(X[2]), Y[2], atol=1e-13)
    M = R.matrix()
    assert torch.allclose(Y, X @ M.T, atol=1e-12)
    assert torch.allclose(R.apply_T(X), X @ M, atol=1e-12)


def test_randperm_same_seed_same_rotation_and_spec():
    x = torch.randn(500, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    a, b, c = RandPerm(500, seed=7), from_spec(RandPerm(500, seed=7).spec), RandPerm(500, seed=8)
    assert torch.equal(a.apply(x), b.apply(x))
    assert not torch.allclose(a.apply(x), c.apply(x))
    assert torch.allclose(a.apply(x.float()).double(), a.apply(x), atol=1e-5)


def test_randperm_preserves_norm_at_ten_million():
    d = 10**7
    R = RandPerm(d, depth=2, seed=0)
    x = torch.randn(d, generator=torch.Generator().manual_seed(1))
    y = R.apply(x)
    rel = abs(y.double().norm() / x.double().norm() - 1).item()
    assert rel < 1e-5, rel  # float32 rounding over 10⁷ entries
    assert (R.apply_T(y) - x).abs().max().item() < 1e-4
    assert (y - x).abs().max().item() > 0.1  # it actually moved


def test_expskew_orthogonal_and_t0_identity():
    R = ExpSkew(50, t=0.1, seed=0).matrix()
    assert (R.T @ R - EYE(50)).abs().max().item() < 1e-12
    assert torch.allclose(ExpSkew(50, t=0.0).matrix(), EYE(50))
    e = ExpSkew(50, t=0.1, seed=0)
    x = torch.randn(3, 50, dtype=torch.float64)
    assert torch.allclose(e.apply_T(e.apply(x)), x, atol=1e-12)
    assert torch.equal(from_spec(e.spec).matrix(), e.matrix())


def test_identity():
    x = torch.randn(2, 6)
    assert torch.equal(Identity(6).apply(x), x) and torch.equal(Identity(6).apply_T(x), x)
    assert from_spec(Identity(6).spec).d == 6


def test_rotated_operator_matches_dense(problems):
    op, H = problems["mlp"]
    R = RandPerm(op.d, depth=2, seed=5)
    M = R.matrix()
    rot = op.rotated(R)
    V = torch.randn(3, op.d, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    expected = R.apply_T(R.apply(V) @ H)  # Rᵀ(H(Rv)), H symmetric
    got = rot.hvp(V)
    assert torch.allclose(got, expected, rtol=1e-9, atol=1e-10), (got - expected).abs().max()
    assert torch.allclose(expected, V @ (M.T @ H @ M), atol=1e-10)
    # spectrum is rotation invariant, (1,1)-norm is not
    Hr = M.T @ H @ M
    assert abs(exact.spectral_norm(Hr) - exact.spectral_norm(H)) < 1e-9
    assert exact.l11_norm(Hr) > 1.05 * exact.l11_norm(H) or exact.l11_norm(
        Hr
    ) < 0.95 * exact.l11_norm(H)


def test_errors():
    with pytest.raises(ShapeError, match=r"acts on \(5,\)"):
        RandPerm(5).apply(torch.zeros(4))
    with pytest.raises(ShapeError, match="floating"):
        RandPerm(5).apply(torch.zeros(5, dtype=torch.long))
    with pytest.raises(ConfigError, match="positive integer"):
        RandPerm(0)
    with pytest.raises(ConfigError, match="depth"):
        RandPerm(5, depth=0)
    with pytest.raises(ConfigError, match="unknown rotation kind"):
        from_spec({"kind": "Spin"})


def test_randperm_int32_indices_are_the_int64_permutation():
    """int32 indices (half the memory) give exactly the permutation and rotation as before."""
    from hessnorm.rotation import haar_orthogonal

    d = 100_003
    R = RandPerm(d, depth=2, seed=4)
    assert all(p.dtype == torch.int32 for p in R._perms)
    g = torch.Generator().manual_seed(4)
    for layer in range(2):
        assert torch.equal(R._perms[layer].long(), torch.randperm(d, generator=g))
        for shape, qs in zip(R.parts, R._mats[layer]):
            for s, q in zip(shape, qs):
                assert torch.equal(q, haar_orthogonal(s, g))
    x = torch.randn(2, d, dtype=torch.float64)
    y = R.apply(x)
    assert torch.allclose(R.apply_T(y), x, atol=1e-12)
    assert torch.allclose(y.norm(dim=1), x.norm(dim=1), rtol=1e-12)
    R.apply(x.float())  # a second dtype on the same device shares the indices
    assert sum(1 for key in R._cache if key[0] == "perms") == 1
