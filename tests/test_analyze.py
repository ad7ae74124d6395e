"""Checkpoint loading (all kinds, safely) and the analyze API/CLI, end to end."""

import json
import pathlib
import subprocess
import sys

import pandas as pd
import pytest
import torch
from torch import nn

import hessnorm as hn
from hessnorm import errors
from hessnorm.checkpoint import detect, load, load_state_into

ROOT = pathlib.Path(__file__).resolve().parents[1]


class Payload:
    """Unpickling this touches a file: proof that code ran."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def test_malicious_pickle_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    bad = tmp_path / "evil.pt"
    torch.save({"model": {"w": torch.ones(2)}, "extra": Payload(marker)}, bad)
    with pytest.raises(
        errors.CheckpointError, match="refused to load .*arbitrary unpickling.*never does it"
    ):
        detect(bad)
    with pytest.raises(errors.CheckpointError, match="refused"):
        hn.analyze([bad], progress=False, log=False)
    assert not marker.exists()
    # the same payload through the CLI: refused, exit code 1, nothing executed
    proc = subprocess.run(
        [sys.executable, "-m", "hessnorm.cli", "analyze", str(bad), "--quiet"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert proc.returncode == 1 and "refused to load" in proc.stderr
    assert not marker.exists()


def _nanogpt_checkpoint(path, compiled=True):
    from hessnorm.train.gpt import GPT, GPTConfig

    args = dict(
        n_layer=1, n_head=2, n_embd=16, block_size=16, bias=False, vocab_size=256, dropout=0.0
    )
    torch.manual_seed(0)
    model = GPT(GPTConfig(**args))
    state = model.state_dict()
    if compiled:
        state = {"_orig_mod." + k: v for k, v in state.items()}
    ckpt = {
        "model": state,
        "optimizer": {"state": {}, "param_groups": [{"lr": 6e-4, "params": [0]}]},
        "model_args": args,
        "iter_num": 250,
        "best_val_loss": torch.tensor(2.5),
        "config": {"batch_size": 12, "learning_rate": 6e-4, "dataset": "openwebtext"},
    }
    torch.save(ckpt, path)
    return model


def test_nanogpt_checkpoint_analyzes_without_extra_arguments(tmp_path):
    path = tmp_path / "ckpt.pt"
    model = _nanogpt_checkpoint(path)
    assert detect(path) == "nanogpt"
    net, batches, loss_fn, meta = load(path, eval_examples=8)
    assert meta["kind"] == "nanogpt" and meta["step"] == 250 and "embedded" in meta["data"]
    for k, v in model.state_dict().items():
        assert torch.equal(net.state_dict()[k], v), k
    df = hn.analyze(
        [path], estimators="spectral", eval_examples=8, progress=False, log=False, tol=1e-3
    )
    assert list(df["kind"]) == ["nanogpt"] and df["step"].iloc[0] == 250
    op = hn.HessianOperator.from_module(net, loss_fn, batches)
    ref = hn.spectral_norm(op, tol=1e-3, seed=0, progress=False)
    assert df["value"].iloc[0] == pytest.approx(ref.value, rel=1e-6)


def test_nanogpt_data_dir_bin_files(tmp_path):
    import numpy as np

    path = tmp_path / "ckpt.pt"
    _nanogpt_checkpoint(path, compiled=False)
    tokens = (np.arange(4000) * 7 % 251).astype(np.uint16)
    tokens.tofile(tmp_path / "train.bin")
    tokens.tofile(tmp_path / "val.bin")
    _, batches, _, meta = load(path, data_dir=str(tmp_path), eval_examples=8)
    assert "val.bin" in meta["data"]
    x, y = batches[0]
    assert torch.equal(x[:, 1:], y[:, :-1]) and int(x.max()) < 251


def test_state_dict_mismatch_lists_names():
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    state = {"0.weight": torch.zeros(4, 3), "0.bias": torch.zeros(5), "2.weight": torch.zeros(1)}
    with pytest.raises(errors.CheckpointError) as info:
        load_state_into(model, state)
    msg = str(info.value)
    assert "missing from the checkpoint: ['1.weight', '1.bias']" in msg
    assert "unexpected in the checkpoint: ['2.weight']" in msg
    assert "0.bias: checkpoint (5,) vs model (4,)" in msg


def test_state_dict_needs_model_and_data(tmp_path):
    path = tmp_path / "w.pt"
    torch.save(nn.Linear(2, 2).state_dict(), path)
    assert detect(path) == "state_dict"
    with pytest.raises(errors.ConfigError, match="--model, --data"):
        load(path)
    with pytest.raises(errors.ConfigError, match="has no callable 'nope'"):
        load(path, model="hessnorm.models:nope", data="hessnorm.models:nope")


def test_own_checkpoint_example_pt_and_safetensors_agree(tmp_path):
    sys.path.insert(0, str(ROOT / "examples"))
    try:
        import analyze_own_checkpoint as ex
    finally:
        sys.path.pop(0)
    df = ex.main(tmp_path, small=True)
    assert set(df["estimator"]) == {"spectral", "l11", "blockwise:by_tensor"}
    pt, st = df.iloc[:3], df.iloc[3:]
    assert list(pt["value"]) == list(st["value"])  # same weights, same seed: same numbers
    # the numbers are those of the estimator API on the same operator and seed
    net, batches, loss_fn, _ = load(
        tmp_path / "weights.pt", model=ex.make_model, data=ex.eval_batches, dtype=torch.float64
    )
    op = hn.HessianOperator.from_module(net, loss_fn, batches)
    assert pt["value"].iloc[1] == hn.l11_norm(op, n=20, seed=0, progress=False).value


def test_analyze_rejects_unknown_estimator(tmp_path):
    with pytest.raises(errors.ConfigError, match="unknown estimator.*choose from spectral"):
        hn.analyze([tmp_path], estimators="trace", progress=False)


def test_train_analyze_report_end_to_end(tmp_path):
    """Tiny run -> analyze its folder -> report; numbers equal the estimator API's."""
    from hessnorm.train import TrainConfig, train

    run = tmp_path / "adam"
    train(
        TrainConfig(
            task="resnet",
            optimizer="adam",
            steps=4,
            ckpt_every=2,
            out=str(run),
            seed=0,
            progress=False,
        )
    )
    results = tmp_path / "results.csv"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "hessnorm.cli",
            "analyze",
            str(run),
            "--estimators",
            "spectral,l11",
            "--n-cauchy",
            "10",
            "--tol",
            "1e-3",
            "--eval-examples",
            "32",
            "--dtype",
            "float64",
            "--out",
            str(results),
            "--quiet",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    df = pd.read_csv(results)
    steps = sorted(set(df["step"]))
    assert steps == [2, 4] and len(df) == 4
    last = df[(df["step"] == 4) & (df["estimator"] == "l11")].iloc[0]
    net, batches, loss_fn, _ = load(last["checkpoint"], eval_examples=32, dtype=torch.float64)
    op = hn.HessianOperator.from_module(net, loss_fn, batches)
    direct = hn.l11_norm(op, n=10, seed=0, progress=False)
    assert last["value"] == pytest.approx(direct.value, rel=1e-12)
    assert last["low"] == pytest.approx(direct.low, rel=1e-12)
    details = json.loads(last["details"])
    assert details  # per-tensor breakdown travels with the row

    out = tmp_path / "report"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "hessnorm.cli",
            "report",
            str(run),
            str(results),
            "--out",
            str(out),
            "--quiet",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    assert (out / "report.md").is_file() and (out / "report.html").is_file()
    assert list(out.glob("*.png")) and list(out.glob("*.csv"))
    text = (out / "report.md").read_text()
    assert f"{last['value'] / last['d']:.4g}"[:4] in text or f"{last['value']:.4g}"[:4] in text


