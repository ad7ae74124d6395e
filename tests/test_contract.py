"""The estimator contract end to end: a plug-in estimator in one file reaches every layer.

The plug-in below is a complete third-party estimator (one file, registered through the
``hessnorm.estimators`` entry-point group of a distribution on sys.path); nothing else is
edited, yet it shows up in ``hessnorm estimators``, in ``analyze_operator`` and
``analyze`` rows, in the results CSV, in the markdown report, and its option is a flag
of ``hessnorm analyze``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch

PLUGIN = '''\
"""A toy estimator: scale · tr(H), exactly, from the d unit vectors."""

import torch

from hessnorm import Estimate, register_estimator


@register_estimator(
    "toy-trace", metric="toy tr(H)", bound="c·tr(H)", family="other", hvp_cost=lambda o, d: d
)
def toy_trace(op, *, seed: int = 0, progress: bool = False, scale: float = 1.0) -> Estimate:
    """scale · tr(H) from the d unit vectors (d HVPs, no randomness).

    Args:
        scale: factor applied to the trace.
    """
    HE = op.hvp(torch.eye(op.d, dtype=op.dtype, device=op.device))
    tr = scale * float(torch.diagonal(HE).sum())
    return Estimate("toy_trace", tr, tr, tr, 1.0, n_hvp=op.d, seconds=0.0, d=op.d,
                    details={"scale": scale})
'''

SCRIPT = r"""
import contextlib, io, json, pathlib, sys
import torch
import hessnorm as hn
from hessnorm.cli import main

out = pathlib.Path(sys.argv[1])
res = {}
buf = io.StringIO()
with contextlib.redirect_stdout(buf):
    assert main(["estimators"]) == 0
res["listing"] = buf.getvalue()
with contextlib.redirect_stdout(io.StringIO()):
    assert main(["train", "--task", "quadratic", "--task-options", '{"d": 12}', "--steps", "1",
                 "--out", str(out / "run"), "--device", "cpu", "--dtype", "float64",
                 "--quiet"]) == 0
ckpt = str(out / "run" / "ckpt_000001.pt")
net, batches, loss_fn, info = hn.load(ckpt)
op = hn.HessianOperator.from_module(net, loss_fn, batches)
res["exact_trace"] = float(torch.trace(op.dense()))
from hessnorm.analyze import analyze_operator
rows = analyze_operator(op, ["toy-trace"], progress=False, scale=2.0)
res["operator_row"] = {k: rows[0][k] for k in ("estimator", "metric", "bound", "value")}
df = hn.analyze(ckpt, ["toy-trace", "spectral"], scale=0.5, progress=False, log=False)
res["analyze_values"] = df.set_index("estimator")["value"].to_dict()
help_ = io.StringIO()
with contextlib.redirect_stdout(help_), contextlib.suppress(SystemExit):
    main(["analyze", "--help"])
res["help"] = help_.getvalue()
with contextlib.redirect_stdout(io.StringIO()):
    assert main(["analyze", ckpt, "--estimators", "toy-trace", "--scale", "3", "--quiet",
                 "--out", str(out / "r.csv")]) == 0
    assert main(["report", str(out / "r.csv"), "--out", str(out / "rep")]) == 0
