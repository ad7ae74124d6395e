"""Tests of ``hessnorm report`` on synthetic run folders and results files.

The inputs are built here with known numbers (tmp_path), so every table cell the
report writes can be checked against the row it came from.
"""

from __future__ import annotations

import base64
import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hessnorm.errors import ConfigError
from hessnorm.l0l1 import fit_l0l1
from hessnorm.registry import parse_estimators
from hessnorm.report import (
    configure_parser,
    load_input,
    make_report,
    norms_table,
    plot_l0l1,
    run,
)

TENSORS = [
    f"transformer.h.{i}.{n}"
    for i in range(3)
    for n in ("attn.c_attn.weight", "mlp.c_fc.weight", "ln_1.weight")
] + [
    "transformer.wte.weight",
    "transformer.wpe.weight",
    "lm_head.bias",
    "transformer.ln_f.weight",
    "transformer.ln_f.bias",
    "transformer.h.0.attn.c_proj.bias",
    "transformer.h.1.attn.c_proj.bias",
    "transformer.h.2.attn.c_proj.bias",
]
D = 20_000


def fake_run(root: Path, name: str, optimizer: str, *, steps=300, smooth=False, seed=0, **cfg):
    """A run folder as `hessnorm train` writes it: config.json + metrics.csv."""
    rng = np.random.default_rng(seed)
    folder = root / name
    folder.mkdir(parents=True)
    config = dict(
        task="gpt",
        optimizer=optimizer,
        lr=1e-3,
        steps=steps,
        seed=seed,
        rotation="randperm:depth=2,seed=0",
        beta1=None,
        beta2=None,
        task_options={},
        record_smoothness_every=5 if smooth else 0,
    )
    config.update(cfg)
    (folder / "config.json").write_text(json.dumps(config))
    step = np.arange(1, steps + 1)
    train = 2.0 + 3.0 * np.exp(-step / (60 + 20 * seed)) + 0.08 * rng.standard_normal(steps)
    eval_ = np.full(steps, np.nan)
    every = steps // 10
    eval_[every - 1 :: every] = 2.05 + 3.0 * np.exp(-step[every - 1 :: every] / (60 + 20 * seed))
    df = pd.DataFrame(
        dict(
            step=step,
            train_loss=train,
            eval_loss=eval_,
            lr=1e-3,
            grad_norm=np.abs(rng.standard_normal(steps)) + 0.5,
            update_norm=0.01,
            seconds=np.round(0.05 * step, 4),
        )
    )
    if smooth:
        g = np.full(steps, np.nan)
        s = np.full(steps, np.nan)
        idx = np.arange(0, steps, 5)
        g[idx] = np.exp(rng.uniform(-1, 2, idx.size))
        s[idx] = (2.0 + 1.5 * g[idx]) * rng.uniform(0.3, 1.0, idx.size)
        df["local_smoothness"] = s
        df["smooth_grad_norm"] = g
    # eval_loss empty (not NaN text) on steps without eval, like csv.DictWriter writes "".
    df.to_csv(folder / "metrics.csv", index=False, na_rep="")
    return folder


ESTIMATORS = {  # estimator -> (metric, bound), from the registry analyze uses
    s.label: s.labels() for s in parse_estimators("l11,spectral,blockwise:by_tensor,rotated-l11")
}
ROT = "randperm:depth=2,seed=0"


