"""λ_max(P⁻¹H) against eigvalsh(P^{-1/2} H P^{-1/2}) on real models with a real Adam state."""

import math

import pytest
import torch
import torch.nn.functional as F

from hessnorm import errors
from hessnorm.estimators import exact
from hessnorm.estimators.preconditioned import (
    ScaledOperator,
    edge_fraction,
    hvp_cost,
    preconditioned_sharpness,
    stability_threshold,
)
from hessnorm.operator import HessianOperator
from hessnorm.preconditioner import Preconditioner
from hessnorm.testing import MLP, ConvBN, TinyTransformer, char_tokens, init_params
from hessnorm.train.gpt import lm_loss


def _problem(name, seed=0):
    g = torch.Generator().manual_seed(seed)
    if name == "mlp":
        x, y = torch.randn(48, 12, generator=g), torch.randint(0, 4, (48,), generator=g)
        return init_params(MLP((12, 6, 4)), g), F.cross_entropy, x, y
    if name == "conv_bn":  # BatchNorm on batch statistics, as in the paper
        x = torch.randn(16, 1, 8, 8, generator=g)
        y = torch.randint(0, 4, (16,), generator=g)
        return init_params(ConvBN(channels=2, classes=4), g), F.cross_entropy, x, y
    x, y = char_tokens(12, block=4, vocab=8, seed=seed)
    model = init_params(TinyTransformer(vocab=8, dim=4, heads=2, block=4), g)
    return model, lm_loss, x, y


def _adam_after_steps(name, steps=4, lr=1e-2):
    """(operator in float64, Preconditioner from the optimizer's own state_dict, optimizer)."""
    model, loss_fn, x, y = _problem(name)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=lr, betas=(0.9, 0.99))
    for _ in range(steps):
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()
    op = HessianOperator.from_module(model, loss_fn, [(x, y)], dtype=torch.float64)
    P = Preconditioner.from_adam(opt.state_dict(), model, target=op)
    return op, P


@pytest.fixture(scope="module", params=["mlp", "conv_bn", "transformer"])
def problem(request):
    op, P = _adam_after_steps(request.param)
    H = exact.hessian(op)
    D = P.diag.rsqrt()
    lam = torch.linalg.eigvalsh(D[:, None] * H * D[None, :])
    return request.param, op, P, H, lam


def test_matches_dense_on_real_models(problem):
    name, op, P, H, lam = problem
    est = preconditioned_sharpness(op, P, k=3, tol=1e-6)
    top = float(lam[-1])
    scale = float(lam.abs().max())
    assert est.covers(top), (name, est, top)
    # Ritz values are lower bounds; at convergence the interval width bounds the error
    assert est.value <= top + 1e-9 * scale
    assert top - est.value <= est.high - est.low + 1e-9 * scale
    assert est.details["converged"] and abs(est.value - top) <= 1e-5 * abs(top)
    # the top 3 and the most negative curvature
    assert est.details["top_k"] == pytest.approx(
        lam.flip(0)[:3].tolist(), rel=1e-4, abs=1e-8 * scale
    )
    assert est.details["lambda_min"] >= float(lam[0]) - 1e-9 * scale
    assert est.details["lambda_min_low"] <= float(lam[0]) + 1e-9 * scale
    # eigenvalues of P⁻¹H itself (not symmetric) agree with the symmetric form
    ev = torch.linalg.eigvals(torch.diag(1 / P.diag) @ H).real.max()
    assert float(ev) == pytest.approx(top, rel=1e-8)
    # the threshold comes from the optimizer's own lr and β₁
    assert est.details["threshold"] == pytest.approx(38 / 1e-2)
    assert est.details["edge_fraction"] == pytest.approx(est.value / (38 / 1e-2))
    assert est.details["step"] == 4 and est.n_hvp == est.details["iterations"]


def test_same_seed_same_number():
    H = _rand_sym(60, 0)
    p = _rand_p(60, 0)
    a = preconditioned_sharpness(H, p, seed=3, max_iter=10)
    b = preconditioned_sharpness(H, p, seed=3, max_iter=10)
    assert (a.value, a.low, a.high) == (b.value, b.low, b.high)


