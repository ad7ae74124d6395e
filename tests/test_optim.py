"""Optimizers of paper 000: invariances (Theorem 2.2) and equivalences (Alg. 1-3).

Everything runs in float64 on small quadratics and a tiny MLP, where two
mathematically equal trajectories agree to ~1e-13 after 50 steps; 1e-10 leaves
three orders of margin for rounding, while a genuinely different algorithm moves
the iterates by > 1e-3 (asserted, so each test can fail).
"""

from __future__ import annotations

import copy

import pytest
import torch

from hessnorm.errors import ConfigError, SelectionError, ShapeError
from hessnorm.optim import AdaSGD, BlockwiseAdam, Rotated, SignGD, make_optimizer

D = 24
STEPS = 50


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _orthogonal(d, seed):
    q, r = torch.linalg.qr(torch.randn(d, d, dtype=torch.float64, generator=_gen(seed)))
    return q * torch.sign(torch.diagonal(r))


def _quadratic(seed=0):
    """An ill-conditioned, non-diagonal SPD Hessian with a fixed seed."""
    q = _orthogonal(D, seed + 100)
    eig = torch.logspace(-3, 0, D, dtype=torch.float64)
    # mostly diagonal: rotate only a little, so Adam's coordinate choice matters
    h = torch.diag(eig) + 0.05 * (q @ torch.diag(eig) @ q.T)
    return (h + h.T) / 2


class _Dense:
    """A dense orthogonal matrix with the hessnorm.rotation interface."""

    def __init__(self, q):
        self.q, self.d = q, q.shape[0]

    def apply(self, x):
        return x @ self.q.T

    def apply_T(self, x):
        return x @ self.q


def _run(make_opt, h, x0, steps=STEPS):
    """Iterates x_1..x_T of an optimizer on L(x) = ½ xᵀHx (exact gradient Hx)."""
    x = torch.nn.Parameter(x0.clone())
    opt = make_opt([x])
    out = []
    for _ in range(steps):
        opt.zero_grad()
        x.grad = h @ x.detach()
        opt.step()
        out.append(x.detach().clone())
    return torch.stack(out)


def _x0(seed=1):
    return torch.rand(D, dtype=torch.float64, generator=_gen(seed))


def test_adasgd_is_rotation_invariant_and_adam_is_not():
    h, x0, R = _quadratic(), _x0(), _orthogonal(D, 7)
    h_rot = R.T @ h @ R  # Hessian of L∘R
    for name, make in {
        "adasgd": lambda ps: AdaSGD(ps, lr=0.05, betas=(0.9, 0.99)),
        "adam": lambda ps: torch.optim.Adam(ps, lr=0.05, betas=(0.9, 0.99)),
    }.items():
        xs = _run(make, h, x0)
        xs_rot = _run(make, h_rot, R.T @ x0)
        gap = (xs_rot - xs @ R).abs().max().item()
        if name == "adasgd":
            assert gap < 1e-10, f"AdaSGD on L∘R left R^T x_t by {gap:.3e}"
        else:
            assert gap > 1e-3, f"Adam on L∘R should differ from R^T x_t; gap {gap:.3e}"


def test_adam_and_signgd_are_permutation_invariant():
    h, x0 = _quadratic(), _x0()
    perm = torch.randperm(D, generator=_gen(3))
    for make in (
        lambda ps: torch.optim.Adam(ps, lr=0.05, betas=(0.9, 0.99)),
        lambda ps: SignGD(ps, lr=0.01, momentum=0.5),
        lambda ps: BlockwiseAdam(
            ps, torch.arange(D), lr=0.05, bias_correction=False, eps_inside=True
        ),
    ):
        xs = _run(make, h, x0)
        xs_perm = _run(make, h[perm][:, perm], x0[perm])  # L∘P from Pᵀx0, exactly
        gap = (xs_perm - xs[:, perm]).abs().max().item()
        assert gap < 1e-10, f"a coordinate-wise method must commute with P; gap {gap:.3e}"


