import pytest
import torch

from hessnorm.errors import ConfigError
from hessnorm.estimators import exact
from hessnorm.estimators.cauchy import cauchy_scale_bias, l11_norm


@pytest.mark.parametrize("method", ["median", "iqr"])
def test_bias_factor_matches_monte_carlo(method):
    g = torch.Generator().manual_seed(0)
    X = torch.empty(50, 200_000, dtype=torch.float64).cauchy_(generator=g)
    if method == "median":
        stat = X.abs().median(dim=0).values * 0 + X.abs().sort(dim=0).values[24:26].mean(dim=0)
    else:
        q = torch.quantile(X[:, :50_000], torch.tensor([0.25, 0.75], dtype=torch.float64), dim=0)
        stat = (q[1] - q[0]) / 2
    se = stat.std() / stat.numel() ** 0.5
    assert abs(stat.mean() - cauchy_scale_bias(50, method)) < 4 * se


def test_error_shrinks_like_inverse_sqrt_n(problems):
    H = problems["mlp"][1]
    truth = exact.l11_norm(H)

    def rmse(n, seeds):
        errs = torch.tensor(
            [
                l11_norm(H, n=n, seed=s, interval=False, progress=False).value / truth - 1
                for s in seeds
            ]
        )
        return errs.pow(2).mean().sqrt().item(), errs.mean().item()

    r50, _ = rmse(50, range(30))
    r2000, bias2000 = rmse(2000, range(10))
    assert 4.0 < r50 / r2000 < 10.0, (r50, r2000)  # √40 ≈ 6.3
    assert abs(bias2000) < 3 * r2000 / 10**0.5 + 1e-3


def test_real_operator_equals_dense_and_per_tensor(problems):
    op, H = problems["transformer"]
    a = l11_norm(op, n=50, seed=3, progress=False)
    b = l11_norm(H, n=50, seed=3, progress=False)
    assert abs(a.value - b.value) / b.value < 1e-9 and abs(a.low - b.low) / b.low < 1e-9
    assert set(a.details["per_tensor"]) == set(op.param_names)
    assert abs(sum(a.details["per_tensor"].values()) - a.value) < 1e-9 * a.value
    assert a.n_hvp == 50 and a.low < a.value < a.high
    # same seed, same value; chunking does not change the probes
    c = l11_norm(op, n=50, seed=3, chunk_size=7, progress=False)
    assert c.value == pytest.approx(a.value, rel=1e-12)


def test_raw_value_is_algorithm_4_and_store_dtype(problems):
    H = problems["mlp"][1]
    e = l11_norm(H, n=51, seed=1, progress=False)
    raw = l11_norm(H, n=51, seed=1, debias=False, progress=False)
    assert raw.value == pytest.approx(e.details["raw_value"]) and e.value == pytest.approx(
        raw.value / cauchy_scale_bias(51)
    )
    half = l11_norm(H, n=51, seed=1, store_dtype=torch.bfloat16, progress=False)
    assert abs(half.value / e.value - 1) < 0.01  # bf16 keeps ~3 digits per entry
    iqr = l11_norm(H, n=51, seed=1, method="iqr", progress=False)
    assert iqr.covers(exact.l11_norm(H))


def test_errors():
    H = torch.eye(3, dtype=torch.float64)
    with pytest.raises(ConfigError, match="n >= 3"):
        l11_norm(H, n=2)
    with pytest.raises(ConfigError, match="method must be one of"):
        l11_norm(H, method="mean")
    with pytest.raises(ConfigError, match="confidence"):
        l11_norm(H, confidence=1.5)
    with pytest.raises(ConfigError, match="memory_budget"):
        l11_norm(H, memory_budget=0)
    with pytest.raises(ConfigError, match="chunk_size"):
        l11_norm(H, chunk_size=0)
    with pytest.raises(ConfigError, match="iqr estimator needs n >= 5"):
        l11_norm(H, n=4, method="iqr")


def test_interval_edge_cases():
    H = torch.diag(torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64))
    small = l11_norm(H, n=5, seed=0, progress=False)  # the statistic's variance is infinite-ish
    assert (small.low, small.high) == (0.0, float("inf")) and "needs n >= 8" in small.details[
        "interval"
    ]
    small_iqr = l11_norm(H, n=9, seed=0, method="iqr", progress=False)
    assert small_iqr.high == float("inf") and "needs n >= 10" in small_iqr.details["interval"]
    none = l11_norm(H, n=50, seed=0, interval=False, progress=False)
    assert none.low == none.value == none.high
    zero = l11_norm(torch.zeros(4, 4, dtype=torch.float64), n=20, progress=False)
    assert (zero.value, zero.low, zero.high) == (0.0, 0.0, 0.0)
    raw = l11_norm(torch.eye(2000, dtype=torch.float64), n=50, seed=0, debias=False, progress=False)
    assert raw.low <= raw.value <= raw.high and raw.covers(2000.0)