def _rand_sym(d, seed):
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(d, d, generator=g, dtype=torch.float64)
    ev = torch.linspace(-1, 1, d, dtype=torch.float64) ** 3  # small gaps at the top end
    Q = torch.linalg.qr(A)[0]
    return Q @ torch.diag(ev * 5) @ Q.T


def _rand_p(d, seed):
    g = torch.Generator().manual_seed(seed + 1000)
    return torch.exp(torch.randn(d, generator=g, dtype=torch.float64))  # spread over e^±3


def test_interval_coverage_across_seeds_when_stopped_early():
    """Stopped after 6 iterations (far from converged), ``high`` must still bound λ_max in
    at least ``confidence`` of the seeds (it is a 1 − δ bound); 200 seeds at 90% nominal."""
    H, p = _rand_sym(80, 1), _rand_p(80, 1)
    D = p.rsqrt()
    top = float(torch.linalg.eigvalsh(D[:, None] * H * D[None, :])[-1])
    hits = widths = 0
    for seed in range(200):
        e = preconditioned_sharpness(H, p, seed=seed, max_iter=6, confidence=0.9)
        assert e.low <= top  # deterministic end: never violated
        hits += e.high >= top
        widths += (e.high - e.low) / top
    assert hits >= 0.9 * 200 - 3 * math.sqrt(200 * 0.09)
    assert widths / 200 > 1e-3  # the interval is not trivially tight at 6 iterations


def test_identity_preconditioner_is_plain_lanczos():
    H = _rand_sym(30, 2)
    e = preconditioned_sharpness(H, torch.ones(30, dtype=torch.float64), tol=1e-8)
    assert e.value == pytest.approx(float(torch.linalg.eigvalsh(H)[-1]), rel=1e-8)
    assert e.details["threshold"] is None and e.details["edge_fraction"] is None


def test_threshold_and_fraction_closed_forms():
    assert stability_threshold(1e-3, 0.9) == pytest.approx(38_000)
    assert stability_threshold(0.5, 0.0) == pytest.approx(4.0)
    assert edge_fraction(380.0, 0.1, 0.9) == pytest.approx(1.0)
    with pytest.raises(errors.ConfigError, match="learning rate"):
        stability_threshold(0.0, 0.9)
    with pytest.raises(errors.ConfigError, match="beta1"):
        stability_threshold(1e-3, 1.0)


def test_scaled_operator_is_dhd():
    H = _rand_sym(7, 3)
    s = _rand_p(7, 3)
    op = ScaledOperator(H, s)
    assert torch.allclose(op.dense(), s[:, None] * H * s[None, :])
    V = torch.randn(3, 7, dtype=torch.float64)
    assert torch.allclose(op.hvp(V), V @ (s[:, None] * H * s[None, :]))


def test_hvp_cost():
    assert hvp_cost({}, 10**6) == 300 and hvp_cost({"max_iter": 40}, 10) == 10


def test_errors_name_the_problem():
    H = _rand_sym(5, 0)
    with pytest.raises(errors.ShapeError, match="shape"):
        preconditioned_sharpness(H, torch.ones(4, dtype=torch.float64))
    with pytest.raises(errors.ConfigError, match="positive and finite"):
        preconditioned_sharpness(H, torch.tensor([1.0, 1, 0, 1, 1], dtype=torch.float64))
    with pytest.raises(errors.ConfigError, match="Preconditioner or a positive tensor"):
        preconditioned_sharpness(H, [1.0] * 5)
    with pytest.raises(errors.ConfigError, match="k must be"):
        preconditioned_sharpness(H, torch.ones(5, dtype=torch.float64), k=6)
    with pytest.raises(errors.ConfigError, match="tol"):
        preconditioned_sharpness(H, torch.ones(5, dtype=torch.float64), tol=0)
    with pytest.raises(errors.ConfigError, match="confidence"):
        preconditioned_sharpness(H, torch.ones(5, dtype=torch.float64), confidence=1.0)
    with pytest.raises(errors.ConfigError, match="hvp_rel_error"):
        preconditioned_sharpness(H, torch.ones(5, dtype=torch.float64), hvp_rel_error=0.7)
    rotated = Preconditioner(torch.ones(5), rotation="randperm:depth=2,seed=0")
    with pytest.raises(errors.ConfigError, match="rotated coordinates"):
        preconditioned_sharpness(H, rotated)
