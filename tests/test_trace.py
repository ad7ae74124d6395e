import pytest
import torch

from hessnorm.errors import ConfigError
from hessnorm.estimators.trace import trace


def _outliers(d=400, seed=0):
    """A few large eigenvalues over a bulk of small ones (the case Hutch++ is built for)."""
    g = torch.Generator().manual_seed(seed)
    U = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))[0]
    ev = torch.cat(
        [
            torch.tensor([200.0, 120.0, -80.0, 60.0, 40.0], dtype=torch.float64),
            0.1 * torch.randn(d - 5, generator=g, dtype=torch.float64),
        ]
    )
    return U @ torch.diag(ev) @ U.T


@pytest.mark.parametrize("name", ["mlp", "conv_bn", "transformer"])
def test_interval_covers_exact_trace(problems, name):
    """The nominal 95% t-interval covers tr(H) in >= 90% of 40 seeds on each real Hessian."""
    _, H = problems[name]
    truth = float(H.trace())
    ests = [trace(H, n=60, seed=s, progress=False) for s in range(40)]
    hits = sum(e.covers(truth) for e in ests)
    assert hits >= 36, (name, hits, truth)
    assert all(e.n_hvp == 60 and e.d == H.shape[0] for e in ests)
    # unbiased: the mean over seeds is within 4 standard errors of the truth
    vals = torch.tensor([e.value for e in ests])
    assert abs(vals.mean() - truth) < 4 * vals.std() / 40**0.5


def test_operator_and_dense_agree(problems):
    op, H = problems["mlp"]
    a, b = trace(op, n=30, seed=3, progress=False), trace(H, n=30, seed=3, progress=False)
    assert abs(a.value - b.value) < 1e-8 * abs(b.value) + 1e-10
    assert a.n_hvp == 30


def test_hutchpp_beats_hutchinson_on_outliers():
    H = _outliers()
    truth = float(H.trace())

    def rmse(method):
        errs = torch.tensor(
            [trace(H, n=60, method=method, seed=s, progress=False).value - truth for s in range(30)]
        )
        return float(errs.pow(2).mean().sqrt())

    pp, hutch = rmse("hutch++"), rmse("hutchinson")
    assert pp < 0.2 * hutch, (pp, hutch)
    cov = sum(
        trace(H, n=60, method="hutch++", seed=s, progress=False).covers(truth) for s in range(40)
    )
    assert cov >= 36


def test_hutchinson_coverage_and_stated_error():
    H = _outliers(d=300, seed=1)
    truth = float(H.trace())
    ests = [trace(H, n=40, method="hutchinson", seed=s, progress=False) for s in range(40)]
    assert sum(e.covers(truth) for e in ests) >= 35
    # stated standard error matches the formula sqrt(2 (||H||_F^2 - sum H_ii^2) / n)
    se_true = (2 * (H.pow(2).sum() - H.diagonal().pow(2).sum()) / 40).sqrt()
    se_mean = torch.tensor([e.details["std_error"] for e in ests]).mean()
    assert 0.8 < se_mean / se_true < 1.2


def test_exact_when_n_reaches_d():
    H = _outliers(d=20)
    est = trace(H, n=25, progress=False)
    assert est.details["exact"] and est.n_hvp == 20 and est.confidence == 1.0
    assert abs(est.value - float(H.trace())) < 1e-10 and est.low == est.high


def test_seed_reproducible_and_chunking_invariant():
    H = _outliers(d=100)
    a = trace(H, n=30, seed=7, progress=False)
    b = trace(H, n=30, seed=7, chunk_size=4, progress=False)
    assert abs(a.value - b.value) < 1e-10 and abs(a.high - b.high) < 1e-10
    assert trace(H, n=30, seed=8, progress=False).value != a.value


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"method": "xtrace"}, "method must be one of"),
        ({"confidence": 1.0}, "confidence must lie"),
        ({"n": 4}, "needs n >= 5"),
        ({"n": 1, "method": "hutchinson"}, "needs n >= 2"),
        ({"chunk_size": 0}, "chunk_size must be"),
    ],
)
def test_errors(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        trace(torch.eye(10, dtype=torch.float64), **kwargs, progress=False)
