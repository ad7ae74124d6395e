import pytest
import torch

from hessnorm.errors import SelectionError, TooLargeError
from hessnorm.estimators import exact
from hessnorm.estimators.blockwise import blockwise_smoothness
from hessnorm.partition import Partition


@pytest.mark.parametrize("name", ["mlp", "transformer"])
@pytest.mark.parametrize("kind", ["by_tensor", "by_row"])
def test_matches_exact_surrogate(problems, name, kind):
    op, H = problems[name]
    part = getattr(Partition, kind)(op)
    S, diag = exact.blockwise_surrogate(H, part)
    est = blockwise_smoothness(op, part, progress=False)
    # the interval is the stated error: a deterministic lower bound and an HMT upper bound
    assert est.low <= S <= est.high, (est, S)
    assert est.low <= est.value <= est.high
    # rank-20 sketches with two power steps land within 1% of the truth here
    assert abs(est.value - S) / S < 0.01
    assert est.details["diagonal_part"] <= diag * (1 + 1e-9)
    assert est.details["diagonal_part_high"] >= diag * (1 - 1e-9)
    assert abs(est.details["diagonal_part"] - diag) / diag < 0.02
    assert est.n_hvp <= op.d + len(part) * 20
    again = blockwise_smoothness(op, part, progress=False)
    assert again.value == est.value


def test_small_blocks_are_exact(problems):
    op, H = problems["mlp"]
    part = Partition.by_row(op)  # blocks of 65 and 13 coordinates: all probed exactly
    S, _ = exact.blockwise_surrogate(H, part)
    est = blockwise_smoothness(op, part, progress=False)
    assert est.details["exact_blocks"] == part.n_blocks and est.confidence == 1.0
    assert abs(est.value - S) / S < 1e-10 and est.n_hvp == op.d


def test_special_partitions_dispatch(problems):
    op, H = problems["conv_bn"]
    single = blockwise_smoothness(op, Partition.single(op.d), progress=False)
    assert abs(single.value - op.d * exact.spectral_norm(H)) / single.value < 1e-4
    coords = blockwise_smoothness(H, Partition.coordinates(op.d), n_cauchy=50, progress=False)
    assert coords.covers(exact.l11_norm(H)) and coords.n_hvp == 50


def test_randomized_path_on_dense_blocks():
    g = torch.Generator().manual_seed(0)
    A = torch.randn(120, 120, dtype=torch.float64, generator=g)
    H = A @ A.T / 120 - 0.5 * torch.eye(120, dtype=torch.float64)
    part = Partition.from_labels(torch.arange(120) // 60)
    S, _ = exact.blockwise_surrogate(H, part)
    est = blockwise_smoothness(H, part, method="randomized", rank=5, power_steps=1, progress=False)
    assert est.details["exact_blocks"] == 0
    assert est.low <= S <= est.high and est.confidence == 0.95


def test_errors(problems):
    op, _ = problems["mlp"]
    with pytest.raises(SelectionError, match="covers 5 coordinates"):
        blockwise_smoothness(op, Partition.single(5))
    with pytest.raises(TooLargeError, match="22 blocks > max_blocks = 10"):
        blockwise_smoothness(op, Partition.by_row(op), max_blocks=10)
