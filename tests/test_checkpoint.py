"""Tests of hessnorm.checkpoint: every kind loads safely, through the task that owns its data."""

import pathlib
import subprocess
import sys

import pytest
import torch
from torch import nn

import hessnorm as hn
from hessnorm import errors
from hessnorm.checkpoint import detect, load, load_state_into, resolve_callable
from hessnorm.train.tasks import build_task, lm_windows

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


def test_nanogpt_checkpoint_analyzes_with_builtin_data(tmp_path):
    path = tmp_path / "ckpt.pt"
    model = _nanogpt_checkpoint(path)
    assert detect(path) == "nanogpt"
    net, batches, loss_fn, meta = load(path, eval_examples=8, data="builtin")
    assert meta["kind"] == "nanogpt" and meta["step"] == 250 and "builtin" in meta["data"]
    for k, v in model.state_dict().items():
        assert torch.equal(net.state_dict()[k], v), k
    df = hn.analyze(
        [path],
        estimators="spectral",
        eval_examples=8,
        progress=False,
        log=False,
        tol=1e-3,
        data="builtin",
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
        load(path, model="hessnorm.testing:nope", data="hessnorm.testing:nope")


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
    from hessnorm.testing import TinyTransformer

    model = TinyTransformer()
    state = {k: v.clone() for k, v in model.state_dict().items() if k != "head.weight"}
    load_state_into(TinyTransformer(), state)  # head.weight is wte.weight: nothing missing
    del state["ln_f.bias"]
    with pytest.raises(
        errors.CheckpointError, match=r"missing from the checkpoint: \['ln_f.bias'\]"
    ):
        load_state_into(TinyTransformer(), state)


def test_same_weights_in_three_formats_give_identical_analyze_rows(tmp_path):
    """A hessnorm run checkpoint, a nanoGPT ckpt.pt and a safetensors state_dict of the
    same gpt weights load the same model on the same evaluation windows (lm_windows),
    so analyze gives the same numbers, bit for bit."""
    from safetensors.torch import save_file

    from hessnorm.train import TrainConfig, train
    from hessnorm.train.gpt import GPTConfig

    summary = train(
        TrainConfig(task="gpt", steps=1, out=str(tmp_path / "run"), progress=False, seed=3)
    )
    run_ckpt = pathlib.Path(summary["checkpoint"])
    saved = torch.load(run_ckpt, weights_only=True)
    args = {k: saved["task_options"][k] for k in GPTConfig.__dataclass_fields__}
    nano = tmp_path / "ckpt.pt"
    torch.save({"model": saved["model"], "model_args": args, "iter_num": 1}, nano)
    st = tmp_path / "weights.safetensors"
    save_file({k: v.clone().contiguous() for k, v in saved["model"].items()}, str(st))

    kw = dict(estimators="spectral,l11", n_cauchy=8, tol=1e-2, eval_examples=8)
    kw |= dict(progress=False, log=False)
    rows = [
        hn.analyze(run_ckpt, **kw),
        hn.analyze(nano, data="builtin", **kw),
        hn.analyze(st, task="gpt", **kw),
    ]
    assert [r["kind"].iloc[0] for r in rows] == ["hessnorm-run", "nanogpt", "state_dict"]
    same = ["task", "estimator", "metric", "bound", "value", "low", "high", "confidence"]
    same += ["bound_per_dim", "n_hvp", "d"]
    for other in rows[1:]:
        pd_equal = rows[0][same].reset_index(drop=True).equals(other[same].reset_index(drop=True))
        assert pd_equal, (rows[0][same], other[same])


def test_lm_windows_is_the_rule_of_every_lm_format(tmp_path):
    # the gpt task's evaluation batches are lm_windows in batches of 16 ...
    task = build_task("gpt", {"n_layer": 1, "n_embd": 16, "n_head": 2, "block_size": 16})
    from hessnorm.train.data import load_text

    _, val, _ = load_text(None)
    x, y = lm_windows(val, 20, 16)
    batches = task.eval_batches(20)
    assert [len(b[0]) for b in batches] == [16, 4]
    assert torch.equal(torch.cat([b[0] for b in batches]), x)
    assert torch.equal(torch.cat([b[1] for b in batches]), y)
    # ... targets are inputs shifted by one, starts evenly spaced over the split
    assert torch.equal(x[:, 1:], y[:, :-1])
    assert x[0, 0] == int(val[0]) and y[-1, -1] == int(val[len(val) - 1])
    # ... and a nanoGPT checkpoint of the same config gets exactly these windows
    path = tmp_path / "ckpt.pt"
    _nanogpt_checkpoint(path)
    _, nb, _, _ = load(path, eval_examples=20, data="builtin")
    x2, _ = lm_windows(val, 20, 16)
    assert torch.equal(torch.cat([b[0] for b in nb]), x2)


def test_lm_windows_errors():
    with pytest.raises(errors.ConfigError, match="fewer than block_size"):
        lm_windows(list(range(5)), 2, 4)
    with pytest.raises(errors.ConfigError, match=">= 1"):
        lm_windows(list(range(50)), 0, 4)


def test_user_file_is_not_registered_in_sys_modules(tmp_path):
    f = tmp_path / "factory.py"
    f.write_text("import torch\ndef make():\n    return torch.nn.Linear(2, 2)\n")
    before = set(sys.modules)
    assert isinstance(resolve_callable(f"{f}:make", "model")(), nn.Linear)
    assert set(sys.modules) - before == set()
    with pytest.raises(errors.ConfigError, match="does not exist"):
        resolve_callable(f"{tmp_path / 'nope.py'}:make", "model")
    with pytest.raises(errors.ConfigError, match="module:function"):
        resolve_callable("no_colon", "model")
