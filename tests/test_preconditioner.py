"""Adam's P read from optimizer state: torch Adam/AdamW, hessnorm runs, nanoGPT, HF Trainer."""

import json

import pytest
import torch
import torch.nn.functional as F

from hessnorm import errors
from hessnorm.checkpoint import load
from hessnorm.operator import HessianOperator
from hessnorm.preconditioner import (
    Preconditioner,
    adam_denominator,
    hf_param_order,
    nanogpt_param_order,
)
from hessnorm.rotation import parse as parse_rotation
from hessnorm.train.gpt import GPT, GPTConfig
from hessnorm.train.loop import TrainConfig, train


def _flat_params(model):
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


@pytest.mark.parametrize("cls", [torch.optim.Adam, torch.optim.AdamW])
def test_from_adam_reproduces_the_optimizers_own_update(cls):
    """P read from the state after step t+1 explains the update of step t+1 exactly:
    Δθ = −lr/(1 − β₁^{t+1})·m_{t+1}/P — which checks bias correction and eps placement
    against what torch actually did (AdamW's decay removed from Δθ)."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.Tanh(), torch.nn.Linear(4, 3))
    x, y = torch.randn(20, 5), torch.randint(0, 3, (20,))
    lr, betas, eps, wd = 3e-2, (0.8, 0.95), 1e-3, 0.1
    opt = cls(
        net.parameters(),
        lr=lr,
        betas=betas,
        eps=eps,
        weight_decay=wd if cls is torch.optim.AdamW else 0,
    )
    t = 4
    for _ in range(t):
        before = _flat_params(net)
        opt.zero_grad()
        F.cross_entropy(net(x), y).backward()
        opt.step()
        after = _flat_params(net)
    P = Preconditioner.from_adam(opt.state_dict(), net)
    m = torch.cat([opt.state[p]["exp_avg"].reshape(-1) for p in net.parameters()]).double()
    step = -lr / (1 - betas[0] ** t) * m / P.diag
    if cls is torch.optim.AdamW:
        step = step - lr * wd * before.double()
    assert torch.allclose((after - before).double(), step, rtol=1e-4, atol=1e-7)
    assert P.step == 4 and P.lr == lr and P.betas == betas and P.eps == eps
    assert P.names == tuple(n for n, _ in net.named_parameters())


def test_from_adam_two_groups_in_group_order_and_target_order():
    torch.manual_seed(1)
    net = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(
        [{"params": [net.bias]}, {"params": [net.weight], "weight_decay": 0.0}], lr=1e-2
    )
    net(torch.randn(4, 3)).pow(2).sum().backward()
    opt.step()
    P = Preconditioner.from_adam(
        opt.state_dict(), [("bias", net.bias), ("weight", net.weight)], target=["weight", "bias"]
    )
    want = torch.cat(
        [
            adam_denominator(opt.state[net.weight]["exp_avg_sq"], 1, 0.999, 1e-8).reshape(-1),
            adam_denominator(opt.state[net.bias]["exp_avg_sq"], 1, 0.999, 1e-8),
        ]
    )
    assert torch.equal(P.diag, want)
    # the parameters given in the wrong order: caught by shape, naming the tensor
    with pytest.raises(errors.CheckpointError, match="'weight' of shape"):
        Preconditioner.from_adam(opt.state_dict(), [("weight", net.weight), ("bias", net.bias)])


def test_from_adam_errors():
    net = torch.nn.Linear(2, 2)
    sgd = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    net(torch.ones(1, 2)).sum().backward()
    sgd.step()
    with pytest.raises(errors.CheckpointError, match="not Adam-type"):
        Preconditioner.from_adam(sgd.state_dict(), net)
    fresh = torch.optim.Adam(net.parameters())
    with pytest.raises(errors.CheckpointError, match="never stepped"):
        Preconditioner.from_adam(fresh.state_dict(), net)
    factored = {
        "state": {0: {"step": 1, "exp_avg_sq_row": torch.ones(2), "exp_avg_sq_col": torch.ones(2)}},
        "param_groups": [{"params": [0], "lr": 1e-3, "betas": (0.9, 0.99), "eps": 1e-8}],
    }
    with pytest.raises(errors.CheckpointError, match="Adafactor"):
        Preconditioner.from_adam(factored, [("w", (2, 2))])
    with pytest.raises(errors.CheckpointError, match="2 parameters were given"):
        Preconditioner.from_adam(factored, [("w", (2, 2)), ("b", (2,))])
    with pytest.raises(errors.CheckpointError, match="not an optimizer state_dict"):
        Preconditioner.from_adam({"w": torch.ones(1)}, net)
    two = torch.optim.Adam(
        [{"params": [net.weight], "lr": 1e-3}, {"params": [net.bias], "lr": 1e-2}]
    )
    net(torch.ones(1, 2)).sum().backward()
    two.step()
    with pytest.raises(errors.CheckpointError, match="different \\(lr, betas, eps\\)"):
        Preconditioner.from_adam(two.state_dict(), net)
    with pytest.raises(errors.ConfigError, match="pairs"):
        Preconditioner.from_adam(two.state_dict(), [1, 2])
    with pytest.raises(errors.ConfigError, match="positive and finite"):
        Preconditioner(torch.tensor([1.0, 0.0]))


# ------------------------------------------------------------------ hessnorm runs


def _run(tmp_path, optimizer, **kw):
    cfg = TrainConfig(
        task="quadratic",
        optimizer=optimizer,
        steps=3,
        out=str(tmp_path / optimizer),
        progress=False,
        task_options={"d": 12},
        lr=1e-2,
        **kw,
    )
    return train(cfg)["checkpoint"]


def _op(path):
    model, batches, loss_fn, meta = load(path)
    return HessianOperator.from_module(model, loss_fn, batches, dtype=torch.float64), meta


def test_hessnorm_adam_run(tmp_path):
    path = _run(tmp_path, "adam")
    op, _ = _op(path)
    P = Preconditioner.from_checkpoint(path, op)
    ckpt = torch.load(path, weights_only=True)
    st = ckpt["optimizer"]["state"][0]
    want = adam_denominator(
        st["exp_avg_sq"], float(st["step"]), 0.999 if P.betas[1] == 0.999 else P.betas[1], 1e-8
    )
    assert torch.equal(P.diag, want.reshape(-1)) and P.step == 3 and P.kind == "adam"
    assert P.lr == pytest.approx(ckpt["optimizer"]["param_groups"][0]["lr"])


def test_hessnorm_blockwise_and_adasgd_runs(tmp_path):
    p_ada = _run(tmp_path, "adasgd")
    op, _ = _op(p_ada)
    P = Preconditioner.from_checkpoint(p_ada, op)
    assert P.kind == "adasgd" and torch.all(P.diag == P.diag[0])  # one scalar
    v = torch.load(p_ada, weights_only=True)["optimizer"]["state"][0]["block_exp_avg_sq"]
    assert float(P.diag[0]) == pytest.approx(float(adam_denominator(v, 3, P.betas[1], 1e-8)[0]))
    p_bw = _run(tmp_path, "blockwise-adam", partition="coordinates")
    P = Preconditioner.from_checkpoint(p_bw, _op(p_bw)[0])
    assert P.kind == "blockwise-adam" and len(set(P.diag.tolist())) > 1
    # the paper switch (eps inside the square root) goes through BlockwiseAdam's state
    p_in = _run(tmp_path, "adam", eps_inside=True)
    P = Preconditioner.from_checkpoint(p_in, _op(p_in)[0])
    v = torch.load(p_in, weights_only=True)["optimizer"]["state"][0]["block_exp_avg_sq"]
    assert torch.allclose(P.diag, (v.double() / (1 - P.betas[1] ** 3) + 1e-8).sqrt())


def test_hessnorm_rotated_run_needs_the_rotated_operator(tmp_path):
    from hessnorm.estimators.preconditioned import preconditioned_sharpness

    path = _run(tmp_path, "rotated-adam")
    op, meta = _op(path)
    P = Preconditioner.from_checkpoint(path, op)
    assert P.rotation == meta["rotation"] and P.d == op.d
    with pytest.raises(errors.ConfigError, match="rotated coordinates"):
        preconditioned_sharpness(op, P)
    rop = op.rotated(parse_rotation(P.rotation, op.d))
    e = preconditioned_sharpness(rop, P, tol=1e-8)
    H = rop.dense()
    D = P.diag.rsqrt()
    assert e.value == pytest.approx(
        float(torch.linalg.eigvalsh(D[:, None] * H * D[None, :])[-1]), rel=1e-7
    )


def test_hessnorm_sgd_run_has_no_preconditioner(tmp_path):
    path = _run(tmp_path, "sgd")
    with pytest.raises(errors.ConfigError, match="no Adam preconditioner"):
        Preconditioner.from_checkpoint(path, _op(path)[0])


# ------------------------------------------------------------------ nanoGPT


def _nanogpt_configure_optimizers(model, weight_decay, learning_rate, betas):
    """nanoGPT's GPT.configure_optimizers, rewritten from its rule: parameters with
    dim >= 2 decay, the rest do not, both in named_parameters() order; AdamW, eps 1e-8."""
    param_dict = {pn: p for pn, p in model.named_parameters() if p.requires_grad}
    decay = [p for p in param_dict.values() if p.dim() >= 2]
    nodecay = [p for p in param_dict.values() if p.dim() < 2]
    groups = [
        {"params": decay, "weight_decay": weight_decay},
        {"params": nodecay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=learning_rate, betas=betas)


def test_nanogpt_ckpt(tmp_path):
    """A ckpt.pt written the way nanoGPT's train.py writes it (compiled-model prefix, mask
    buffers, tied lm_head), after a few AdamW iterations with a cosine-style lr change."""
    torch.manual_seed(0)
    args = dict(n_layer=1, n_head=2, n_embd=8, block_size=8, bias=True, vocab_size=20, dropout=0.0)
    model = GPT(GPTConfig(**args))
    opt = _nanogpt_configure_optimizers(model, 0.1, 6e-4, (0.9, 0.95))
    x = torch.randint(0, 20, (4, 8))
    for lr in [6e-4, 5e-4, 4e-4]:
        for g in opt.param_groups:
            g["lr"] = lr
        logits = model(x)
        F.cross_entropy(logits.reshape(-1, 20), x.roll(-1, 1).reshape(-1)).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    state = {"_orig_mod." + k: v for k, v in model.state_dict().items()}
    state["_orig_mod.transformer.h.0.attn.bias"] = torch.tril(torch.ones(8, 8)).view(1, 1, 8, 8)
    ckpt = {
        "model": state,
        "optimizer": opt.state_dict(),
        "model_args": args,
        "iter_num": 3,
        "best_val_loss": torch.tensor(3.0),
        "config": {"learning_rate": 6e-4, "beta1": 0.9, "beta2": 0.95},
    }
    path = tmp_path / "out" / "ckpt.pt"
    path.parent.mkdir()
    torch.save(ckpt, path)
    names = [n for n, _ in model.named_parameters()]
    P = Preconditioner.from_checkpoint(path, names)
    want = torch.cat(
        [
            adam_denominator(opt.state[p]["exp_avg_sq"], 3, 0.95, 1e-8).reshape(-1)
            for p in model.parameters()
        ]
    )
    assert torch.equal(P.diag, want)
    assert P.lr == pytest.approx(4e-4) and P.betas == (0.9, 0.95) and P.step == 3
    assert [n for n, _ in nanogpt_param_order(state)][: len(opt.param_groups[0]["params"])] == [
        n for n, p in model.named_parameters() if p.dim() >= 2
    ]
    # a subset in another order is fine; an unknown name is an error naming it
    sub = Preconditioner.from_checkpoint(path, ["transformer.ln_f.bias", "transformer.wpe.weight"])
    assert sub.d == 8 + 64
    with pytest.raises(errors.CheckpointError, match="lm_head.weight"):
        Preconditioner.from_checkpoint(path, ["lm_head.weight"])
    # a state whose groups were swapped (another rule) is caught by shape
    bad = dict(ckpt, optimizer=dict(ckpt["optimizer"]))
    g0, g1 = ckpt["optimizer"]["param_groups"]
    bad["optimizer"]["param_groups"] = [g1, g0]
    torch.save(bad, path)
    with pytest.raises(errors.CheckpointError, match="misaligned"):
        Preconditioner.from_checkpoint(path, names)


def test_state_dict_checkpoint_has_no_optimizer(tmp_path):
    p = tmp_path / "w.pt"
    torch.save(torch.nn.Linear(2, 1).state_dict(), p)
    with pytest.raises(errors.CheckpointError, match="holds no optimizer state"):
        Preconditioner.from_checkpoint(p, ["weight"])


# ------------------------------------------------------------------ HF Trainer


def test_hf_trainer_checkpoint(tmp_path):
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("accelerate")  # the Trainer needs it (extra dev)
    from hessnorm.testing import tiny_hf_folder  # noqa: F401  (same tiny GPT-2 family)

    torch.manual_seed(0)
    config = transformers.GPT2Config(
        vocab_size=32,
        n_positions=16,
        n_embd=8,
        n_layer=1,
        n_head=2,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=0,
        eos_token_id=0,
    )
    model = transformers.GPT2LMHeadModel(config)
    g = torch.Generator().manual_seed(0)
    data = [{"input_ids": ids, "labels": ids} for ids in torch.randint(0, 32, (8, 16), generator=g)]
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "hf"),
        max_steps=3,
        save_steps=3,
        save_strategy="steps",
        per_device_train_batch_size=4,
        learning_rate=1e-3,
        weight_decay=0.1,
        adam_beta2=0.98,
        report_to=[],
        use_cpu=True,
        logging_strategy="no",
        lr_scheduler_type="constant",
    )
    trainer = transformers.Trainer(model=model, args=args, train_dataset=data)
    trainer.train()
    folder = tmp_path / "hf" / "checkpoint-3"
    assert (folder / "optimizer.pt").is_file()
    names = [n for n, p in model.named_parameters()]
    P = Preconditioner.from_checkpoint(folder, names)
    opt = trainer.optimizer
    state = opt.state if hasattr(opt, "state") else opt.optimizer.state
    want = torch.cat(
        [
            adam_denominator(state[p]["exp_avg_sq"], 3, 0.98, 1e-8).reshape(-1)
            for p in model.parameters()
        ]
    )
    assert torch.allclose(P.diag, want, rtol=0, atol=0)
    assert P.step == 3 and P.betas == (0.9, 0.98) and P.lr == pytest.approx(1e-3)
    # the decay group is the Trainer's: no bias, no LayerNorm weight
    order = hf_param_order(model)
    n_decay = len(opt.param_groups[0]["params"])
    assert all("ln_" not in n and not n.endswith("bias") for n, _ in order[:n_decay])
    # the model passed explicitly gives the same P; trainer_state.json must agree
    assert torch.equal(Preconditioner.from_checkpoint(folder, names, model=model).diag, P.diag)
    info = json.loads((folder / "trainer_state.json").read_text())
    info["global_step"] = 7
    (folder / "trainer_state.json").write_text(json.dumps(info))
    with pytest.raises(errors.CheckpointError, match="different checkpoints"):
        Preconditioner.from_checkpoint(folder, names)
    (folder / "optimizer.pt").unlink()
    with pytest.raises(errors.CheckpointError, match="no optimizer.pt"):
        Preconditioner.from_checkpoint(folder, names)
