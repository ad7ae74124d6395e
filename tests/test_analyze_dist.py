"""The command line at scale: ``torchrun -m hessnorm analyze`` (2 gloo ranks) equals one
process, and ``hessnorm analyze HF_FOLDER --text FILE`` analyses a save_pretrained folder."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from hessnorm.cli import main

ROOT = Path(__file__).resolve().parents[1]
TINY = '{"n_layer": 1, "n_embd": 16, "n_head": 2, "block_size": 16}'


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"
    return env


def _hessnorm(*args, torchrun: int = 0, timeout: int = 120):
    launcher = [sys.executable]
    if torchrun:
        launcher += ["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={torchrun}"]
    proc = subprocess.run(
        [*launcher, "-m", "hessnorm", *map(str, args)],
        capture_output=True,
        text=True,
        env=_env(),
        cwd=ROOT,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


@pytest.mark.skipif(not torch.distributed.is_available(), reason="no torch.distributed")
def test_torchrun_analyze_equals_one_process(tmp_path):
    run = tmp_path / "run"
    # `hessnorm train` and `hessnorm analyze` in this process (the same entry point as
    # the script); only the torchrun launch needs subprocesses
    args = ["--task=gpt", "--optimizer=adam", "--steps=2", "--dtype=float64"]
    assert main(["train", *args, f"--task-options={TINY}", f"--out={run}", "--quiet"]) == 0
    # 13 windows: one batch split 6 + 7 over the two ranks
    common = ["--estimators=spectral,l11", "--n-cauchy=10", "--eval-examples=13", "--quiet"]
    assert main(["analyze", str(run), *common, f"--out={tmp_path / 'a.csv'}"]) == 0
    two = _hessnorm("analyze", run, *common, f"--out={tmp_path / 'b.csv'}", torchrun=2)
    assert two.stdout.count("wrote ") == 1  # rank 0 alone prints and writes
    a, b = pd.read_csv(tmp_path / "a.csv"), pd.read_csv(tmp_path / "b.csv")
    assert list(a.columns) == list(b.columns) and len(a) == len(b) == 2
    for col in ("value", "low", "high", "d"):
        for x, y in zip(a[col], b[col]):
            assert y == pytest.approx(x, rel=1e-9), col
    assert a["n_hvp"].tolist() == b["n_hvp"].tolist()


transformers = pytest.importorskip("transformers")


def test_hf_folder_through_analyze(tmp_path, capsys):
    from hessnorm.checkpoint import detect, expand, load
    from hessnorm.operator import HessianOperator
    from hessnorm.train.tasks import lm_windows
    from tests.test_hf import _corpus, _gpt2, _tokenizer

    text = _corpus()
    (tmp_path / "val.txt").write_text(text, encoding="utf-8")
    folder = tmp_path / "gpt2"
    tok = _tokenizer(text)
    _gpt2().save_pretrained(folder)
    tok.save_pretrained(folder)
    assert detect(folder) == "hf" and expand(folder) == [folder]

    n, T = 5, 12
    net, batches, loss_fn, meta = load(
        folder, text=tmp_path / "val.txt", eval_examples=n, block_size=T, dtype=torch.float64
    )
    assert meta["kind"] == "hf" and meta["architecture"] == "GPT2LMHeadModel"
    op = HessianOperator.from_module(net, loss_fn, batches)
    # reference: the same rule on the tokenizer's ids, the loss from transformers' logits
    ids = tok(text, add_special_tokens=False)["input_ids"]
    x, y = lm_windows(ids, n, T)
    ref = transformers.AutoModelForCausalLM.from_pretrained(
        str(folder), local_files_only=True, dtype=torch.float64
    ).eval()
    with torch.no_grad():
        logits = ref(x).logits
    want = float(
        torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
    )
    assert op.loss() == pytest.approx(want, rel=1e-9)

    out = tmp_path / "hf.csv"
    rc = main(
        [
            "analyze",
            str(folder),
            f"--text={tmp_path / 'val.txt'}",
            f"--eval-examples={n}",
            f"--block-size={T}",
            "--dtype=float64",
            "--estimators=spectral",
            f"--out={out}",
            "--quiet",
        ]
    )
    row = pd.read_csv(out).iloc[0]
    assert rc == 0 and row["kind"] == "hf" and row["d"] == op.d
    assert row["low"] <= row["value"] <= row["high"]
    # without --text the folder is refused with the fix
    capsys.readouterr()
    assert main(["analyze", str(folder), "--quiet"]) == 1
    assert "pass text=FILE (CLI: --text FILE" in capsys.readouterr().err


def test_python_dash_m_hessnorm():
    proc = _hessnorm("--version")
    assert proc.stdout.startswith("hessnorm ")
