import pytest
import torch

from hessnorm.errors import ConfigError
from hessnorm.estimators.diagonal import Diagonal, diagonal, diagonal_share
from hessnorm.rotation import RandPerm
from hessnorm.testing import make_problem


def _dominant(d=200, eps=0.003, seed=3):
    """A diagonal of size 1..3 (mixed signs) plus a small dense symmetric perturbation."""
    g = torch.Generator().manual_seed(seed)
    a = torch.rand(d, generator=g, dtype=torch.float64) * 2 + 1
    a = a * torch.where(torch.rand(d, generator=g) < 0.3, -1.0, 1.0).double()
    E = torch.randn(d, d, generator=g, dtype=torch.float64) * eps
    return torch.diag(a) + (E + E.T) / 2


def _share(H):
    return float(H.diagonal().abs().sum() / H.abs().sum())


@pytest.mark.parametrize("name", ["mlp", "conv_bn", "transformer"])
def test_exact_mode_equals_dense_diagonal(problems, name):
    op, H = problems[name]
    D = diagonal(op, exact=True, chunk_size=256, progress=False)
    assert D.exact and D.n_hvp == op.d
    err = (D.values - H.diagonal()).abs()
    assert err.max() < 1e-12, err.topk(5)
    assert torch.equal(D.std_error, torch.zeros(op.d, dtype=torch.float64))
    assert set(D.per_tensor) == set(op.param_names)
    for name, s in op.param_slices.items():
        assert abs(D.per_tensor[name][0] - float(H.diagonal()[s].sum())) < 1e-12
    est = D.to_estimate()
    assert est.low == est.high == pytest.approx(float(H.trace()))
    assert list(D.to_frame().columns) == ["tensor", "diag_sum", "std_error"]


def test_exact_chosen_when_d_small():
    H = _dominant(d=30)
    assert diagonal(H, n=30, progress=False).exact and not diagonal(H, n=29, progress=False).exact


@pytest.mark.parametrize("name", ["mlp", "conv_bn", "transformer"])
def test_stated_standard_errors_match_actual_errors(problems, name):
    """z = (estimate - truth) / stated se has unit variance (within 20%) and mean ~ 0."""
    _, H = problems[name]
    truth = H.diagonal()
    z = torch.cat(
        [diagonal(H, n=100, seed=s, exact=False, progress=False).z_scores(truth) for s in range(4)]
    )
    assert 0.8 < float(z.var()) < 1.2, float(z.var())
    assert abs(float(z.mean())) < 0.1


def test_per_tensor_sums_and_trace_estimate(problems):
    op, H = problems["mlp"]
    D = diagonal(op, n=64, seed=1, exact=False, progress=False)
    assert isinstance(D, Diagonal) and D.n_hvp == 64 and not D.exact
    for name, sl in op.param_slices.items():
        assert abs(D.per_tensor[name][0] - float(D.values[sl].sum())) < 1e-9
    est = D.to_estimate()
    assert est.name == "diagonal" and est.confidence == 0.95
    # tr(H) from the diagonal probes is Hutchinson's estimate: within its stated interval here
    assert est.covers(float(H.trace())), (est, float(H.trace()))
    same = diagonal(H, n=64, seed=1, exact=False, chunk_size=7, progress=False)
    assert torch.allclose(same.values, D.values, atol=1e-10)


def test_share_covers_diagonal_dominant_and_rotated():
    H = _dominant()
    R = RandPerm(H.shape[0], seed=1).matrix()
    Hr = R.T @ H @ R
    for M, kind in ((H, "dominant"), (Hr, "rotated")):
        truth = _share(M)
        ests = [diagonal_share(M, seed=s, exact_diagonal=False, progress=False) for s in range(10)]
        assert sum(e.covers(truth) for e in ests) >= 9, (kind, truth, [str(e) for e in ests])
        assert all(0.0 <= e.low <= e.value <= e.high <= 1.0 for e in ests)
        if kind == "dominant":
            assert truth > 0.8 and max(e.high - e.low for e in ests) < 0.3
        else:
            assert truth < 0.1 and max(e.high for e in ests) < 0.3  # rotation moved mass off
    exact_share = diagonal_share(H, exact_diagonal=True, progress=False)
    assert exact_share.details["exact_diagonal"] and exact_share.covers(_share(H))


def test_share_on_rotated_operator_and_per_tensor():
    op = make_problem("mlp")
    from hessnorm.estimators import exact

    H = exact.hessian(op)
    rot = op.rotated(RandPerm(op.d, seed=2))
    Hr = exact.hessian(rot)
    e, er = diagonal_share(op, seed=0, progress=False), diagonal_share(rot, seed=0, progress=False)
    assert e.covers(_share(H)) and er.covers(_share(Hr))
    assert set(e.details["per_tensor"]) == set(op.param_names)
    assert list(er.details["per_tensor"]) == ["all"]
    assert e.n_hvp == 250


def test_uninformative_share_has_wide_interval():
    """With 4 probes on a rotated (noise-dominated) Hessian the interval must say so."""
    H = _dominant()
    R = RandPerm(H.shape[0], seed=1).matrix()
    Hr = R.T @ H @ R
    est = diagonal_share(Hr, n_diag=4, seed=0, exact_diagonal=False, progress=False)
    assert est.covers(_share(Hr))
    assert est.high > 4 * est.value and est.low < 0.2 * est.value, str(est)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda H: diagonal(H, n=1, exact=False, progress=False), "needs n >= 2"),
        (lambda H: diagonal(H, chunk_size=0, progress=False), "chunk_size must be"),
        (lambda H: diagonal_share(H, confidence=0.0, progress=False), "confidence must lie"),
    ],
)
def test_errors(call, match):
    with pytest.raises(ConfigError, match=match):
        call(_dominant(d=10))