def test_state_dict_with_task(tmp_path):
    """A plain state_dict of a trainer task's model analyzes with --task alone."""
    from hessnorm.train.tasks import build_task

    task = build_task("resnet", seed=1)
    path = tmp_path / "resnet.safetensors"
    from safetensors.torch import save_file

    save_file(task.model.state_dict(), str(path))
    df = hn.analyze(
        [path],
        estimators="spectral",
        task="resnet",
        eval_examples=32,
        tol=1e-3,
        progress=False,
        log=False,
    )
    net, batches, loss_fn, meta = load(path, task="resnet", eval_examples=32)
    assert meta["task"] == "resnet" and sum(len(b[1]) for b in batches) == 32
    op = hn.HessianOperator.from_module(net, loss_fn, batches)
    assert df["value"].iloc[0] == pytest.approx(
        hn.spectral_norm(op, tol=1e-3, progress=False).value, rel=1e-6
    )


def test_tied_weight_stored_once_is_not_missing():
    from hessnorm.models import TinyTransformer

    model = TinyTransformer()
    state = {k: v.clone() for k, v in model.state_dict().items() if k != "head.weight"}
    load_state_into(TinyTransformer(), state)  # head.weight is wte.weight: nothing missing
    del state["ln_f.bias"]
    with pytest.raises(
        errors.CheckpointError, match=r"missing from the checkpoint: \['ln_f.bias'\]"
    ):
        load_state_into(TinyTransformer(), state)
