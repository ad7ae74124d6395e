"""A nanoGPT user's analysis path (issue 14): checkpoints written the way nanoGPT's
train.py writes them (model_args + state_dict, ``_orig_mod.`` prefixes, bias=False, a
small vocabulary, the non-flash ``attn.bias`` mask buffers) in an ``out/`` folder, read
on a nanoGPT data folder that holds only ``val.bin``."""

import contextlib
import io
import math
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

import hessnorm as hn
from hessnorm import errors
from hessnorm.analyze import check_output_path, write_results
from hessnorm.checkpoint import expand, load, nanogpt_eval_windows
from hessnorm.cli import main
from hessnorm.train.gpt import GPT, GPTConfig
from hessnorm.train.tasks import lm_windows

ROOT = pathlib.Path(__file__).resolve().parents[1]
VOCAB = 40
ARGS = dict(
    n_layer=1, n_head=2, n_embd=16, block_size=16, bias=False, vocab_size=VOCAB, dropout=0.1
)
FAST = dict(estimators="spectral", tol=1e-2, eval_examples=8, progress=False, log=False)


def _val_bin(folder, vocab=VOCAB, n=3000, seed=0):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    # a little structure (a repeating pattern plus noise) so that windows differ in loss
    tokens = (np.arange(n) % 7 + rng.integers(0, vocab - 7, n)).astype(np.uint16)
    tokens.tofile(folder / "val.bin")  # no train.bin: analyze reads only val.bin
    return tokens


def _nanogpt_model(seed=0, **over):
    torch.manual_seed(seed)
    return GPT(GPTConfig(**(ARGS | over)))


def _save_nanogpt(path, model, *, iter_num=100, best_val_loss=None, args=None, masks=True):
    """A ckpt.pt as nanoGPT's train.py writes it (compiled model, non-flash attention)."""
    args = dict(ARGS if args is None else args)
    state = {"_orig_mod." + k: v for k, v in model.state_dict().items()}
    if masks:
        T = args["block_size"]
        for i in range(args["n_layer"]):
            mask = torch.tril(torch.ones(T, T)).view(1, 1, T, T)
            state[f"_orig_mod.transformer.h.{i}.attn.bias"] = mask
    ckpt = {
        "model": state,
        "optimizer": {"state": {}, "param_groups": [{"lr": 6e-4, "params": [0]}]},
        "model_args": args,
        "iter_num": iter_num,
        "best_val_loss": torch.tensor(5.0 if best_val_loss is None else best_val_loss),
        "config": {"batch_size": 12, "eval_iters": 200, "dataset": "shakespeare_char"},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, path)
    return path


def _direct_loss(model, tokens, n, T):
    """The mean loss over lm_windows computed with plain torch (no hessnorm operator)."""
    x, y = lm_windows(tokens, n, T)
    model.eval()
    with torch.no_grad():
        logits = model(x)
    return float(F.cross_entropy(logits.reshape(-1, VOCAB), y.reshape(-1)))


