import pytest
import torch

from hessnorm.errors import ConfigError
from hessnorm.estimators import exact
from hessnorm.estimators.lanczos import spectral_norm, top_eigenpairs


# HVPs Lanczos needs to reach tol = 1e-4 from seed 0 (deterministic; a change means
# the algorithm or the operator changed).
def covers(est, truth, rel=1e-12):
    """Interval check up to rounding (HVP path and dense Hessian differ by ~1e-15)."""
    return est.low <= truth * (1 + rel) and truth * (1 - rel) <= est.high


EXPECTED_HVPS = {"mlp": 12, "conv_bn": 16, "transformer": 13}


@pytest.mark.parametrize("name", sorted(EXPECTED_HVPS))
def test_spectral_norm_matches_exact(problems, name):
    op, H = problems[name]
    ev = exact.eigvalsh(H)
    truth = ev.abs().max().item()
    est = spectral_norm(op, tol=1e-4, progress=False)
    assert abs(est.value - truth) / truth < 1e-4
    assert covers(est, truth), (est, truth)
    assert (est.high - est.low) / est.low < 1e-4
    assert est.n_hvp == EXPECTED_HVPS[name]
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


def test_float32_operator_float64_ritz():
    g = torch.Generator().manual_seed(0)
    A = torch.randn(300, 300, dtype=torch.float64, generator=g)
    H = (A + A.T) / 2
    truth = exact.spectral_norm(H)
    est = spectral_norm(H.float(), tol=1e-4, progress=False)
    assert abs(est.value - truth) / truth < 1e-4


def test_breakdown_gives_exact_values():
    H = torch.diag(torch.tensor([3.0, -5.0, 3.0, 3.0, 1.0], dtype=torch.float64))
    est = spectral_norm(H, progress=False)
    assert est.details["breakdown"] and est.n_hvp == 3  # three distinct eigenvalues
    assert est.low == est.high == pytest.approx(5.0, abs=1e-12)
    zero = spectral_norm(torch.zeros(4, 4, dtype=torch.float64), progress=False)
    assert zero.value == 0.0 and zero.n_hvp == 1


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


def test_errors():
    H = torch.eye(3, dtype=torch.float64)
    with pytest.raises(ConfigError, match="tol must be positive"):
        spectral_norm(H, tol=0)
    with pytest.raises(ConfigError, match="k must be between 1 and d = 3"):
        top_eigenpairs(H, 4)
    with pytest.raises(ConfigError, match="which must be one of"):
        top_eigenpairs(H, 1, which="XX")
    with pytest.raises(TypeError, match="expected a Hessian operator"):
        spectral_norm([1, 2])