def fake_results(runs: dict[str, str], steps=(100, 200, 300), seed=0) -> pd.DataFrame:
    """Rows as `hessnorm analyze --out results.csv` writes them, with known numbers.

    As in hessnorm.analyze: ``value`` is the estimated quantity (‖H‖₂ for spectral),
    ``bound_per_dim`` the bound H(L, Φ) / d (= value for spectral, value / d otherwise);
    ``per_tensor`` holds absolute row sums; a rotated-adam run is analysed in its own
    rotated coordinates (``rotation`` set on every row).
    """
    rng = np.random.default_rng(seed)
    rows = []
    for run_name, optimizer in runs.items():
        own = ROT if optimizer == "rotated-adam" else None
        for step in steps:
            for est, (metric, bound) in ESTIMATORS.items():
                per_dim = float(rng.uniform(0.05, 2.5)) * (1 + step / 300)
                value = per_dim if est == "spectral" else per_dim * D
                sums = rng.dirichlet(np.ones(len(TENSORS))) * value
                details = {"per_tensor": dict(zip(TENSORS, sums.tolist()))} if "l11" in est else {}
                if "l11" in est and optimizer == "adasgd":  # as l11_norm writes them now
                    shares = sums / value
                    details["per_tensor_share_interval"] = {
                        k: [0.8 * r, min(1.0, 1.3 * r)] for k, r in zip(TENSORS, shares.tolist())
                    }
                rotation = {
                    (None, False): "none",
                    (None, True): ROT,
                    (ROT, False): ROT,
                    (ROT, True): f"{ROT} then {ROT}",
                }[own, est.startswith("rotated")]
                rows.append(
                    dict(
                        checkpoint=f"runs/{run_name}/ckpt_{step:06d}.pt",
                        kind="hessnorm-run",
                        run=run_name,
                        task="gpt",
                        optimizer=optimizer,
                        step=step,
                        estimator=est,
                        metric=metric,
                        bound=bound,
                        rotation=rotation,
                        value=value,
                        value_per_dim=value / D,
                        low=value * 0.93,
                        high=value * (1.05 + rng.uniform(0, 0.05)),
                        confidence=0.95 if est != "spectral" else 1.0,
                        bound_per_dim=per_dim,
                        n_hvp=50,
                        seconds=float(rng.uniform(1, 3)),
                        d=D,
                        details=json.dumps(details),
                    )
                )
    return pd.DataFrame(rows)


@pytest.fixture
def inputs(tmp_path):
    runs_dir = tmp_path / "runs"
    fake_run(runs_dir, "adam", "adam", seed=0)
    fake_run(runs_dir, "adasgd", "adasgd", seed=1)
    fake_run(runs_dir, "rot", "rotated-adam", seed=2, smooth=True)
    res = fake_results({"adam": "adam", "adasgd": "adasgd", "rot": "rotated-adam"})
    res_path = tmp_path / "results.csv"
    res.to_csv(res_path, index=False)
    return runs_dir, res_path, res


