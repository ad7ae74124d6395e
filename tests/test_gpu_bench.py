"""benchmarks/gpu.py cannot rot: its plan, argument checks and a tiny CPU run of two stages.

The full run needs a CUDA device (see the script's docstring); here the tiny GPT on the
CPU goes through the exact-vs-FD agreement and a one-step trainer run, and the JSON
written must hold finite, consistent numbers.
"""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu.py"


def _gpu():
    spec = importlib.util.spec_from_file_location("hessnorm_bench_gpu", _PATH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_dry_run_writes_the_plan(tmp_path, capsys):
    out = tmp_path / "plan.json"
    assert _gpu().main(["--dry-run", "--out", str(out)]) == 0
    plan = json.loads(out.read_text())
    assert plan["model"] == {"n_layer": 12, "n_embd": 768, "vocab_size": 50304}  # GPT-2 124M
    assert plan["stages"] == ["hvp", "agree", "estimators", "train"] and plan["results"] == {}


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--stages", "hvp,warp"], "unknown stage"),
        (["--steps", "0", "--device", "cpu"], "--steps must be >= 1"),
    ],
)
def test_bad_arguments_name_the_problem(argv, message, capsys):
    with pytest.raises(SystemExit):
        _gpu().parse_args(argv)
    assert message in capsys.readouterr().err


def test_tiny_cpu_run_agrees_exact_and_fd(tmp_path):
    out = tmp_path / "tiny.json"
    argv = ["--tiny", "--device", "cpu", "--stages", "agree,train", "--batch", "1"]
    argv += ["--seq-len", "8", "--steps", "1", "--optimizers", "adam", "--out", str(out)]
    assert _gpu().main(argv) == 0
    res = json.loads(out.read_text())["results"]
    agree = res["agree"]
    # float32 FD: error ~ eps^(2/3); the estimate must be within 10x of the true difference
    assert 0 < agree["relative_difference"] < 1e-2
    ratio = agree["fd_error_estimate_relative"] / agree["relative_difference"]
    assert 0.1 <= ratio <= 10, agree
    assert math.isfinite(res["train"]["adam"]["train_loss"])
