"""HessianOperator against dense Hessians built by an independent autograd path."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hessnorm import errors
from hessnorm.estimators import exact
from hessnorm.operator import HessianOperator, as_operator
from hessnorm.testing import MLP, make_problem, problem_parts

MODES = ("fwd", "rev", "graph")


def rel_err(a, b):
    return float((a - b).norm() / b.norm())


def assert_close(actual, expected, tol, what):
    err = rel_err(actual, expected)
    if err >= tol:
        diff = (actual - expected).abs().flatten()
        worst = torch.topk(diff, min(5, diff.numel())).indices
        pytest.fail(
            f"{what}: relative error {err:.3e} >= {tol:.0e}; worst entries {worst.tolist()}: "
            f"{actual.flatten()[worst].tolist()} vs {expected.flatten()[worst].tolist()}"
        )


def probes(d, k=3, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(k, d, generator=g, dtype=torch.float64)


@pytest.mark.parametrize("name", ["mlp", "transformer", "transformer_mha"])
@pytest.mark.parametrize("mode", MODES)
def test_hvp_matches_dense(name, mode):
    op = make_problem(name)
    H = exact.hessian(op)
    op.mode = mode
    V = probes(op.d)
    assert_close(op.hvp(V), V @ H, 1e-10, f"{name}/{mode} batched")
    assert_close(op.hvp(V[0]), H @ V[0], 1e-10, f"{name}/{mode} single")


@pytest.mark.parametrize("batchnorm", ["batch", "frozen"])
def test_conv_batchnorm_modes(batchnorm):
    op = make_problem("conv_bn", batchnorm=batchnorm)
    H = exact.hessian(op)
    for mode in MODES:
        op.mode = mode
        V = probes(op.d)
        assert_close(op.hvp(V), V @ H, 1e-10, f"conv_bn/{batchnorm}/{mode}")


def test_batchnorm_modes_differ_and_frozen_needs_stats():
    a = make_problem("conv_bn", batchnorm="batch")
    b = make_problem("conv_bn", batchnorm="frozen")
    v = probes(a.d, 1)[0]
    assert rel_err(a.hvp(v), b.hvp(v)) > 1e-3  # the choice matters, so it must be explicit
    model = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3, track_running_stats=False))
    with pytest.raises(errors.SelectionError, match="batchnorm='batch'"):
        HessianOperator.from_module(
            model, F.mse_loss, (torch.randn(4, 3), torch.randn(4, 3)), batchnorm="frozen"
        )


def test_dense_hessian_independent_check():
    """exact.hessian (jacrev of grad) agrees with torch.autograd.functional.hessian."""
    model, loss_fn, [(x, y)] = problem_parts("mlp", n=16)
    model = model.double()
    op = HessianOperator.from_module(model, loss_fn, (x, y))

    def f(flat):
        return loss_fn(torch.func.functional_call(model, op.unflatten(flat), (x.double(),)), y)

    ref = torch.autograd.functional.hessian(f, op.point)
    assert_close(exact.hessian(op), 0.5 * (ref + ref.T), 1e-12, "dense Hessian")
    # exact.hessian is the operator's public dense() (reverse over reverse), symmetrized
    assert_close(op.dense(), ref, 1e-12, "HessianOperator.dense")
    assert op.matvec_count == 0  # dense() performs no HVP


def test_quadratic_from_function():
    g = torch.Generator().manual_seed(0)
    M = torch.randn(7, 7, generator=g, dtype=torch.float64)
    A = M @ M.T
    b = torch.randn(7, generator=g, dtype=torch.float64)
    op = HessianOperator.from_function(
        lambda x: 0.5 * x @ A @ x + b @ x, torch.zeros(7, dtype=torch.float64)
    )
    for mode in MODES:
        op.mode = mode
        V = probes(7)
        assert_close(op.hvp(V), V @ A, 1e-12, f"quadratic/{mode}")
    assert_close(exact.hessian(op), A, 1e-12, "quadratic dense")
    x = torch.randn(7, generator=g, dtype=torch.float64)
    assert_close(op.gradient(x), A @ x + b, 1e-12, "gradient")
    assert op.loss(x) == pytest.approx(float(0.5 * x @ A @ x + b @ x), rel=1e-12)


@pytest.mark.parametrize(
    "name,sizes", [("mlp", (37, 27)), ("transformer", (5, 11)), ("conv_bn", (13, 19))]
)
def test_batch_split_invariance(name, sizes):
    n = sum(sizes)
    whole = make_problem(name, n=n)
    parts = make_problem(name, n=n, split=sizes)
    assert "in 2 batches" in parts.description
    V = probes(whole.d)
    if name == "conv_bn":
        # BatchNorm with batch statistics makes the loss depend on how examples are
        # grouped, so invariance only holds with frozen statistics.
        whole = make_problem(name, n=n, batchnorm="frozen")
        parts = make_problem(name, n=n, split=sizes, batchnorm="frozen")
    for mode in MODES:
        whole.mode = parts.mode = mode
        assert_close(parts.hvp(V), whole.hvp(V), 1e-10, f"{name}/{mode} split")
    assert parts.loss() == pytest.approx(whole.loss(), rel=1e-12)
    assert_close(parts.gradient(), whole.gradient(), 1e-10, "gradient split")


def test_batched_equals_singles_and_chunking():
    op = make_problem("transformer")
    V = probes(op.d, k=5)
    op.mode = "fwd"
    batched = op.hvp(V)
    singles = torch.stack([op.hvp(v) for v in V])
    assert_close(batched, singles, 1e-12, "batched vs singles")
    for chunk in (1, 2, 3, 5):
        op.chunk_size = chunk
        torch.testing.assert_close(op.hvp(V), batched, rtol=1e-13, atol=1e-13)


def test_matvec_count():
    # every HVP performed is counted, and only those: "auto" mode finds out whether
    # forward mode works on the first real block, without a separate probe HVP
    for mode in ("auto", "fwd", "rev", "graph"):
        op = make_problem("mlp")
        op.mode = mode
        op.hvp(probes(op.d, k=4))
        op.hvp(probes(op.d, k=1)[0])
        assert op.matvec_count == 5, mode


def test_operator_contract_is_explicit():
    from hessnorm.operator import (
        CountingOperator,
        DenseOperator,
        HessianLike,
        LossOperator,
        RotatedOperator,
    )
    from hessnorm.rotation import RandPerm

    op = make_problem("mlp")
    rot = op.rotated(RandPerm(op.d, seed=0))
    dense = DenseOperator(torch.eye(3, dtype=torch.float64))
    for o in (op, rot, dense):
        assert isinstance(o, HessianLike) and isinstance(o, LossOperator)
    assert isinstance(rot, RotatedOperator)
    # only the HessianOperator has named parameters; the others do not fake them
    assert hasattr(op, "param_slices")
    assert not hasattr(rot, "param_slices") and not hasattr(dense, "param_slices")
    with pytest.raises(TypeError, match="expected a Hessian operator"):
        as_operator([1.0, 2.0])
    # a minimal user operator (d, dtype, device, matvec_count, hvp) is accepted as is

    class Diag:
        d, dtype, device, matvec_count = 2, torch.float64, torch.device("cpu"), 0

        def hvp(self, v):
            return 2 * v

    mine = Diag()
    assert as_operator(mine) is mine and not isinstance(mine, LossOperator)
    assert exact.hessian(mine).tolist() == [[2.0, 0.0], [0.0, 2.0]]
    assert torch.equal(rot.dense(), exact.hessian(rot, symmetrize=False))

    # without matvec_count it is wrapped, and the wrapper counts one HVP per vector
    class Bare:
        d, dtype, device = 2, torch.float64, torch.device("cpu")

        def hvp(self, v):
            return 3 * v

    wrapped = as_operator(Bare())
    assert isinstance(wrapped, CountingOperator) and isinstance(wrapped, HessianLike)
    wrapped.hvp(torch.ones(4, 2, dtype=torch.float64))
    wrapped.hvp(torch.ones(2, dtype=torch.float64))
    assert wrapped.matvec_count == 5
    assert exact.hessian(Bare()).tolist() == [[3.0, 0.0], [0.0, 3.0]]


def test_scipy_eigsh_matches_exact(problems):
    from scipy.sparse.linalg import eigsh

    op, H = problems["mlp"]
    lo = op.to_scipy()
    x = np.random.default_rng(0).standard_normal((op.d, 2))
    np.testing.assert_allclose(
        lo.matvec(x[:, 0]), (H @ torch.as_tensor(x[:, 0])).numpy(), rtol=1e-10, atol=1e-13
    )
    np.testing.assert_allclose(
        lo.matmat(x), (H @ torch.as_tensor(x)).numpy(), rtol=1e-10, atol=1e-13
    )
    vals = eigsh(lo, k=1, which="LM", v0=np.ones(op.d), tol=1e-12, return_eigenvectors=False)
    assert abs(vals[0]) == pytest.approx(exact.spectral_norm(H), rel=1e-9)


def test_params_selection_and_flat_views():
    model, loss, batches = problem_parts("mlp")
    op = HessianOperator.from_module(
        model, loss, batches, params=lambda n: n.startswith("net.0"), dtype=torch.float64
    )
    assert op.param_names == ["net.0.weight", "net.0.bias"]
    assert op.d == 64 * 12 + 12
    full = HessianOperator.from_module(model, loss, batches, dtype=torch.float64)
    Hfull = exact.hessian(full)
    H = exact.hessian(op)
    assert_close(H, Hfull[: op.d, : op.d], 1e-10, "sub-block Hessian")
    d = op.unflatten(op.point)
    assert set(d) == {"net.0.weight", "net.0.bias"} and d["net.0.weight"].shape == (12, 64)
    torch.testing.assert_close(op.flatten(d), op.point)
    named = HessianOperator.from_module(
        model, loss, batches, params=["net.2.bias"], dtype=torch.float64
    )
    assert named.d == 10 and named.param_slices == {"net.2.bias": slice(0, 10)}
    # the user's model is left as it was
    assert next(model.parameters()).dtype == torch.float32


def test_at_and_rotated_compose():
    op = make_problem("mlp")
    x = op.point + 0.1
    moved = op.at(x)
    assert moved.loss() == pytest.approx(op.loss(x), rel=1e-12)
    torch.testing.assert_close(moved.gradient(), op.gradient(x))

    class Perm:  # any orthogonal map with apply/apply_T will do
        def __init__(self, d):
            self.d = d
            self.p = torch.randperm(d, generator=torch.Generator().manual_seed(0))
            self.inv = torch.argsort(self.p)

        def apply(self, v):
            return v[..., self.inv]

        def apply_T(self, v):
            return v[..., self.p]

    R = Perm(op.d)
    P = torch.eye(op.d, dtype=torch.float64)[R.inv]  # R as a matrix: P @ v == v[inv]
    H = exact.hessian(op)
    V = probes(op.d)
    assert_close(op.rotated(R).hvp(V), V @ (P.T @ H @ P).T, 1e-10, "rotated HVP")


def test_dense_operator_wrapper():
    A = torch.diag(torch.arange(1.0, 5.0, dtype=torch.float64))
    op = as_operator(A)
    assert op.d == 4 and op.hvp(torch.ones(4, dtype=torch.float64)).tolist() == [1, 2, 3, 4]
    assert as_operator(op) is op
    with pytest.raises(TypeError, match="dense square tensor"):
        as_operator([1, 2])


# ---------------------------------------------------------------- errors


def test_error_wrong_vector():
    op = make_problem("mlp")
    with pytest.raises(errors.ShapeError, match=r"shape \(5,\).*\(910,\) or \(k, 910\)"):
        op.hvp(torch.ones(5, dtype=torch.float64))
    with pytest.raises(errors.ShapeError, match="dtype torch.float32 .* torch.float64"):
        op.hvp(torch.ones(op.d))
    with pytest.raises(errors.ShapeError, match="on meta but the operator is on cpu"):
        op.hvp(torch.ones(op.d, dtype=torch.float64, device="meta"))
    with pytest.raises(errors.ShapeError, match="must be a torch.Tensor"):
        op.hvp(np.ones(op.d))


def test_error_empty_data():
    model = MLP((4, 2))
    with pytest.raises(errors.EmptyDataError, match="no batch"):
        HessianOperator.from_module(model, F.cross_entropy, [])
    with pytest.raises(errors.EmptyDataError, match="every batch in data is empty"):
        HessianOperator.from_module(
            model, F.cross_entropy, [(torch.zeros(0, 4), torch.zeros(0, dtype=torch.long))]
        )


def test_error_dropout_in_train_mode():
    model = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5), nn.Linear(4, 2))
    batch = (torch.randn(8, 4), torch.randint(0, 2, (8,)))
    with pytest.raises(errors.StochasticModelError, match=r"1: Dropout\(p=0.5\).*model.eval\(\)"):
        HessianOperator.from_module(model, F.cross_entropy, batch)
    op = HessianOperator.from_module(model.eval(), F.cross_entropy, batch)
    v = torch.ones(op.d)
    torch.testing.assert_close(op.hvp(v), op.hvp(v))  # deterministic once dropout is off


def test_error_empty_selection():
    model = MLP((4, 2))
    batch = (torch.randn(8, 4), torch.randint(0, 2, (8,)))
    with pytest.raises(errors.SelectionError, match="selection is empty"):
        HessianOperator.from_module(model, F.cross_entropy, batch, params=lambda n: "conv" in n)
    with pytest.raises(
        errors.SelectionError, match="unknown or frozen parameter names \\['nope'\\]"
    ):
        HessianOperator.from_module(model, F.cross_entropy, batch, params=["nope"])


def test_error_non_finite_names_tensor():
    model = MLP((4, 3, 2))
    batch = (torch.randn(8, 4), torch.randint(0, 2, (8,)))
    with torch.no_grad():
        model.net[2].weight[0, 0] = float("nan")
    op = HessianOperator.from_module(model, F.cross_entropy, batch)
    with pytest.raises(errors.NonFiniteError, match="'net.2.weight' is the first tensor"):
        op.loss()
    with pytest.raises(errors.NonFiniteError, match="'net.2.weight' is the first tensor"):
        op.hvp(torch.ones(op.d))

    def overflow(x):
        return torch.exp(1000 * x).sum()

    op = HessianOperator.from_function(overflow, torch.tensor([0.0, 1.0]))
    with pytest.raises(errors.NonFiniteError, match="'x' is the first parameter tensor"):
        op.hvp(torch.ones(2))
    with pytest.raises(errors.NonFiniteError, match="loss on batch 0 is not finite.*float64"):
        op.loss()


def test_error_dense_too_large():
    op = HessianOperator.from_function(lambda x: (x**2).sum(), torch.zeros(50))
    with pytest.raises(errors.TooLargeError, match="d = 50 > max_dim = 10.*max_dim=50"):
        exact.hessian(op, max_dim=10)


def test_error_bad_batches():
    model = MLP((4, 2))
    with pytest.raises(errors.ShapeError, match="batch 0 is not an \\(inputs, targets\\) pair"):
        HessianOperator.from_module(model, F.cross_entropy, [torch.randn(3, 4)])
    with pytest.raises(errors.ShapeError, match="not a tensor"):
        HessianOperator.from_module(model, F.cross_entropy, torch.randn(3, 4))


def test_determinism():
    a = make_problem("transformer", dtype=torch.float32)
    b = make_problem("transformer", dtype=torch.float32)
    V = probes(a.d).float()
    assert torch.equal(a.hvp(V), b.hvp(V))