def test_report_files_and_norms_table_equal_inputs(inputs, tmp_path):
    runs_dir, res_path, res = inputs
    out = tmp_path / "report"
    md = make_report(
        [runs_dir / "adam", runs_dir / "adasgd", runs_dir / "rot", res_path],
        out,
        title="Synthetic",
        progress=False,
    )
    assert md == out / "report.md"
    for name in (
        "report.md",
        "report.html",
        "runs.csv",
        "norms.csv",
        "loss_curves_gpt.png",
        "trajectories.png",
        "trajectories.csv",
        "l11_per_tensor.png",
        "l11_per_tensor.csv",
        "l0l1.png",
        "l0l1.csv",
    ):
        assert (out / name).is_file(), name
    assert not list(out.glob(".*.tmp")), "temporary files left behind"
    for png in out.glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # Norms table: exactly one row per (run, checkpoint, estimator), numbers unchanged,
    # each run's checkpoints in step order.
    table = pd.read_csv(out / "norms.csv", keep_default_na=False, na_values=[""])
    last = res[res["step"] == 300]
    assert len(table) == len(res) == 3 * 3 * len(ESTIMATORS)
    for _, g in table.groupby(["run", "estimator"]):
        assert g["step"].tolist() == [100, 200, 300]
    merged = table.merge(
        res, on=["run", "checkpoint", "estimator"], suffixes=("", "_in"), validate="1:1"
    )
    assert len(merged) == len(res)
    for col in ("value", "low", "high", "value_per_dim", "bound_per_dim", "confidence", "seconds"):
        np.testing.assert_array_equal(merged[col].to_numpy(), merged[f"{col}_in"].to_numpy())
    # The bound H(L, Φ) and its interval: d·value for spectral (value = ‖H‖₂), the value
    # itself for the others.
    factor = np.where(merged["estimator"] == "spectral", D, 1.0)
    for col in ("value", "low", "high"):
        np.testing.assert_allclose(merged[f"bound_{col}"], factor * merged[col], rtol=1e-14)
    for col in ("step", "d", "n_hvp", "metric", "bound", "optimizer"):
        assert (merged[col] == merged[f"{col}_in"]).all(), col
    # Optimizer order of paper 000: adam, adasgd, rotated-adam.
    assert list(dict.fromkeys(table["optimizer"])) == ["adam", "adasgd", "rotated-adam"]

    text = md.read_text()
    assert "# Synthetic" in text
    for p in (runs_dir / "adam", runs_dir / "adasgd", runs_dir / "rot", res_path):
        assert str(p) in text  # the inputs section names every input
    # The markdown table shows the last-checkpoint value of adam's l11 row (4 digits).
    v = last[(last["run"] == "adam") & (last["estimator"] == "l11")]["value"].item()
    assert f"{v:.4g}" in text
    # ... and the spectral row shows the bound d‖H‖₂ = d·value and ‖H‖₂ as estimate / d.
    v = last[(last["run"] == "adasgd") & (last["estimator"] == "spectral")]["value"].item()
    assert f"| {D * v:.4g} | [{D * 0.93 * v:.4g}, " in text and f"(bound) | {v:.4g} |" in text

    # runs.csv: final eval loss is the last non-empty eval_loss of metrics.csv.
    runs_tab = pd.read_csv(out / "runs.csv")
    m = pd.read_csv(runs_dir / "adam" / "metrics.csv")
    row = runs_tab[runs_tab["optimizer"] == "adam"].iloc[0]
    assert row["final eval loss"] == m["eval_loss"].dropna().iloc[-1]
    assert row["steps"] == 300
    # The rotated run is labelled with its rotation.
    assert "rotated-adam [randperm:depth=2,seed=0]" in set(runs_tab["run"])


def test_per_tensor_shares_match_details(inputs, tmp_path):
    runs_dir, res_path, res = inputs
    out = tmp_path / "r"
    make_report([res_path], out, progress=False)
    shares = pd.read_csv(out / "l11_per_tensor.csv")
    src = res[(res["estimator"] == "l11") & (res["step"] == 300) & (res["run"] == "adasgd")]
    sums = json.loads(src["details"].item())["per_tensor"]
    total = sum(sums.values())
    assert total == pytest.approx(src["value"].item(), rel=1e-12)
    got = shares[shares["label"] == "adasgd"].set_index("tensor")["share"]
    assert set(got.index) == set(sums)
    for k, v in sums.items():
        assert got[k] == pytest.approx(v / total, rel=1e-12)
    # The error bars are the estimator's share intervals where the details carry them
    # (adasgd here), the conservative bound for older results (adam).
    mine = shares[shares["label"] == "adasgd"].set_index("tensor")
    for k, (lo, hi) in json.loads(src["details"].item())["per_tensor_share_interval"].items():
        assert (mine.loc[k, "share_low"], mine.loc[k, "share_high"]) == pytest.approx((lo, hi))
    assert set(mine["interval"]) == {"estimator"}
    old = shares[shares["label"] == "adam"]
    assert set(old["interval"]) == {"conservative"}
    assert old["share_high"].isna().all()  # these synthetic details carry no n to bound with
    # Rotated coordinates (rotated-l11 rows, and the rotated-adam run analysed in its own
    # rotated coordinates) are not broken down by tensor.
    assert set(shares["label"]) == {"adam", "adasgd"}
    assert len(shares) == 2 * len(TENSORS)


