"""Tests of hessnorm.estimators.local_smoothness (paper 003, App. E)."""

from __future__ import annotations

import math

import pytest
import torch

from hessnorm.errors import ConfigError, NonFiniteError, ShapeError
from hessnorm.estimators import exact
from hessnorm.estimators.local_smoothness import hessian_local_smoothness, local_smoothness
from hessnorm.operator import HessianOperator, as_operator

F64 = torch.float64


def _sym(d, seed):
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(d, d, generator=g, dtype=F64)
    return A + A.T


def _pair(d, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(d, generator=g, dtype=F64), torch.randn(d, generator=g, dtype=F64)


# ---------------------------------------------------------------------------- quadratic


@pytest.mark.parametrize("kind", ["operator", "loss", "gradient", "dense"])
def test_quadratic_equals_A_delta_over_delta(kind):
    # For f = ½xᵀAx, ∇f(w+γΔ) − ∇f(w) = γAΔ, so every ratio is ‖AΔ‖/‖Δ‖: exact up to
    # float64 roundoff (a few ulps of ‖A‖·‖w‖ divided by γ‖Δ‖ ≥ 0.1·‖Δ‖).
    d = 7
    A = _sym(d, 0)
    w, w_next = _pair(d, 1)
    grad_fn = None
    if kind == "operator":
        fn = HessianOperator.from_function(lambda x: 0.5 * x @ A @ x, torch.zeros(d, dtype=F64))
    elif kind == "loss":
        fn = lambda x: 0.5 * x @ A @ x  # noqa: E731
    elif kind == "gradient":
        fn, grad_fn = None, lambda x: A @ x
    else:
        fn = as_operator(A)
    est = local_smoothness(fn, w, w_next, alpha=0.1, grad_fn=grad_fn)
    delta = w_next - w
    exact = float(torch.linalg.vector_norm(A @ delta) / torch.linalg.vector_norm(delta))
    assert est.value == pytest.approx(exact, rel=1e-12)
    assert all(r == pytest.approx(exact, rel=1e-12) for r in est.details["ratios"])
    assert est.low == est.high == est.value
    assert est.confidence == 1.0 and est.n_hvp == 0 and est.d == d
    assert est.name == "local_smoothness"
    det = est.details
    assert det["n_grad"] == 11
    assert det["gammas"] == pytest.approx([k / 10 for k in range(1, 11)], abs=0)
    assert det["gammas"][-1] == 1.0
    assert det["grad_norm"] == pytest.approx(float(torch.linalg.vector_norm(A @ w)), rel=1e-13)
    assert det["step_norm"] == pytest.approx(float(torch.linalg.vector_norm(delta)), rel=1e-15)
    assert det["argmax_gamma"] in det["gammas"]


def test_cubic_matches_closed_form_secants():
    # f(x) = Σ x_i⁴/12: ∇f = x³/3, so each ratio has a closed form; the max must pick it.
    w = torch.tensor([0.5, -1.0, 2.0], dtype=F64)
    w_next = torch.tensor([1.0, 0.0, 1.5], dtype=F64)
    delta = w_next - w
    est = local_smoothness(lambda x: (x**4).sum() / 12, w, w_next, alpha=0.25)
    expected = [
        float(torch.linalg.vector_norm(((w + g * delta) ** 3 - w**3) / 3) / (g * delta.norm()))
        for g in (0.25, 0.5, 0.75, 1.0)
    ]
    assert est.details["ratios"] == pytest.approx(expected, rel=1e-13)
    assert est.value == pytest.approx(max(expected), rel=1e-13)
    assert est.details["argmax_gamma"] == (0.25, 0.5, 0.75, 1.0)[expected.index(max(expected))]
    assert est.details["n_grad"] == 5


def test_operator_casts_points_to_its_dtype():
    A = _sym(4, 2)
    op = HessianOperator.from_function(lambda x: 0.5 * x @ A @ x, torch.zeros(4, dtype=F64))
    w, w_next = _pair(4, 3)
    e64 = local_smoothness(op, w, w_next)
    e32 = local_smoothness(op, w.float(), w_next.float())
    # float32 inputs are cast to float64; only their own rounding (~1e-7) differs.
    assert e32.value == pytest.approx(e64.value, rel=1e-6)


# ---------------------------------------------------------------------------- model


@pytest.fixture(scope="module")
def mlp_operator():
    g = torch.Generator().manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(5, 6), torch.nn.Tanh(), torch.nn.Linear(6, 3), torch.nn.Softplus()
    ).to(F64)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=F64) * 0.7)
    X = torch.randn(32, 5, generator=g, dtype=F64)
    Y = torch.randn(32, 3, generator=g, dtype=F64)
    return HessianOperator.from_module(model, torch.nn.functional.mse_loss, (X, Y))


