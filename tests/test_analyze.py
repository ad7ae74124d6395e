"""Tests of hessnorm.analyze: the analyze API/CLI end to end, and smoothness along a run."""

import pathlib
import subprocess
import sys

import pandas as pd
import pytest
import torch

import hessnorm as hn
from hessnorm import errors
from hessnorm.analyze import smoothness_along_run
from hessnorm.checkpoint import load
from hessnorm.results import read_results
from hessnorm.train import TrainConfig, train

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_analyze_rejects_unknown_estimator(tmp_path):
    with pytest.raises(errors.ConfigError, match="unknown estimator.*choose from spectral"):
        hn.analyze([tmp_path], estimators="trace-norm", progress=False)


def test_train_analyze_report_end_to_end(tmp_path):
    """Tiny run -> analyze its folder -> report; numbers equal the estimator API's."""

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
    df = read_results(results)  # the file boundary: details parsed back into dicts
    steps = sorted(set(df["step"]))
    assert steps == [2, 4] and len(df) == 4
    last = df[(df["step"] == 4) & (df["estimator"] == "l11")].iloc[0]
    net, batches, loss_fn, _ = load(last["checkpoint"], eval_examples=32, dtype=torch.float64)
    op = hn.HessianOperator.from_module(net, loss_fn, batches)
    direct = hn.l11_norm(op, n=10, seed=0, progress=False)
    assert last["value"] == pytest.approx(direct.value, rel=1e-12)
    assert last["low"] == pytest.approx(direct.low, rel=1e-12)
    details = last["details"]
    assert isinstance(details, dict) and details["per_tensor"]  # the breakdown travels with it

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
    # the report's table carries the analyzed numbers unchanged, one row per checkpoint in
    # step order; the last one is the last checkpoint's
    norms = pd.read_csv(out / "norms.csv")
    l11 = norms[norms["estimator"] == "l11"]
    assert l11["step"].is_monotonic_increasing and l11["checkpoint"].is_unique
    row = l11.iloc[-1]
    assert row["step"] == 4
    assert row["value"] == last["value"] and row["low"] == last["low"]
    assert row["bound_value"] == pytest.approx(last["value"], rel=1e-15)  # bound ‖H‖₁,₁
    spec = norms[norms["estimator"] == "spectral"].iloc[0]
    assert spec["bound_value"] == pytest.approx(spec["value"] * spec["d"], rel=1e-15)  # d‖H‖₂
    assert f"{last['value'] / last['d']:.4g}" in (out / "report.md").read_text()


def test_along_run_checks_the_folder(tmp_path):
    with pytest.raises(errors.CheckpointError, match="does not exist"):
        smoothness_along_run(tmp_path / "missing")
    (tmp_path / "ckpt_000010.pt").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(errors.CheckpointError, match="1 checkpoint"):
        smoothness_along_run(tmp_path)
    (tmp_path / "ckpt_000020.pt").write_bytes(b"")
    with pytest.raises(errors.ConfigError, match="alpha"):
        smoothness_along_run(tmp_path, alpha=0.3)


def test_along_run_matches_quadratic_and_the_trainer_hook(tmp_path):
    # Needs the reference trainer. On its quadratic task (float64, one fixed batch) the
    # loss is ½xᵀHx-type, so each row equals ‖HΔ‖/‖Δ‖ to roundoff, and it equals what the
    # trainer's --record-smoothness-every hook logged before the same step (its row k+1).
    from hessnorm.estimators import exact
    from hessnorm.train import rebuild

    cfg = TrainConfig(
        task="quadratic",
        optimizer="adam",
        steps=4,
        ckpt_every=1,
        out=str(tmp_path / "run"),
        progress=False,
        dtype="float64",
        record_smoothness_every=1,
        task_options={"d": 20},
    )
    train(cfg)
    df = smoothness_along_run(tmp_path / "run", progress=False)
    assert list(df.step) == [1, 2, 3] and list(df.next_step) == [2, 3, 4]
    ckpts = sorted((tmp_path / "run").glob("ckpt_*.pt"))
    ops = []
    for path in ckpts:
        model, batches, loss_fn, _ = rebuild(path)
        ops.append(hn.HessianOperator.from_module(model, loss_fn, batches))
    H = exact.hessian(ops[0])
    for i, row in df.iterrows():
        delta = ops[i + 1].point - ops[i].point
        want = float((H @ delta).norm() / delta.norm())
        assert row.local_smoothness == pytest.approx(want, rel=1e-10)
        assert row.grad_norm == pytest.approx(float(ops[i].gradient().norm()), rel=1e-12)
    logged = pd.read_csv(tmp_path / "run" / "metrics.csv").set_index("step")
    for row in df.itertuples():
        assert row.local_smoothness == pytest.approx(
            logged.local_smoothness[row.step + 1], rel=1e-9
        )
        assert row.grad_norm == pytest.approx(logged.smooth_grad_norm[row.step + 1], rel=1e-9)