def test_memory_budget_does_not_change_the_result(problems):
    H = problems["mlp"][1]
    a = l11_norm(H, n=50, seed=2, progress=False)
    b = l11_norm(H, n=50, seed=2, memory_budget=40 * 50 * 7, progress=False)  # 7-column slices
    assert (b.value, b.low, b.high) == pytest.approx((a.value, a.low, a.high), rel=1e-10)


def test_probe_stream_is_cauchy_and_independent_of_chunking_and_threads():
    """Probe i of a seed is one fixed vector: any chunking of probes, any thread count
    and any start inside a block give the same bits; its entries are standard Cauchy."""
    from scipy import stats

    from hessnorm.estimators._common import CAUCHY_BLOCK, cauchy_probes

    d = CAUCHY_BLOCK // 3 + 5  # probes straddle block boundaries at several offsets
    whole = cauchy_probes(11, 0, 7, d)
    parts = torch.cat(
        [cauchy_probes(11, 0, 2, d, workers=2), cauchy_probes(11, 2, 1, d)]
        + [cauchy_probes(11, i, 1, d, workers=3) for i in range(3, 7)]
    )
    assert torch.equal(whole, parts)
    assert torch.equal(cauchy_probes(11, 0, 7, d, torch.float32), whole.float())
    assert not torch.equal(cauchy_probes(12, 0, 1, d), whole[:1])
    # Kolmogorov–Smirnov against Cauchy(0, 1) on 10⁵ entries spread over all probes
    sample = whole.view(-1)[:: whole.numel() // 100_000].numpy()
    assert stats.kstest(sample, "cauchy").pvalue > 1e-3
    # distinct probes are uncorrelated in sign (independent blocks, no repeated stream)
    signs = whole.sign()
    assert abs(float((signs[0] * signs[1]).mean())) < 5 / d**0.5


def test_probe_stream_is_pinned():
    """The probes define every l11 number: a change of stream must be deliberate."""
    from hessnorm.estimators._common import cauchy_probes

    v = cauchy_probes(0, 0, 2, 3)
    expected = torch.tensor(
        [
            [-27.554951441, -1.0545592765, -2.7390474420],
            [0.20517288319, 0.0074758865724, -0.84002193619],
        ],
        dtype=torch.float64,
    )
    assert torch.allclose(v, expected, rtol=1e-9, atol=0)


def test_probe_store_on_disk_gives_the_same_numbers(problems, tmp_path, monkeypatch):
    """The disk store (explicit, or chosen when memory is short) changes where the
    probe results live, never a number; a disk that cannot hold them fails before any HVP."""
    import errno
    import os

    import hessnorm.estimators.cauchy as cauchy
    from hessnorm.errors import TooLargeError

    op, _ = problems["mlp"]
    kw = dict(n=20, seed=5, progress=False, memory_budget=1 << 14)  # many column slices
    mem = l11_norm(op, **kw)
    disk = l11_norm(op, store_device=tmp_path, **kw)
    assert mem.details["store"].startswith("memory") and disk.details["store"].startswith("disk")
    assert (disk.value, disk.low, disk.high) == (mem.value, mem.low, mem.high)
    assert disk.details["per_tensor_interval"] == mem.details["per_tensor_interval"]
    assert list(tmp_path.iterdir()) == []  # the file was unlinked at once
    # not enough memory anywhere: the default goes to disk by itself
    monkeypatch.setattr(cauchy, "available_memory", lambda dev: 1000)
    auto = l11_norm(op, **kw)
    assert auto.details["store"].startswith("disk") and auto.value == mem.value
    with pytest.raises(TooLargeError, match="store_device='disk'"):
        l11_norm(op, store_device="cpu", **kw)
    monkeypatch.undo()

    def full(fd, off, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    calls = []
    monkeypatch.setattr(os, "posix_fallocate", full, raising=False)
    monkeypatch.setattr(op, "hvp", lambda v: calls.append(1) or v)
    with pytest.raises(TooLargeError, match="cannot reserve"):
        l11_norm(op, store_device="disk", **kw)
    assert calls == []  # nothing computed
