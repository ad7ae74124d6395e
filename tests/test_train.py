"""Reference trainer: tasks, smoke runs, rebuild, data safety, batched quadratic runs."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from hessnorm.errors import CheckpointError, ConfigError, NonFiniteError
from hessnorm.train import GPT, GPTConfig, TrainConfig, build_task, rebuild, train
from hessnorm.train.data import safe_unpickle
from hessnorm.train.tasks import quadratic_sigma

SMALL = {
    "quadratic": {"d": 30, "t": 0.05},
    "gpt": {"n_layer": 1, "n_embd": 16, "n_head": 2, "block_size": 16, "batch_size": 4},
    "resnet": {"width": 4, "stages": 1, "batch_size": 16},
}
OPTS = ("adam", "adasgd", "rotated-adam", "blockwise-adam", "sgd", "signgd", "rmsprop")


@pytest.mark.parametrize("task", sorted(SMALL))
def test_every_optimizer_trains_every_task(task, tmp_path):
    for opt in OPTS:
        res = train(
            TrainConfig(
                task=task,
                optimizer=opt,
                steps=3,
                lr=1e-3,
                progress=False,
                out=str(tmp_path / opt),
                task_options=SMALL[task],
                eval_examples=8,
            )
        )
        m = (tmp_path / opt / "metrics.csv").read_text().splitlines()
        assert len(m) == 4 and np.isfinite(res["eval_loss"]), (task, opt)
        ckpt = torch.load(res["checkpoint"], weights_only=True)
        assert ckpt["step"] == 3 and ckpt["config"]["optimizer"] == opt


def test_gpt_matches_nanogpt_names_and_shapes():
    cfg = GPTConfig(block_size=8, vocab_size=11, n_layer=2, n_head=2, n_embd=4, bias=True)
    model = GPT(cfg)
    sd = model.state_dict()
    expected = {
        "transformer.wte.weight": (11, 4),
        "transformer.wpe.weight": (8, 4),
        "transformer.h.1.attn.c_attn.weight": (12, 4),
        "transformer.h.1.attn.c_attn.bias": (12,),
        "transformer.h.0.mlp.c_fc.weight": (16, 4),
        "transformer.h.0.mlp.c_proj.weight": (4, 16),
        "transformer.ln_f.bias": (4,),
        "lm_head.weight": (11, 4),
        "transformer.h.0.ln_1.weight": (4,),
    }
    for k, shape in expected.items():
        assert tuple(sd[k].shape) == shape, k
    assert model.lm_head.weight is model.transformer.wte.weight
    no_bias = GPT(GPTConfig(block_size=8, vocab_size=11, n_layer=1, n_head=2, n_embd=4, bias=False))
    assert not any(k.endswith(".bias") for k in no_bias.state_dict())
    # a nanoGPT-style state_dict (both tied keys present) loads unchanged, strictly
    GPT(cfg).load_state_dict({k: v.clone() for k, v in sd.items()})
    logits = model(torch.randint(11, (3, 8)))
    assert logits.shape == (3, 8, 11)
    # causality: changing the last token leaves earlier logits unchanged
    idx = torch.randint(11, (1, 8))
    idx2 = idx.clone()
    idx2[0, -1] = (idx[0, -1] + 1) % 11
    assert torch.allclose(model(idx)[0, :-1], model(idx2)[0, :-1])


def test_rebuild_gives_the_hessian_of_the_quadratic(tmp_path):
    from hessnorm.estimators.exact import hessian
    from hessnorm.operator import HessianOperator
    from hessnorm.rotation import ExpSkew

    res = train(
        TrainConfig(
            task="quadratic",
            optimizer="adam",
            steps=4,
            dtype="float64",
            progress=False,
            out=str(tmp_path / "q"),
            task_options={"d": 30, "t": 0.3, "rotation_seed": 2},
        )
    )
    model, batches, loss_fn, meta = rebuild(res["checkpoint"])
    assert meta["task"] == "quadratic" and meta["step"] == 4 and meta["d"] == 30
    assert not model.training
    op = HessianOperator.from_module(model, loss_fn, batches)
    R = ExpSkew(30, 0.3, seed=2).matrix()
    exact = R.T @ torch.diag(quadratic_sigma(30)) @ R
    assert (hessian(op) - exact).abs().max().item() < 1e-12
    assert abs(op.loss() - res["eval_loss"]) < 1e-12


def test_rebuild_gpt_eval_batches_are_fixed(tmp_path):
    res = train(
        TrainConfig(
            task="gpt",
            optimizer="sgd",
            steps=2,
            progress=False,
            out=str(tmp_path / "g"),
            task_options=SMALL["gpt"],
        )
    )
    m1, b1, loss_fn, meta = rebuild(res["checkpoint"], eval_examples=12, dtype="float64")
    _, b2, _, _ = rebuild(res["checkpoint"], eval_examples=12, dtype="float64")
    assert sum(len(y) for _, y in b1) == 12
    assert all(torch.equal(x1, x2) for (x1, _), (x2, _) in zip(b1, b2))
    assert meta["optimizer"] == "sgd" and meta["corpus"]["n_bytes"] > 10**6
    loss = loss_fn(m1(b1[0][0]), b1[0][1])
    assert loss.dtype == torch.float64 and 3.0 < loss.item() < 6.0  # near ln 256 = 5.5


def test_errors_name_the_problem(tmp_path):
    with pytest.raises(ConfigError, match="unknown task 'mnist'"):
        train(TrainConfig(task="mnist", out=str(tmp_path / "a")))
    with pytest.raises(ConfigError, match="unknown optimizer 'lion'"):
        train(TrainConfig(task="gpt", optimizer="lion", out=str(tmp_path / "b")))
    out = tmp_path / "nan"
    with pytest.raises(NonFiniteError, match=r"at step \d+ .*last good checkpoint"):
        train(
            TrainConfig(
                task="quadratic",
                optimizer="sgd",
                lr=1e3,
                steps=400,
                ckpt_every=1,
                progress=False,
                out=str(out),
                task_options={"d": 20},
            )
        )
    last = sorted(out.glob("ckpt_*.pt"))[-1]
    assert torch.isfinite(torch.load(last, weights_only=True)["model"]["x"]).all()
    with pytest.raises(CheckpointError, match="not a hessnorm trainer checkpoint"):
        rebuild({"model": {}})


def test_cifar_python_batches_load_through_the_restricted_unpickler(tmp_path):
    from hessnorm.train.data import load_cifar10

    rng = np.random.default_rng(0)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8), b"labels": [0, 1, 2, 3]}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    x_tr, y_tr, x_ev, y_ev = load_cifar10(str(tmp_path))
    assert x_tr.shape == (20, 3, 32, 32) and y_ev.tolist() == [0, 1, 2, 3]

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    with pytest.raises(CheckpointError, match="refusing to unpickle builtins.print"):
        safe_unpickle(pickle.dumps({b"data": Evil()}))


def test_cifar_binary_batches_load(tmp_path):
    from hessnorm.train.data import load_cifar10

    folder = tmp_path / "cifar-10-batches-bin"
    folder.mkdir()
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        rec = np.zeros((2, 3073), dtype=np.uint8)
        rec[:, 0] = [7, 9]
        rec[1, 1:] = 255
        rec.tofile(folder / name)
    x_tr, y_tr, x_ev, y_ev = load_cifar10(str(tmp_path))
    assert y_tr.tolist() == [7, 9] * 5 and x_ev.shape == (2, 3, 32, 32)
    assert x_ev[1].mean() > x_ev[0].mean()


def test_quadratic_task_matches_paper_sigma():
    s = quadratic_sigma(1000)
    assert s.shape == (1000,) and (s[:11] == 1).all() and s[-1] == 1 / 990**2
    assert abs(s.sum().item() / 1000 - 0.01164) < 5e-6  # Table 1's (1,1)-norm/d of L0
    task = build_task("quadratic", {"d": 1000}, seed=4, dtype=torch.float64)
    x0 = torch.rand(1000, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    assert torch.equal(task.model.x.detach(), x0)