def test_l0l1_section_only_with_smoothness(inputs, tmp_path):
    runs_dir, res_path, _ = inputs
    out = tmp_path / "plain"
    make_report([runs_dir / "adam", runs_dir / "adasgd"], out, progress=False)
    text = (out / "report.md").read_text()
    assert "(L0, L1)" not in text and not (out / "l0l1.png").exists()
    # Results-only sections are absent without results, runs-only without runs.
    assert not (out / "norms.csv").exists() and "Smoothness under" not in text
    out2 = tmp_path / "res_only"
    make_report([res_path], out2, progress=False)
    assert (
        not (out2 / "runs.csv").exists()
        and "Training and evaluation loss" not in (out2 / "report.md").read_text()
    )

    out3 = tmp_path / "smooth"
    make_report([runs_dir / "rot"], out3, progress=False)
    text = (out3 / "report.md").read_text()
    assert "(L0, L1)" in text
    m = pd.read_csv(runs_dir / "rot" / "metrics.csv").dropna(subset=["local_smoothness"])
    fit = fit_l0l1(m["smooth_grad_norm"], m["local_smoothness"])
    assert f"L0 = {fit.L0:.4g}, L1 = {fit.L1:.4g}" in text
    fits = pd.read_csv(out3 / "l0l1.csv")
    assert fits["L0"].item() == pytest.approx(fit.L0, rel=1e-12)
    assert fits["n_points"].item() == len(m) == 60
    # The fitted line lies above every point.
    assert (fit.L0 + fit.L1 * m["smooth_grad_norm"] >= m["local_smoothness"] - 1e-9).all()


def test_html_is_self_contained(inputs, tmp_path):
    runs_dir, res_path, _ = inputs
    out = tmp_path / "h"
    make_report([runs_dir / "adam", res_path], out, progress=False)
    page = (out / "report.html").read_text()
    n_png = len(list(out.glob("*.png")))
    assert page.count("data:image/png;base64,") == n_png >= 3
    assert page.count("<table>") == 3  # runs, norms, per-tensor shares
    # No external resource: every src/href is an inline data URI.
    assert re.findall(r'(?:src|href)="(?!data:)', page) == []
    # The embedded bytes are exactly the PNGs written next to the page.
    blobs = [base64.b64decode(b) for b in re.findall(r'src="data:image/png;base64,([^"]+)"', page)]
    assert sorted(blobs) == sorted(p.read_bytes() for p in out.glob("*.png"))


def test_json_results_equal_csv_results(inputs, tmp_path):
    _, res_path, res = inputs
    json_path = tmp_path / "results.json"
    res.to_json(json_path, orient="records", double_precision=15, force_ascii=False)
    a = norms_table(load_input(res_path))
    b = norms_table(load_input(json_path))
    pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=1e-14)
    # Reading the same rows twice does not duplicate them.
    make_report([res_path, res_path], tmp_path / "twice", progress=False)
    assert len(pd.read_csv(tmp_path / "twice" / "norms.csv")) == len(a)


def test_every_checkpoint_and_standalone_checkpoints():
    """Rows without `run` (nanoGPT / state_dict inputs) each stand alone; a run's
    checkpoints are all listed, in step order."""
    rows = [
        dict(checkpoint="a/ckpt.pt", kind="nanogpt", run="", step="", estimator="l11", value=3.0),
        dict(
            checkpoint="b/model.pt", kind="state_dict", run="", step="", estimator="l11", value=4.0
        ),
        dict(checkpoint="r/ckpt_000010.pt", run="r", step=10, estimator="l11", value=1.0),
        dict(checkpoint="r/ckpt_000020.pt", run="r", step=20, estimator="l11", value=2.0),
    ]
    t = norms_table(pd.DataFrame(rows))
    assert sorted(t["value"]) == [1.0, 2.0, 3.0, 4.0]
    assert t.loc[t["run"] == "r", "step"].tolist() == [10, 20]