def test_model_tends_to_directional_hessian_value_linearly(mlp_operator):
    # Taylor: ∇f(w+γtu) − ∇f(w) = γt H u + (γt)²/2 ∇³f[u,u] + O(t³), so each ratio is
    # ‖Hu‖/‖u‖ + O(t‖u‖·‖∇³f‖) and so is their max: the discrepancy must shrink linearly
    # with the step length t (ratio 1/10 per decade, up to the O(t²) term).
    op = mlp_operator
    w = op.point
    g = torch.Generator().manual_seed(1)
    u = torch.randn(op.d, generator=g, dtype=F64)
    u /= u.norm()
    directional = float(op.hvp(u).norm())
    errs = []
    for t in (1e-1, 1e-2, 1e-3):
        est = local_smoothness(op, w, w + t * u, alpha=0.1)
        errs.append(abs(est.value - directional))
    assert errs[0] > 0
    for big, small in zip(errs, errs[1:]):
        assert 0.07 < small / big < 0.13, errs
    # At t = 1e-3 the value agrees with the Hessian-based directional value to ~1e-3·C.
    assert errs[2] / directional < 1e-2 * errs[0] / directional + 1e-9
    # And it never exceeds ‖H(w)‖₂ by more than that Taylor term.
    assert directional <= exact.spectral_norm(op) * (1 + 1e-12)


def test_hessian_local_smoothness_is_spectral_norm(mlp_operator):
    op = mlp_operator
    est = hessian_local_smoothness(op, tol=1e-8, seed=0)
    assert est.name == "hessian_local_smoothness"
    assert est.value == pytest.approx(exact.spectral_norm(op), rel=1e-6)
    assert est.details["grad_norm"] == pytest.approx(float(op.gradient().norm()), rel=1e-12)
    # At another point (op.at), the value follows the point.
    w2 = op.point + 0.3
    est2 = hessian_local_smoothness(op, w2, tol=1e-8, seed=0)
    assert est2.value == pytest.approx(exact.spectral_norm(op.at(w2)), rel=1e-6)


# ---------------------------------------------------------------------------- errors


def test_zero_step_is_an_error():
    w = torch.ones(3, dtype=F64)
    with pytest.raises(ConfigError, match="zero"):
        local_smoothness(None, w, w.clone(), grad_fn=lambda x: x)


@pytest.mark.parametrize("alpha", [0.0, -0.1, 1.5, 0.3, 0.15, float("nan"), float("inf"), True])
def test_bad_alpha_is_an_error(alpha):
    with pytest.raises(ConfigError, match="alpha"):
        local_smoothness(None, torch.zeros(2), torch.ones(2), alpha=alpha, grad_fn=lambda x: x)


@pytest.mark.parametrize("alpha, n", [(1.0, 1), (0.5, 2), (1 / 3, 3), (0.05, 20)])
def test_good_alpha_grid(alpha, n):
    est = local_smoothness(
        lambda x: (x**2).sum(), torch.zeros(2, dtype=F64), torch.ones(2, dtype=F64), alpha=alpha
    )
    assert len(est.details["gammas"]) == n and est.details["gammas"][-1] == 1.0
    assert est.value == pytest.approx(2.0, rel=1e-14)


def test_shape_and_type_errors():
    def f(x):
        return (x**2).sum()

    with pytest.raises(ShapeError, match="same shape"):
        local_smoothness(f, torch.zeros(2), torch.ones(3))
    with pytest.raises(ShapeError, match="flat 1-D"):
        local_smoothness(f, torch.zeros(2, 2), torch.ones(2, 2))
    with pytest.raises(ShapeError, match="flat 1-D"):
        local_smoothness(f, [0.0, 1.0], torch.ones(2))
    with pytest.raises(ShapeError, match="gradient function must return"):
        local_smoothness(None, torch.zeros(2), torch.ones(2), grad_fn=lambda x: x[:1])
    with pytest.raises(TypeError, match="HessianOperator"):
        local_smoothness(42, torch.zeros(2), torch.ones(2))
    with pytest.raises(TypeError, match="grad_fn must be callable"):
        local_smoothness(None, torch.zeros(2), torch.ones(2), grad_fn=3)
    with pytest.raises(ConfigError, match="not both"):
        local_smoothness(f, torch.zeros(2), torch.ones(2), grad_fn=lambda x: x)


def test_a_gradient_passed_as_the_loss_says_how_to_pass_it():
    # the mistake the old API invited: a gradient function where the loss goes
    A = torch.eye(3, dtype=F64)
    with pytest.raises(ShapeError, match="grad_fn="):
        local_smoothness(lambda x: A @ x, torch.zeros(3, dtype=F64), torch.ones(3, dtype=F64))


def test_scalar_loss_equals_the_operator_form():
    # local_smoothness(loss_fn, w, w_next) differentiates the loss exactly as
    # HessianOperator.from_function does: the same gradients, so the same bits.
    A = _sym(6, 7)

    def f(x):
        return 0.5 * x @ A @ x + torch.cos(x).sum() + (x**4).sum() / 10

    w, w_next = _pair(6, 8)
    by_loss = local_smoothness(f, w, w_next)
    by_op = local_smoothness(HessianOperator.from_function(f, w), w, w_next)
    assert by_loss.value == by_op.value
    assert by_loss.details["ratios"] == by_op.details["ratios"]
    assert by_loss.details["grad_norm"] == by_op.details["grad_norm"]


def test_nonfinite_gradient_is_an_error():
    with pytest.raises(NonFiniteError, match="NaN/Inf"):
        local_smoothness(lambda x: (x * torch.log(x)).sum(), torch.ones(2), -torch.ones(2))


def test_value_is_deterministic():
    A = _sym(5, 4)
    w, w_next = _pair(5, 5)
    f = lambda x: 0.5 * x @ A @ x - torch.cos(x).sum()  # noqa: E731
    a = local_smoothness(f, w, w_next)
    b = local_smoothness(f, w, w_next)
    assert a.value == b.value and a.details["ratios"] == b.details["ratios"]
    assert math.isfinite(a.value)
