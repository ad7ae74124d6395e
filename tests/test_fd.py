"""Finite-difference HVPs (``mode="fd"``) and the intervals widened by their error.

Ground truth is the dense Hessian of the same loss in float64 (``op.dense()`` by
reverse-over-reverse, a code path the FD mode never uses). Checked: FD products equal
H v to their Richardson estimate, which is within 10x of the true error; on a
cubic-heavy loss in float32, where the FD error is far larger than the estimators'
own statistical width, spectral_norm, l11_norm and trace still cover the exact values
over many seeds; the widening is recorded; estimators that cannot widen refuse FD.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from hessnorm import blockwise_smoothness, exact, l11_norm, spectral_norm, trace
from hessnorm.errors import ConfigError, ShapeError
from hessnorm.fd import HVPErrorLog, central_difference_pair, fd_step
from hessnorm.operator import DenseOperator, HessianOperator
from hessnorm.partition import Partition
from hessnorm.sharded import ShardedOperator

F64 = torch.float64


def _mlp_op(mode: str):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 6), nn.Tanh(), nn.Linear(6, 3)).to(F64)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(40, 5, generator=g, dtype=F64)
    y = torch.randint(0, 3, (40,), generator=g)
    batches = [(x[:25], y[:25]), (x[25:], y[25:])]
    return HessianOperator.from_module(model, nn.functional.cross_entropy, batches, mode=mode)


def test_fd_hvp_matches_dense_within_its_error_estimate():
    op = _mlp_op("fd")
    H = _mlp_op("auto").dense()
    V = torch.randn(3, op.d, generator=torch.Generator().manual_seed(3), dtype=F64)
    HV = op.hvp(V)
    true = (V @ H.T - HV).norm(dim=1)
    est = torch.tensor([e for _, e, _ in op.hvp_error.records], dtype=F64)
    assert op.matvec_count == 3 and len(op.hvp_error.records) == 3
    for i in range(3):
        assert true[i] <= 10 * est[i] and est[i] <= 10 * true[i], (i, true[i], est[i])
        # eps^(2/3) ~ 4e-11 relative: the central-difference accuracy in float64
        assert true[i] <= 1e-8 * (V[i] @ H).norm(), (i, true[i])
    single = op.hvp(V[0])
    torch.testing.assert_close(single, HV[0], rtol=0, atol=0)
    assert "fd" in repr(op) and op.hvp_error.worst_rel < 1e-8


def test_fd_same_seed_same_number():
    a = spectral_norm(_cubic_problem(1)[0], seed=4, progress=False)
    b = spectral_norm(_cubic_problem(1)[0], seed=4, progress=False)
    assert a.value == b.value and a.low == b.low and a.high == b.high


def _cubic_problem(seed: int, d: int = 12):
    """f(x) = ½xᵀAx + c Σ x_i³ + a Σ sin(ω x_i) at a point of size O(1).

    Central differences of the gradient are exact for a cubic (its gradient is
    quadratic), so the sin term supplies the large fourth derivative a·ω⁴ that makes
    the float32 FD error big; the cubic term makes the Hessian change fast along v.
    """
    g = torch.Generator().manual_seed(100 + seed)
    A = torch.randn(d, d, generator=g, dtype=F64)
    A = (A + A.T) / 2
    c = 30.0

    def f(x):
        A_ = A.to(x.dtype)
        return 0.5 * x @ A_ @ x + c * (x**3).sum() + 0.05 * torch.sin(30.0 * x).sum()

    x0 = torch.randn(d, generator=g, dtype=F64)
    H = HessianOperator.from_function(f, x0).dense()
    fd = HessianOperator.from_function(f, x0.float(), mode="fd")
    return fd, H


def test_cubic_heavy_loss_intervals_cover_exact_values_across_seeds():
    """float32 FD on a cubic-heavy loss: the FD error dominates, the intervals still hold."""
    covered = {"spectral": 0, "l11": 0, "trace": 0}
    fd_dominated = 0
    seeds = range(6)
    for s in seeds:
        op, H = _cubic_problem(s)
        truth = {
            "spectral": float(torch.linalg.eigvalsh(H).abs().max()),
            "l11": float(exact.l11_norm(H)),
            "trace": float(torch.diagonal(H).sum()),
        }
        ests = {
            "spectral": spectral_norm(op, seed=s, progress=False, tol=1e-3),
            "l11": l11_norm(op, n=50, seed=s, progress=False),
            "trace": trace(op, n=9, seed=s, method="hutchinson", progress=False),
        }
        for name, est in ests.items():
            covered[name] += est.covers(truth[name])
            assert "fd_error" in est.details, name
        # the FD part of the width is what makes it cover: the truth lies outside any
        # interval Lanczos alone could state (width <= tol = 1e-3); measured with the
        # widening switched off, 0 of these 6 spectral intervals covered
        sp = ests["spectral"]
        krylov_only = (sp.value / (1 + sp.details["rounding"]), sp.value * (1 + 1e-3))
        if not krylov_only[0] <= truth["spectral"] <= krylov_only[1]:
            fd_dominated += 1
    assert fd_dominated >= len(seeds) // 2, "the toy loss should make FD errors large"
    # spectral (99%, plus a worst-case FD bound) and trace/l11 (95% nominal)
    assert covered["spectral"] == len(seeds), covered
    assert covered["trace"] >= len(seeds) - 1, covered
    assert covered["l11"] >= len(seeds) - 1, covered


def test_widening_is_the_fd_bound_and_exact_modes_are_untouched():
    op, H = _cubic_problem(0)
    est = spectral_norm(op, seed=0, progress=False, tol=1e-3)
    info = est.details["fd_error"]
    m = est.n_hvp
    assert math.isclose(info["eta_fd"], 3 * (m + 2 * math.sqrt(m)) * info["relative_hvp_error"])
    assert est.details["fd_error"]["hvps"] == m
    plain = spectral_norm(DenseOperator(H), seed=0, progress=False)
    assert "fd_error" not in plain.details


def test_fd_helpers():
    assert fd_step(torch.float64, 3.0, 0.0) == 0.0
    h = fd_step(torch.float32, 1.0, 2.0)
    assert math.isclose(h, torch.finfo(torch.float32).eps ** (1 / 3))
    x = torch.zeros(3, dtype=F64)
    a, b = central_difference_pair(lambda y: y**3, x, torch.zeros(3, dtype=F64), 0.0)
    assert not a.any() and not b.any()
    log = HVPErrorLog()
    log.add(torch.ones(1, 2), torch.zeros(1, 2), torch.ones(1, 2))  # zero product, nonzero error
    assert log.worst_rel == math.inf


def test_estimators_without_fd_propagation_refuse_fd_operators():
    op = _mlp_op("fd")
    part = Partition.by_tensor(op)
    with pytest.raises(ConfigError, match="finite-difference"):
        blockwise_smoothness(op, part)


def test_sharded_operator_input_errors():
    lin = nn.Linear(2, 2)
    data = (torch.ones(3, 2), torch.ones(3, 2))
    mse = nn.functional.mse_loss
    with pytest.raises(ShapeError, match="in place"):
        ShardedOperator.from_module(lin, mse, data, dtype=F64)
    with pytest.raises(ShapeError, match="double backward"):
        ShardedOperator.from_module(lin, mse, data, mode="fwd")
    with pytest.raises(ShapeError, match="no torch.distributed process group"):
        ShardedOperator(lin, mse, data)


class _FakeSharded(DenseOperator):
    local_ranges = [(0, 4)]
    local_d = 4


def test_sharded_operators_refuse_unsupported_estimators():
    op = _FakeSharded(torch.eye(4, dtype=F64))
    with pytest.raises(ConfigError, match="hutchinson"):
        trace(op, n=6, progress=False)
    with pytest.raises(ConfigError, match="sharded"):
        blockwise_smoothness(op, Partition.from_labels([0, 0, 1, 1]))


def test_sharded_operator_refuses_rotations():
    with pytest.raises(ConfigError, match="rotated estimators"):
        ShardedOperator.rotated(None, None)