def test_bad_inputs_raise_config_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_input(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="without metrics.csv"):
        load_input(tmp_path / "empty")
    other = tmp_path / "other.csv"
    other.write_text("a,b\n1,2\n")
    with pytest.raises(
        ConfigError, match=r"lacks the columns \['checkpoint', 'estimator', 'value'\]"
    ):
        load_input(other)
    txt = tmp_path / "notes.txt"
    txt.write_text("hello")
    with pytest.raises(ConfigError, match="neither a run folder nor a results file"):
        load_input(txt)
    bad_json = tmp_path / "r.json"
    bad_json.write_text("{not json")
    with pytest.raises(ConfigError, match="cannot read .* as JSON"):
        load_input(bad_json)
    scalar_json = tmp_path / "s.json"
    scalar_json.write_text("3")
    with pytest.raises(ConfigError, match="JSON list of result rows"):
        load_input(scalar_json)
    run_dir = tmp_path / "badrun"
    run_dir.mkdir()
    (run_dir / "metrics.csv").write_text("x,y\n1,2\n")
    with pytest.raises(ConfigError, match=r"lacks the columns \['step', 'train_loss'\]"):
        load_input(run_dir)
    with pytest.raises(ConfigError, match="at least one"):
        make_report([], tmp_path / "out", progress=False)
    # A failing input writes no report.
    with pytest.raises(ConfigError):
        make_report([txt], tmp_path / "out2", progress=False)
    assert not (tmp_path / "out2" / "report.md").exists()


def test_cli_entry(inputs, tmp_path, capsys):
    import argparse

    runs_dir, res_path, _ = inputs
    parser = argparse.ArgumentParser()
    configure_parser(parser)
    args = parser.parse_args(
        [str(runs_dir / "adam"), str(res_path), "--out", str(tmp_path / "c"), "--quiet"]
    )
    assert run(args) == 0
    assert (tmp_path / "c" / "report.html").is_file()
    assert capsys.readouterr().out == ""
    # metrics.csv stands for its run folder.
    assert load_input(runs_dir / "adam" / "metrics.csv").config["optimizer"] == "adam"


def test_ambiguous_labels_get_folder_names(tmp_path):
    fake_run(tmp_path, "adam_lr1", "adam", steps=40, seed=0)
    fake_run(tmp_path, "adam_lr2", "adam", steps=40, seed=1)
    out = tmp_path / "o"
    make_report([tmp_path / "adam_lr1", tmp_path / "adam_lr2"], out, progress=False)
    labels = set(pd.read_csv(out / "runs.csv")["run"])
    assert labels == {"adam (adam_lr1)", "adam (adam_lr2)"}
    assert not math.isnan(pd.read_csv(out / "runs.csv")["final eval loss"].iloc[0])


def test_single_step_results_have_no_trajectory(tmp_path):
    res = fake_results({"adam": "adam"}, steps=(300,))
    res.to_csv(tmp_path / "one.csv", index=False)
    out = tmp_path / "o"
    make_report([tmp_path / "one.csv"], out, progress=False)
    assert (out / "norms.csv").is_file() and (out / "l11_per_tensor.png").is_file()
    assert not (out / "trajectories.png").exists()
    assert "Estimates along training" not in (out / "report.md").read_text()


# ---------------------------------------------------------------------------- figures


def test_plot_has_labels_legend_and_both_bounds():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    g = np.geomspace(0.1, 10, 20)
    s = 1.0 + 2.0 * g
    ax = plot_l0l1(g, s, title="demo", color_by=np.arange(20))
    try:
        assert ax.get_title() == "demo"
        assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
        assert "gradient norm" in ax.get_xlabel() and "smoothness" in ax.get_ylabel()
        labels = [t.get_text() for t in ax.get_legend().get_texts()]
        assert any("L0" in t for t in labels) and any("log s" in t for t in labels)
        # The (L0, L1) line drawn is the fitted one.
        line = ax.get_lines()[0]
        x, y = line.get_data()
        assert np.allclose(y, 1.0 + 2.0 * x, rtol=1e-6)
    finally:
        plt.close(ax.figure)