def _cli(argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(argv)
    return rc, out.getvalue(), err.getvalue()


@pytest.fixture
def nano(tmp_path):
    data = tmp_path / "data" / "shakespeare_char"
    tokens = _val_bin(data)
    model = _nanogpt_model()
    ckpt = _save_nanogpt(tmp_path / "out" / "ckpt.pt", model)
    return dict(root=tmp_path, data=data, tokens=tokens, model=model, ckpt=ckpt)


# ------------------------------------------------------------------ wrong answers without a word


def test_no_evaluation_data_is_an_error_that_says_what_to_pass(nano):
    with pytest.raises(errors.ConfigError, match=r"--data-dir.*--text.*--data builtin"):
        hn.analyze(nano["ckpt"], **FAST)
    rc, out, err = _cli(["analyze", str(nano["root"] / "out"), "--quiet"])
    assert rc == 1 and "pass --data-dir DIR" in err and "Traceback" not in err


def test_small_vocabulary_on_the_builtin_corpus_gets_a_hint(nano):
    # the bundled corpus only when asked, and then a byte id beyond a 40-token vocabulary
    with pytest.raises(
        errors.CheckpointError, match=r"vocabulary of 40: the bundled corpus.*--data-dir"
    ):
        hn.analyze(nano["ckpt"], data="builtin", **FAST)
    # a val.bin tokenized differently (ids up to 99): the hint names the file
    other = nano["root"] / "bpe"
    _val_bin(other, vocab=100)
    with pytest.raises(
        errors.CheckpointError, match=r"bpe/val.bin holds token ids.*tokenized like"
    ):
        hn.analyze(nano["ckpt"], data_dir=str(other), **FAST)


def test_rows_name_the_data_and_carry_loss_and_grad_norm(nano):
    df = hn.analyze(nano["root"] / "out", data_dir=str(nano["data"]), **FAST)
    row = df.iloc[0]
    assert list(df.columns) == hn.results.columns()
    assert row["data"] == str((nano["data"] / "val.bin").resolve()) and row["split"] == "val"
    assert (row["eval_windows"], row["eval_tokens"]) == (8, 16)
    assert row["eval_rule"].startswith("lm_windows") and pd.isna(row["data_seed"])
    assert row["run"] == str(nano["root"] / "out") and row["step"] == 100
    # the loss and gradient norm at the checkpoint, against plain torch on the same windows
    assert row["loss"] == pytest.approx(
        _direct_loss(nano["model"], nano["tokens"], 8, 16), rel=1e-5
    )
    model = nano["model"]
    x, y = lm_windows(nano["tokens"], 8, 16)
    model.zero_grad()
    F.cross_entropy(model(x).reshape(-1, VOCAB), y.reshape(-1)).backward()
    g = torch.cat([p.grad.reshape(-1) for p in model.parameters()])
    assert row["grad_norm"] == pytest.approx(float(g.norm()), rel=1e-4)
    # Lanczos' smallest Ritz value is not presented as a converged result
    assert "lambda_min_unconverged" in row["details"] and '"lambda_min"' not in row["details"]


def test_estimator_seed_does_not_move_the_evaluation_set(nano):
    kw = dict(FAST, data_dir=str(nano["data"]))
    a, b = hn.analyze(nano["ckpt"], seed=0, **kw), hn.analyze(nano["ckpt"], seed=1, **kw)
    assert a["loss"].iloc[0] == b["loss"].iloc[0]  # same windows whatever the probe seed
    c = hn.analyze(nano["ckpt"], seed=0, data_seed=1, **kw)
    assert c["loss"].iloc[0] != a["loss"].iloc[0]
    assert c["data_seed"].iloc[0] == 1 and "random offset" in c["eval_rule"].iloc[0]
    # the random-offset rule: windows of consecutive tokens, reproducible from the seed
    x1, y1, _ = nanogpt_eval_windows(nano["tokens"], 8, 16, data_seed=1)
    x2, _, _ = nanogpt_eval_windows(nano["tokens"], 8, 16, data_seed=1)
    assert torch.equal(x1, x2) and torch.equal(x1[:, 1:], y1[:, :-1])


def test_eval_resamples_reports_the_spread_across_sets(nano):
    df = hn.analyze(nano["ckpt"], data_dir=str(nano["data"]), eval_resamples=3, data_seed=5, **FAST)
    row = df.iloc[0]
    assert row["eval_resamples"] == 3
    # the spread is that of the same estimator (same seed) on three independent sets
    net, _, loss_fn, meta = load(
        nano["ckpt"], data_dir=str(nano["data"]), eval_examples=8, data_seed=5
    )
    values = []
    for k in (1, 2, 3):  # resample 0 is the data_seed set the row's value is computed on
        op = hn.HessianOperator.from_module(net, loss_fn, meta["resample"](k))
        values.append(hn.spectral_norm(op, tol=1e-2, seed=0, progress=False).value)
    assert row["eval_sd"] == pytest.approx(float(np.std(values, ddof=1)), rel=1e-6)
    assert (row["eval_min"], row["eval_max"]) == pytest.approx((min(values), max(values)), rel=1e-6)
    # the evaluation-set variation dwarfs the estimator's own interval here
    assert row["eval_sd"] > 0 and row["eval_max"] > row["eval_min"]
    with pytest.raises(errors.ConfigError, match="0 \\(off\\) or >= 2"):
        hn.analyze(nano["ckpt"], data_dir=str(nano["data"]), eval_resamples=1, **FAST)


def test_model_args_are_checked(nano, tmp_path):
    model, data = nano["model"], str(nano["data"])
    bad = _save_nanogpt(tmp_path / "bad" / "ckpt.pt", model, args=ARGS | {"n_head": 3})
    with pytest.raises(errors.CheckpointError, match="n_embd=16 is not divisible by n_head=3"):
        hn.analyze(bad, data_dir=data, **FAST)
    # best_val_loss as nanoGPT would have stored it for these weights: no warning ...
    true_loss = _direct_loss(model, nano["tokens"], 64, 16)
    good = _save_nanogpt(tmp_path / "good" / "ckpt.pt", model, best_val_loss=true_loss)
    _, _, _, meta = load(good, data_dir=data)
    assert not any(n.startswith("warning") for n in meta["notes"])
    # ... nor within the tolerance (nanoGPT estimates best_val_loss on other random windows,
    # often in bf16: 1% of the loss plus 4 standard errors of the difference) ...
    near = _save_nanogpt(tmp_path / "near" / "ckpt.pt", model, best_val_loss=true_loss * 1.005)
    _, _, _, meta = load(near, data_dir=data)
    assert not any(n.startswith("warning") for n in meta["notes"])
    # ... but weights/architecture/data that do not give the stored loss are flagged (a
    # random-init model is insensitive to n_head, so the mismatch is made on the loss side)
    off = _save_nanogpt(tmp_path / "off" / "ckpt.pt", model, best_val_loss=true_loss - 0.5)
    _, _, _, meta = load(off, data_dir=data)
    assert any("differs from the checkpoint's best_val_loss" in n for n in meta["notes"])
    # unknown model_args keys are named in a note that analyze prints
    odd = _save_nanogpt(tmp_path / "odd" / "ckpt.pt", model, args=ARGS | {"rope_theta": 1e4})
    log = io.StringIO()
    hn.analyze(odd, data_dir=data, **(FAST | {"log": log}))
    assert "['rope_theta'] are not nanoGPT GPTConfig fields" in log.getvalue()


def test_mask_buffers_other_than_the_causal_mask_are_still_refused(nano, tmp_path):
    path = _save_nanogpt(tmp_path / "m" / "ckpt.pt", nano["model"])
    ckpt = torch.load(path, weights_only=True)
    ckpt["model"]["_orig_mod.transformer.h.0.attn.bias"] = torch.ones(1, 1, 16, 16)
    torch.save(ckpt, path)
    with pytest.raises(errors.CheckpointError, match="unexpected in the nanoGPT checkpoint"):
        load(path, data_dir=str(nano["data"]))


# ------------------------------------------------------------------------------- friction


def test_cli_on_a_nanogpt_out_folder_prints_identity_and_meaning(nano):
    res = nano["root"] / "res.csv"
    rc, out, err = _cli(
        ["analyze", str(nano["root"] / "out"), "--data-dir", str(nano["data"]), "--quiet"]
        + ["--estimators", "spectral,l11", "--n-cauchy", "8", "--tol", "1e-2"]
        + ["--eval-examples", "8", "--out", str(res)]
    )
    assert rc == 0, err
    header = out.splitlines()[0].split()
    for col in ("checkpoint", "run", "step", "loss", "bound_per_dim"):
        assert col in header
    assert str(nano["ckpt"]) in out and " 100 " in out
    assert "bound_per_dim (spectral): ‖H‖₂, the bound d‖H‖₂ divided by d" in out
    assert "bound_per_dim (l11): ‖H‖₁,₁ / d" in out
    assert "val.bin (split val), 8 windows × 16 tokens, lm_windows" in out
    assert "conditional" in out
    assert pd.read_csv(res)["loss"].notna().all()


def test_cli_rejects_bad_options_before_any_work(nano):
    ckpt = str(nano["ckpt"])
    base = ["analyze", ckpt, "--data-dir", str(nano["data"]), "--quiet"]
    # validated before the checkpoint is read: a missing checkpoint is not what fails
    rc, out, err = _cli(["analyze", "missing.pt", "--out", "r.txt", "--quiet"])
    assert rc == 1 and "--out must end in .csv or .json, got r.txt" in err and out == ""
    blocker = nano["root"] / "file"
    blocker.write_text("x")
    rc, _, err = _cli(base + ["--out", str(blocker / "sub" / "r.csv")])
    assert rc == 1 and "cannot write into" in err
    (nano["root"] / "dir.csv").mkdir()
    with pytest.raises(errors.ConfigError, match="is a folder"):
        check_output_path(nano["root"] / "dir.csv")
    rc, _, err = _cli(base + ["--eval-examples", "0"])
    assert rc == 1 and "--eval-examples must be >= 1, got 0" in err
    if not torch.cuda.is_available():
        rc, _, err = _cli(base + ["--device", "cuda"])
        assert rc == 1 and "no CUDA GPU is available" in err and "Traceback" not in err


def test_checkpoint_file_errors_are_complete_sentences(tmp_path):
    import argparse

    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(errors.CheckpointError, match=r"empty\.pt is an empty file \(0 bytes\)"):
        hn.analyze(empty, **FAST)
    evil = tmp_path / "ns.pt"
    torch.save({"model": {"w": torch.ones(1)}, "args": argparse.Namespace(a=1)}, evil)
    with pytest.raises(errors.CheckpointError) as info:
        load(evil)
    msg = str(info.value)
    assert "\x1b" not in msg
    assert "GLOBAL argparse.Namespace was not an allowed global by default.)" in msg


def test_version_is_fast_and_imports_no_torch():
    code = (
        "import sys, contextlib, io\n"
        "from hessnorm.cli import main\n"
        "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
        "    main(['--version'])\n"
        "print('torch' in sys.modules, 'pandas' in sys.modules)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert proc.stdout.split() == ["False", "False"], proc.stderr


# --------------------------------------------------------------------------------- reports


def _trajectory_run(root, data):
    """Three checkpoints of one nanoGPT run, as ckpt_<iter>.pt in out/ (weights drift)."""
    model = _nanogpt_model()
    for it in (100, 200, 300):
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(1.3)
        _save_nanogpt(root / "out" / f"ckpt_{it}.pt", model, iter_num=it)
    return root / "out"


def test_folders_of_nanogpt_checkpoints_expand_in_order(tmp_path):
    model = _nanogpt_model()
    for it in (300, 20):
        _save_nanogpt(tmp_path / "runs" / f"out_{it}" / "ckpt.pt", model, iter_num=it)
    found = expand(tmp_path / "runs")
    assert [p.parent.name for p in found] == ["out_20", "out_300"]
    _save_nanogpt(tmp_path / "out" / "ckpt_20.pt", model)
    _save_nanogpt(tmp_path / "out" / "ckpt_3.pt", model)
    _save_nanogpt(tmp_path / "out" / "ckpt.pt", model)
    assert [p.name for p in expand(tmp_path / "out")] == ["ckpt_3.pt", "ckpt_20.pt"]


def test_report_draws_a_trajectory_of_one_nanogpt_run(nano, tmp_path):
    from hessnorm.report import make_report

    run = _trajectory_run(tmp_path / "traj", nano["data"])
    kw = dict(FAST, estimators="spectral,l11", n_cauchy=8, data_dir=str(nano["data"]))
    df = hn.analyze(run, eval_resamples=2, **kw)
    assert sorted(set(df["step"])) == [100, 200, 300] and df["run"].nunique() == 1
    res = tmp_path / "res.csv"
    write_results(df, res)
    # a second nanoGPT run whose checkpoint shares the file name ckpt.pt with the first one
    other = hn.analyze(nano["root"] / "out", **(kw | {"estimators": "l11"}))
    res2 = tmp_path / "res2.csv"
    write_results(other, res2)
    copy = tmp_path / "copy.csv"
    shutil.copy(res, copy)
    out = tmp_path / "report"
    make_report([res, copy, res2], out, progress=False)
    traj = pd.read_csv(out / "trajectories.csv")
    ours = traj[traj["run_key"] == str(run)]
    # one line per estimator with each step once: the copied results file did not double it
    assert sorted(ours.groupby("estimator")["step"].apply(list).iloc[0]) == [100, 200, 300]
    assert len(ours) == 6
    norms = pd.read_csv(out / "norms.csv")
    # every checkpoint of the trajectory (steps 100..300, two estimators) and the other run's
    assert set(norms["step"]) == {100, 200, 300} and len(norms) == 7
    assert norms["loss"].notna().all() and norms["data"].str.endswith("val.bin").all()
    shares = pd.read_csv(out / "l11_per_tensor.csv")
    # the two runs' last checkpoints stay apart; shares of each sum to one
    assert shares["checkpoint"].nunique() == 2
    for _, g in shares.groupby("checkpoint"):
        assert g["share"].sum() == pytest.approx(1.0) and g["tensor"].is_unique
    assert (shares["share_low"] <= shares["share"]).all()
    assert (shares["share_high"] > shares["share"]).all() and shares["size"].gt(0).all()
    md = (out / "report.md").read_text()
    assert "conditional on this evaluation set" in md and "± eval sets" in md
    assert (out / "trajectories.png").stat().st_size > 0
    assert (out / "l11_per_tensor.png").stat().st_size > 0
    assert not math.isnan(norms["loss"].iloc[0])
