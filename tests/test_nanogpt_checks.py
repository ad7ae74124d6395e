"""What ``analyze`` checks on a nanoGPT checkpoint (issue 26): the best_val_loss check
with its numbers (tolerance, detectable shift, dtype allowance, --strict), model_args
against the weights, and --out into folders that do not exist yet.

The checkpoint in tests/data/nanogpt_copy/ was trained by
tests/data/make_nanogpt_copy.py on a copy task that only attention solves, so an
edited ``n_head`` (same shapes) really moves the loss."""

from __future__ import annotations

import contextlib
import io
import math
import pathlib
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from hessnorm import errors
from hessnorm.checkpoint import (
    PRECISION_ALLOWANCE,
    load,
    loss_check,
    nanogpt_args_from_weights,
    precision_allowance,
)
from hessnorm.cli import main

DATA = pathlib.Path(__file__).resolve().parent / "data" / "nanogpt_copy"
N = 512  # evaluation windows: the check is as sharp as sd / sqrt(N) allows


def _cli(argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(argv)
    return rc, out.getvalue(), err.getvalue()


def _edited(tmp_path, name, *, model_args=None, config=None, best=None):
    ckpt = torch.load(DATA / "ckpt.pt", weights_only=True)
    ckpt["model_args"] = {**ckpt["model_args"], **(model_args or {})}
    ckpt["config"] = {**ckpt["config"], **(config or {})}
    for k in [k for k, v in (config or {}).items() if v is None]:
        del ckpt["config"][k]
    if best is not None:
        ckpt["best_val_loss"] = torch.tensor(best)
    path = tmp_path / name / "ckpt.pt"
    path.parent.mkdir(parents=True)
    torch.save(ckpt, path)
    return path


def test_an_edited_n_head_is_caught_and_both_print_the_check(tmp_path):
    good = tmp_path / "good" / "ckpt.pt"
    good.parent.mkdir()
    shutil.copy(DATA / "ckpt.pt", good)
    edited = _edited(tmp_path, "edited", model_args={"n_head": 1})  # 32 % 1 == 0: loads
    _, _, _, meta_good = load(good, data_dir=str(DATA), eval_examples=N)
    _, _, _, meta_edit = load(edited, data_dir=str(DATA), eval_examples=N)
    c_good, c_edit = meta_good["loss_check"], meta_edit["loss_check"]
    # the edit moves the loss by more than the shift the check states it can detect
    shift = abs(c_edit.recomputed - c_good.recomputed)
    assert shift > c_edit.detectable > c_edit.tolerance > 0
    assert c_good.passed and not c_edit.passed
    # both get the check's numbers in the notes analyze prints; only the edit a warning
    for meta, check in ((meta_good, c_good), (meta_edit, c_edit)):
        text = "\n".join(meta["notes"])
        assert "loss check: recomputed" in text
        for number in (check.recomputed, check.stored, check.tolerance, check.detectable):
            assert f"{number:.4f}" in text
        assert f"on {N} windows" in text and "2400 random windows" in text
        assert "no precision allowance (float32)" in text
    assert not any(n.startswith("warning") for n in meta_good["notes"])
    assert any("warning: the loss recomputed" in n and "n_head" in n for n in meta_edit["notes"])
    assert c_good.columns()["loss_check"] == "passed"
    assert c_edit.columns() == {
        "best_val_loss": c_edit.stored,
        "loss_check": "failed",
        "loss_check_tol": c_edit.tolerance,
        "loss_check_detectable": c_edit.detectable,
    }
    # --strict refuses the edited checkpoint (before any HVP), after printing the check
    rc, _, err = _cli(
        ["analyze", str(edited), "--data-dir", str(DATA), "--estimators", "spectral"]
        + ["--eval-examples", str(N), "--strict"]
    )
    assert rc == 1 and "--strict" in err and "differs from the checkpoint's best_val_loss" in err
    assert str(edited) in err and f"tolerance {c_edit.tolerance:.4f}" in err
    assert "loss check: recomputed" in err


def test_the_check_raises_no_false_alarm_across_nanogpt_draws():
    """20 independent nanoGPT-style best_val_loss values of the same weights (the mean
    loss of m random windows, as estimate_loss computes it): none is flagged, and their
    spread matches the m-part of the check's standard error."""
    net, batches, _, meta = load(DATA / "ckpt.pt", data_dir=str(DATA), eval_examples=N)
    tokens = np.fromfile(DATA / "val.bin", dtype=np.uint16).astype(np.int64)
    T, m = 16, meta["nanogpt_eval_windows"]
    # the loss of every 4th possible window once (a population of ~3000 windows); a
    # nanoGPT window is a uniform draw from it
    every = np.lib.stride_tricks.sliding_window_view(tokens, T + 1)[::4]
    every = torch.from_numpy(every.copy())
    with torch.no_grad():
        logits = net(every[:, :-1])
    per_window = F.cross_entropy(logits.transpose(1, 2), every[:, 1:], reduction="none").mean(1)
    per_window = per_window.double().numpy()
    stored = [
        float(per_window[np.random.default_rng(seed).integers(0, len(per_window), m)].mean())
        for seed in range(20)
    ]
    checks = [loss_check(net, batches, {**meta, "best_val_loss": b}) for b in stored]
    assert all(c.passed for c in checks)
    sd = checks[0].sd
    ratio = float(np.std(stored, ddof=1)) / (sd / math.sqrt(m))
    # chi-square with 19 degrees of freedom: [0.53, 1.52] holds with probability 0.998
    assert 0.5 < ratio < 1.55, ratio


def test_the_precision_allowance_follows_the_training_dtype(tmp_path):
    assert precision_allowance({"dtype": "float32"}) == ("float32", 0.0)
    assert precision_allowance({"dtype": "float16"}) == ("float16", 2.5 * 2.0**-11)
    assert precision_allowance({"dtype": "bfloat16"}) == ("bfloat16", 2.5 * 2.0**-8)
    assert precision_allowance({"dtype": "bfloat16", "device": "cpu"})[1] == 0.0
    assert precision_allowance({})[1] == PRECISION_ALLOWANCE["bfloat16"]
    assert "not a nanoGPT dtype" in precision_allowance({"dtype": "fp8"})[0]
    net, batches, _, meta = load(DATA / "ckpt.pt", data_dir=str(DATA), eval_examples=N)
    fp32 = loss_check(net, batches, meta)
    assert fp32.allowance == 0 and fp32.dtype == "float32"
    # a gap just beyond float32's tolerance but within bfloat16's: flagged only for float32
    gap = fp32.tolerance + 0.5 * PRECISION_ALLOWANCE["bfloat16"] * fp32.recomputed
    off = fp32.recomputed + gap
    cuda_bf16 = {"dtype": "bfloat16", "device": "cuda"}
    assert not loss_check(net, batches, {**meta, "best_val_loss": off}).passed
    bf16 = loss_check(net, batches, {**meta, "best_val_loss": off, "nanogpt_config": cuda_bf16})
    assert bf16.passed and bf16.dtype == "bfloat16"
    assert bf16.tolerance == pytest.approx(fp32.tolerance + bf16.allowance * off)
    # the same through a checkpoint's config, end to end
    path = _edited(tmp_path, "bf16", config=cuda_bf16, best=off)
    _, _, _, m2 = load(path, data_dir=str(DATA), eval_examples=N)
    assert m2["loss_check"].passed and "for bfloat16 autocast" in m2["loss_check"].summary()
    path = _edited(tmp_path, "fp32", best=off)
    _, _, _, m3 = load(path, data_dir=str(DATA), eval_examples=N)
    assert not m3["loss_check"].passed


def test_the_bfloat16_allowance_covers_autocast_rounding():
    """The loss under bfloat16 autocast (as nanoGPT evaluates on a GPU; here on the CPU)
    stays within the allowance of the float32 loss."""
    net, batches, _, _ = load(DATA / "ckpt.pt", data_dir=str(DATA), eval_examples=N)
    x = torch.cat([b[0] for b in batches])
    y = torch.cat([b[1] for b in batches])
    with torch.no_grad():
        exact = float(F.cross_entropy(net(x).flatten(0, 1), y.flatten()))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = float(F.cross_entropy(net(x).float().flatten(0, 1), y.flatten()))
    assert low != exact
    assert abs(low - exact) / exact < PRECISION_ALLOWANCE["bfloat16"]


@pytest.mark.parametrize(
    "key, value",
    [("vocab_size", 32), ("block_size", 32), ("n_embd", 64), ("n_layer", 2), ("bias", True)],
)
def test_model_args_that_contradict_the_weights_are_named(tmp_path, key, value):
    implied = nanogpt_args_from_weights(torch.load(DATA / "ckpt.pt", weights_only=True)["model"])
    assert implied == {
        "vocab_size": 16,
        "n_embd": 32,
        "block_size": 16,
        "n_layer": 1,
        "bias": False,
    }
    path = _edited(tmp_path, key, model_args={key: value})
    with pytest.raises(errors.CheckpointError) as info:
        load(path, data_dir=str(DATA))
    msg = str(info.value)
    assert f"{key}={value!r} but the weights hold {implied[key]!r}" in msg
    assert "cannot tell n_head" in msg


def test_out_into_missing_folders_is_created_and_named(tmp_path):
    res = tmp_path / "new" / "deeper" / "res.csv"
    argv = ["analyze", str(DATA / "ckpt.pt"), "--data-dir", str(DATA), "--eval-examples", "16"]
    rc, out, err = _cli(argv + ["--estimators", "spectral", "--tol", "1e-1", "--out", str(res)])
    assert rc == 0, err
    assert f"wrote {res}" in out
    # the row carries the check analyze printed (--strict lets a passing checkpoint through)
    _, _, _, meta = load(DATA / "ckpt.pt", data_dir=str(DATA), eval_examples=16)
    check = meta["loss_check"]
    assert check.summary() in err
    row = pd.read_csv(res).iloc[0]
    assert row["loss_check"] == "passed" and row["loss"] == pytest.approx(check.recomputed)
    for col, value in check.columns().items():
        assert row[col] == (value if isinstance(value, str) else pytest.approx(value)), col
    rep = tmp_path / "reports" / "a" / "b"
    rc, out, err = _cli(["report", str(res), "--out", str(rep)])
    assert rc == 0, err
    assert f"wrote {rep / 'report.md'}" in out and (rep / "report.html").is_file()
    run = tmp_path / "runs" / "x" / "quad"
    rc, out, err = _cli(
        ["train", "--task", "quadratic", "--steps", "2", "--out", str(run)]
        + ["--device", "cpu", "--quiet", "--task-options", '{"d": 20}']
    )
    assert rc == 0, err
    assert f"wrote run folder {run}" in out and (run / "config.json").is_file()


def test_default_windows_are_one_draw_of_the_resample_rule():
    """--eval-resamples draws the default windows shifted by a uniform random offset, so
    the default (offset 0) is a member of the distribution the resamples sample."""
    from hessnorm.checkpoint import nanogpt_eval_windows
    from hessnorm.train.tasks import lm_windows

    n, T, N = 8, 16, 5000
    tokens = np.arange(N)  # a window's first input token is its start
    base = lm_windows(tokens, n, T)[0][:, 0].tolist()
    default, _, rule = nanogpt_eval_windows(tokens, n, T)
    assert default[:, 0].tolist() == base and "offset 0" in rule
    starts_count = N - T  # possible starts 0 .. N - T - 1
    offsets = []
    for k in range(400):
        x, y, rule = nanogpt_eval_windows(tokens, n, T, data_seed=3, resample=k)
        starts = x[:, 0].tolist()
        c = (starts[0] - base[0]) % starts_count
        assert starts == [(b + c) % starts_count for b in base]  # a circular shift of the default
        assert torch.equal(x[:, 1:], y[:, :-1]) and f"resample={k}" in rule
        offsets.append(c)
    # the offset is uniform over every possible start: chi-square over 10 bins, 9 degrees
    # of freedom, 27.9 is its 0.999 quantile
    counts = np.bincount(np.array(offsets) * 10 // starts_count, minlength=10)
    chi2 = float(((counts - 40.0) ** 2 / 40.0).sum())
    assert chi2 < 27.9, counts
    # same seed, same windows
    a = nanogpt_eval_windows(tokens, n, T, data_seed=3, resample=5)[0]
    assert torch.equal(a, nanogpt_eval_windows(tokens, n, T, data_seed=3, resample=5)[0])


@pytest.mark.slow
def test_the_eval_resamples_example_runs_small(tmp_path):
    import importlib.util

    path = pathlib.Path(__file__).resolve().parents[1] / "examples" / "eval_resamples_spread.py"
    spec = importlib.util.spec_from_file_location("example_eval_resamples", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    s = module.main(tmp_path, small=True)
    df = pd.read_csv(tmp_path / "eval_resamples.csv")
    k = module.SMALL["k"]
    assert len(df) == 1 + 2 * k and (df["spectral"] > 0).all() and df["loss"].notna().all()
    for rule in ("offset resample", "uniform starts"):
        v = df.loc[df["rule"] == rule, "spectral"]
        assert s[rule]["sets_below_default"] == int((v < s["default"]).sum())
        assert s[rule]["min"] <= s[rule]["mean"] <= s[rule]["max"]
    assert (tmp_path / "eval_resamples.png").read_bytes()[:4] == b"\x89PNG"