class _MLP(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.a = torch.nn.Linear(5, 7)
        self.b = torch.nn.Linear(7, 3)

    def forward(self, x):
        return self.b(torch.tanh(self.a(x)))


def _train_mlp(make_opt, steps=20, seed=0):
    torch.manual_seed(0)  # only the model's initial weights; identical for every optimizer
    model = _MLP().double()
    x = torch.randn(32, 5, dtype=torch.float64, generator=_gen(seed))
    y = torch.randn(32, 3, dtype=torch.float64, generator=_gen(seed + 1))
    opt = make_opt(model)
    hist = []
    for _ in range(steps):
        opt.zero_grad()
        ((model(x) - y) ** 2).mean().backward()
        opt.step()
        hist.append(torch.cat([p.detach().reshape(-1).clone() for p in model.parameters()]))
    return torch.stack(hist)


def _n_params(model):
    return sum(p.numel() for p in model.parameters())


def test_blockwise_adam_with_coordinates_equals_torch_adam():
    kw = dict(lr=0.01, betas=(0.9, 0.99), eps=1e-8)
    ref = _train_mlp(lambda m: torch.optim.Adam(m.parameters(), **kw))
    mine = _train_mlp(lambda m: BlockwiseAdam(m.parameters(), torch.arange(_n_params(m)), **kw))
    assert (mine - ref).abs().max().item() < 1e-12
    wd = _train_mlp(lambda m: torch.optim.AdamW(m.parameters(), weight_decay=0.1, **kw))
    mine_wd = _train_mlp(
        lambda m: BlockwiseAdam(m.parameters(), torch.arange(_n_params(m)), weight_decay=0.1, **kw)
    )
    assert (mine_wd - wd).abs().max().item() < 1e-12
    assert (wd - ref).abs().max().item() > 1e-4  # weight decay is really on


def test_blockwise_adam_with_partition_objects():
    from hessnorm import partition as part

    kw = dict(lr=0.01, betas=(0.9, 0.99))
    ref = _train_mlp(lambda m: torch.optim.Adam(m.parameters(), **kw))
    mine = _train_mlp(
        lambda m: BlockwiseAdam(m.parameters(), part.Partition.coordinates(_n_params(m)), **kw)
    )
    assert (mine - ref).abs().max().item() < 1e-12
    single = _train_mlp(
        lambda m: BlockwiseAdam(m.parameters(), part.Partition.single(_n_params(m)), **kw)
    )
    ada = _train_mlp(lambda m: AdaSGD(m.parameters(), **kw))
    assert (single - ada).abs().max().item() < 1e-12


def _reference_blockwise(params0, grad_fn, labels, lr, b1, b2, eps, v0, steps):
    """Algorithm 3 of paper 000 written out with Python loops over blocks."""
    x = params0.clone()
    m = torch.zeros_like(x)
    n_blocks = int(labels.max()) + 1
    v = torch.full((n_blocks,), v0, dtype=x.dtype)
    out = []
    for _ in range(steps):
        g = grad_fn(x)
        m = b1 * m + (1 - b1) * g
        for b in range(n_blocks):
            idx = labels == b
            v[b] = b2 * v[b] + (1 - b2) * (g[idx] ** 2).sum() / idx.sum()
        x = x - lr * m / torch.sqrt(v[labels] + eps)
        out.append(x.clone())
    return torch.stack(out)


@pytest.mark.parametrize("blocks", ["single", "by_tensor", "coordinates"])
def test_paper_algorithm_3_as_written(blocks):
    h, x0 = _quadratic(), _x0()
    labels = {
        "single": torch.zeros(D, dtype=torch.long),
        "by_tensor": torch.tensor([0] * 5 + [1] * 12 + [2] * 7),
        "coordinates": torch.arange(D),
    }[blocks]
    kw = dict(lr=0.02, b1=0.9, b2=0.99, eps=1e-6, v0=0.3)
    ref = _reference_blockwise(x0, lambda x: h @ x, labels, steps=STEPS, **kw)
    mine = _run(
        lambda ps: BlockwiseAdam(
            ps,
            labels,
            lr=kw["lr"],
            betas=(kw["b1"], kw["b2"]),
            eps=kw["eps"],
            bias_correction=False,
            eps_inside=True,
            v0=kw["v0"],
        ),
        h,
        x0,
    )
    assert (mine - ref).abs().max().item() < 1e-12
    if blocks == "single":
        ada = _run(
            lambda ps: AdaSGD(
                ps,
                lr=0.02,
                betas=(0.9, 0.99),
                eps=1e-6,
                bias_correction=False,
                eps_inside=True,
                v0=0.3,
            ),
            h,
            x0,
        )
        assert torch.equal(ada, mine)


def test_switches_change_the_trajectory():
    h, x0 = _quadratic(), _x0()
    base = dict(lr=0.02, betas=(0.9, 0.99), eps=1e-3)
    switches = ({}, {"bias_correction": False}, {"eps_inside": True}, {"v0": 1.0})
    vals = [_run(lambda ps, sw=sw: AdaSGD(ps, **base, **sw), h, x0, steps=10) for sw in switches]
    for other in vals[1:]:
        assert (other - vals[0]).abs().max().item() > 1e-5


def test_rotated_wrapper_equals_the_base_on_the_rotated_loss():
    h, x0, Q = _quadratic(), _x0(), _orthogonal(D, 11)
    R = _Dense(Q)

    def adam(ps):
        return torch.optim.Adam(ps, lr=0.05, betas=(0.9, 0.99))

    # Adam on L∘R from Rᵀx0, mapped back by R, vs Rotated(Adam, R) on L from x0.
    xs_rot = _run(adam, Q.T @ h @ Q, Q.T @ x0)
    xs_wrapped = _run(lambda ps: Rotated(ps, adam, R), h, x0)
    assert (xs_wrapped - xs_rot @ Q.T).abs().max().item() < 1e-10
    plain = _run(adam, h, x0)
    assert (xs_wrapped - plain).abs().max().item() > 1e-3
    # Rotation-invariant AdaSGD is unchanged by the wrapper (Theorem 2.2).
    ada = lambda ps: AdaSGD(ps, lr=0.05, betas=(0.9, 0.99))  # noqa: E731
    gap = (_run(lambda ps: Rotated(ps, ada, R), h, x0) - _run(ada, h, x0)).abs().max()
    assert gap.item() < 1e-10


def test_rotated_state_dict_resumes_exactly_and_lr_follows_the_wrapper():
    h, x0, R = _quadratic(), _x0(), _Dense(_orthogonal(D, 5))

    def make(ps):
        return Rotated(ps, lambda s: torch.optim.Adam(s, lr=0.05), R, weight_decay=0.01)

    full = _run(make, h, x0, steps=20)
    x = torch.nn.Parameter(x0.clone())
    opt = make([x])
    for _ in range(10):
        x.grad = h @ x.detach()
        opt.step()
    saved_x, saved = x.detach().clone(), copy.deepcopy(opt.state_dict())
    x2 = torch.nn.Parameter(saved_x)
    opt2 = make([x2])
    opt2.load_state_dict(saved)
    for _ in range(10):
        x2.grad = h @ x2.detach()
        opt2.step()
    assert torch.equal(x2.detach(), full[-1])
    opt2.param_groups[0]["lr"] = 0.0
    before = x2.detach().clone()
    x2.grad = h @ x2.detach()
    opt2.step()
    # lr 0 leaves only weight decay, which lr also scales: nothing moves
    assert torch.equal(x2.detach(), before)


def test_signgd_steps_by_sign():
    x = torch.nn.Parameter(torch.tensor([1.0, 1.0, 1.0], dtype=torch.float64))
    opt = SignGD([x], lr=0.25)
    x.grad = torch.tensor([5.0, -1e-12, 0.0], dtype=torch.float64)
    opt.step()
    assert x.detach().tolist() == [0.75, 1.25, 1.0]


def test_make_optimizer_names_and_errors():
    model = _MLP().double()
    for name in ("adam", "adasgd", "sgd", "signgd", "rmsprop"):
        opt = make_optimizer(name, model.named_parameters(), lr=1e-3)
        assert isinstance(opt, torch.optim.Optimizer)
    paper_adam = make_optimizer("adam", model.named_parameters(), lr=1e-3, eps_inside=True)
    assert isinstance(paper_adam, BlockwiseAdam)
    with pytest.raises(ConfigError, match="unknown optimizer 'adamm'"):
        make_optimizer("adamm", model.named_parameters(), lr=1e-3)
    with pytest.raises(ConfigError, match="betas"):
        AdaSGD(model.parameters(), betas=(1.0, 0.9))
    with pytest.raises(SelectionError, match="covers 3 coordinates"):
        BlockwiseAdam(model.parameters(), torch.zeros(3, dtype=torch.long))
    with pytest.raises(SelectionError, match="every id used"):
        BlockwiseAdam([torch.zeros(3, requires_grad=True)], torch.tensor([0, 2, 2]))
    with pytest.raises(ConfigError, match="weight_decay=0"):
        Rotated(
            list(model.parameters()),
            lambda ps: torch.optim.AdamW(ps, weight_decay=0.1),
            _Dense(torch.eye(_n_params(model), dtype=torch.float64)),
        )
    with pytest.raises(ShapeError, match="R\\^3"):
        Rotated(
            list(model.parameters()),
            lambda ps: torch.optim.Adam(ps),
            _Dense(torch.eye(3, dtype=torch.float64)),
        )


def test_rotated_adam_by_name():
    model = _MLP().double()
    opt = make_optimizer(
        "rotated-adam", model.named_parameters(), lr=1e-3, rotation="randperm:depth=2,seed=0"
    )
    assert isinstance(opt, Rotated)
    with pytest.raises(ConfigError, match="unknown rotation"):
        make_optimizer("rotated-adam", model.named_parameters(), lr=1e-3, rotation="spin:x=1")
