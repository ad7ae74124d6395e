"""Kill a training subprocess at an arbitrary point; --resume must end bit-identical.

float64 on the CPU, with every random state saved in the checkpoints, makes the
resumed run replay exactly the same arithmetic, so equality is exact (torch.equal).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import torch

from hessnorm.train import TrainConfig, train
from hessnorm.train.runs import list_checkpoints

ARGS = [
    "--task",
    "gpt",
    "--optimizer",
    "adam",
    "--steps",
    "40",
    "--dtype",
    "float64",
    "--ckpt-every",
    "4",
    "--quiet",
    "--seed",
    "3",
    "--task-options",
    '{"n_layer": 1, "n_embd": 32, "n_head": 2, "block_size": 32}',
    "--batch-size",
    "4",
    "--eval-examples",
    "8",
]


def _cmd(out, *extra):
    return [sys.executable, "-m", "hessnorm.train.cli", "--out", str(out), *ARGS, *extra]


def test_killed_run_resumes_to_identical_parameters(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    ref = tmp_path / "ref"
    subprocess.run(_cmd(ref), check=True, env=env, timeout=120)
    run = tmp_path / "run"
    proc = subprocess.Popen(_cmd(run), env=env)
    deadline = time.time() + 90
    while time.time() < deadline and not list_checkpoints(run):
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = list_checkpoints(run)
    assert done and done[-1][0] < 40, f"the kill came too late to test anything: {done}"
    subprocess.run(_cmd(run, "--resume"), check=True, env=env, timeout=120)
    a = torch.load(ref / "ckpt_000040.pt", weights_only=True)
    b = torch.load(run / "ckpt_000040.pt", weights_only=True)
    for name, t in a["model"].items():
        assert torch.equal(t, b["model"][name]), f"{name} differs after resume"
    rows_a = (ref / "metrics.csv").read_text().splitlines()
    rows_b = (run / "metrics.csv").read_text().splitlines()
    assert len(rows_a) == len(rows_b) == 41
    for ra, rb in zip(rows_a[1:], rows_b[1:]):  # all but the wall-clock column agree
        assert ra.split(",")[:-1] == rb.split(",")[:-1]


def test_resume_refuses_changed_settings_and_existing_folder(tmp_path):
    import pytest

    from hessnorm.errors import ConfigError

    cfg = TrainConfig(
        task="quadratic",
        optimizer="adam",
        steps=3,
        out=str(tmp_path / "q"),
        progress=False,
        dtype="float64",
        task_options={"d": 20},
    )
    train(cfg)
    with pytest.raises(ConfigError, match="already holds checkpoints"):
        train(cfg)
    cfg.resume, cfg.lr = True, 0.5
    with pytest.raises(ConfigError, match=r"settings \['lr'\] differ"):
        train(cfg)