res["csv"] = (out / "r.csv").read_text()
res["report"] = (out / "rep" / "report.md").read_text()
print("RESULT " + json.dumps(res))
"""


def _install_plugin(root):
    (root / "toy_estimator.py").write_text(PLUGIN)
    dist = root / "toy_estimator-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-estimator\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[hessnorm.estimators]\ntoy = toy_estimator\n")


def test_plugin_file_is_small():
    assert len(PLUGIN.strip().splitlines()) <= 30


def test_a_plugin_estimator_reaches_every_layer(tmp_path):
    import json

    plug = tmp_path / "plugin"
    plug.mkdir()
    _install_plugin(plug)
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = os.pathsep.join([str(plug), root, env.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
    res = json.loads(line[len("RESULT ") :])
    exact = res["exact_trace"]
    # hessnorm estimators: one line, with its family, metric, cost and description
    (toy,) = [x for x in res["listing"].splitlines() if x.startswith("toy-trace")]
    assert "[other]" in toy and "toy tr(H)" in toy and "--scale 1.0" in toy and "HVPs" in toy
    # analyze_operator rows, with the option as a keyword
    row = res["operator_row"]
    assert row["estimator"] == "toy-trace" and row["metric"] == "toy tr(H)"
    assert row["value"] == pytest.approx(2.0 * exact, rel=1e-12)
    # analyze rows next to a built-in estimator
    assert res["analyze_values"]["toy-trace"] == pytest.approx(0.5 * exact, rel=1e-12)
    assert "spectral" in res["analyze_values"]
    # the option is a flag of hessnorm analyze, with its docstring line as help
    assert "--scale" in res["help"] and "factor applied to the trace" in res["help"]
    # the CSV written with --scale 3, and the markdown report
    import io

    import pandas as pd

    csv = pd.read_csv(io.StringIO(res["csv"]))
    (v,) = csv.loc[csv["estimator"] == "toy-trace", "value"]
    assert v == pytest.approx(3.0 * exact, rel=1e-12)
    assert json.loads(csv["details"].iloc[0]) == {"scale": 3.0}
    assert "Other estimates" in res["report"] and "toy-trace" in res["report"]


# ----------------------------------------------------------------- defects of the old spine


def test_public_subpackages_are_attributes():
    import hessnorm as hn

    assert hn.optim.AdaSGD.__name__ == "AdaSGD"  # raised AttributeError before
    assert hn.estimators.spectral_norm is hn.spectral_norm
    assert callable(hn.report.make_report) and callable(hn.registry.register_estimator)
    assert hn.train is hn.train  # the function, not the module
    assert callable(hn.train) and callable(hn.analyze)


def test_task_with_data_dir_reads_that_data(tmp_path):
    """``--task gpt --data-dir D`` evaluates on D's val.bin (it silently used the built-in text)."""
    import numpy as np

    from hessnorm.checkpoint import load
    from hessnorm.train.tasks import build_task

    task = build_task("gpt", seed=0)
    path = tmp_path / "w.pt"
    torch.save(task.model.state_dict(), path)
    data = tmp_path / "data"
    data.mkdir()
    rng = np.random.default_rng(0)
    vocab = task.model.config.vocab_size if hasattr(task.model, "config") else 64
    for split in ("train", "val"):
        rng.integers(0, min(vocab, 60), 5000).astype(np.uint16).tofile(data / f"{split}.bin")
    _, builtin, _, info0 = load(path, task="gpt", eval_examples=4)
    _, mine, _, info1 = load(path, task="gpt", eval_examples=4, data_dir=str(data))
    assert not torch.equal(builtin[0][0], mine[0][0])
    assert info1.eval.data.startswith(str(data)) and info0.eval.data != info1.eval.data
    with pytest.raises(Exception, match="has no data folder"):
        load(path, task="quadratic", data_dir=str(data))


def test_one_default_number_of_windows():
    from hessnorm import hf
    from hessnorm.analyze import configure_parser
    from hessnorm.checkpoint import load
    from hessnorm.inputs import DEFAULT_LM_WINDOWS, EvalSet

    assert EvalSet().lm_windows() == DEFAULT_LM_WINDOWS == 64
    import inspect

    for fn in (hf.causal_lm_batches, hf.hf_operator):
        assert inspect.signature(fn).parameters["n"].default == DEFAULT_LM_WINDOWS
    assert "64 windows" in inspect.getdoc(load)
    import argparse

    p = argparse.ArgumentParser()
    configure_parser(p)
    text = textwrap.dedent(p.format_help())
    flat = " ".join(text.split())
    assert f"default {DEFAULT_LM_WINDOWS} for every format" in flat
    assert "16" not in flat.split("--eval-examples", 1)[1].split("--data ", 1)[0]


def test_analyze_settings_are_validated_before_work(tmp_path):
    from hessnorm.analyze import analyze
    from hessnorm.errors import ConfigError

    missing = tmp_path / "none.pt"
    with pytest.raises(ConfigError, match="unknown setting 'n_cauhcy'"):
        analyze(missing, ["l11"], n_cauhcy=10)
    with pytest.raises(ConfigError, match="unknown estimator 'l12'"):
        analyze(missing, ["l12"])
    with pytest.raises(ConfigError, match="takes a int"):
        analyze(missing, ["l11"], n_cauchy="ten")
    with pytest.raises(ConfigError, match="does not exist"):
        analyze(missing, ["l11"], n_cauchy=10)
