"""Quick versions of the paper-table experiments (paper 000 Tables 2–4, Fig. 1–2).

Each runs in seconds; the checks are on the outputs' structure and on where the
numbers come from: table entries are recomputed from the saved checkpoints with
the estimators (and, for the small ResNet, against the exact dense Hessian).
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pandas as pd
import pytest
import torch

import hessnorm as hn
from hessnorm.errors import ConfigError
from hessnorm.estimators import exact
from hessnorm.experiments import _runs, resnet, table2
from hessnorm.rotation import parse as parse_rotation
from hessnorm.train.loop import TrainConfig
from hessnorm.train.runs import rebuild


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The experiments run single-threaded, as their command lines do by default."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def gpt_quick(tmp_path_factory, one_thread):
    root = tmp_path_factory.mktemp("table2")
    out = root / "report"
    path = table2.run(out, quick=True, runs_dir=root / "runs", progress=False)
    return path, out, root / "runs"


@pytest.fixture(scope="module")
def resnet_quick(tmp_path_factory, one_thread):
    root = tmp_path_factory.mktemp("resnet")
    out = root / "report"
    path = resnet.run(out, quick=True, runs_dir=root / "runs", progress=False)
    return path, out, root / "runs"


def test_table2_quick_outputs(gpt_quick):
    path, out, _ = gpt_quick
    for name in ("table.md", "runs.csv", "norms.csv", "trend.csv", "curves.png"):
        assert (out / name).is_file(), name
    md = path.read_text()
    assert "smoke test, NOT the experiment" in md
    for heading in ("## Table 2", "## Fig. 1", "### Trend", "## Setup and every deviation"):
        assert heading in md
    assert "Not run in this session" in md  # the paper-scale section says so
    runs = pd.read_csv(out / "runs.csv")
    assert set(runs.optimizer) == {"adam", "adasgd", "rotated-adam"}
    seed0 = runs[runs.seed == 0]
    mean = {}
    for opt, g in seed0.groupby("optimizer"):
        assert g.best.sum() == 1
        best = g[g.best].iloc[0]
        assert best.final_eval_loss == g.final_eval_loss.min()
        at_best = runs[(runs.optimizer == opt) & (runs.lr == best.lr)]
        assert sorted(at_best.seed) == [0, 1]  # the quick config re-runs the best lr
        mean[opt] = at_best.final_eval_loss.mean()
    trend = pd.read_csv(out / "trend.csv").iloc[0]
    for opt, m in mean.items():
        assert trend[f"{opt}_eval"] == pytest.approx(m, rel=1e-12)
    gap = trend["gap[adasgd<rotated-adam]"]
    assert gap == pytest.approx(mean["adasgd"] - mean["rotated-adam"], rel=1e-9)
    assert trend["verdict[adasgd<rotated-adam]"].split(" (")[0] in {
        "holds",
        "does not hold",
        "not separable",
    }


def test_table2_numbers_come_from_the_estimators(gpt_quick):
    path, out, _ = gpt_quick
    norms = pd.read_csv(out / "norms.csv")
    runs = pd.read_csv(out / "runs.csv")
    # the quick config computes all three quantities at all three checkpoints
    assert len(norms) == 9
    md = path.read_text()
    row = norms[(norms.checkpoint_of == "adam") & (norms.quantity == "l11")].iloc[0]
    assert f"| Adam | H(L, Φ_Adam) | ‖∇²L‖₁,₁ / d | {row.per_dim:.4g} [" in md
    # recompute the Adam row from the saved checkpoint, independently of the module
    best = runs[(runs.optimizer == "adam") & runs.best & (runs.seed == 0)].iloc[0]
    ckpt = sorted(Path(best.run).glob("ckpt_*.pt"))[-1]
    model, _, loss_fn, meta = rebuild(ckpt)
    batches = _runs.fixed_train_batches(meta, 1, 12345)
    op = hn.HessianOperator.from_module(model, loss_fn, batches)
    est = hn.l11_norm(op, n=12, seed=0, progress=False)
    assert est.value / op.d == pytest.approx(row.per_dim, rel=1e-5)
    assert row.d == op.d == table2._n_params(table2.configs("cpu", True)[0].model)
    # the rotated-Adam row is the (1,1)-norm of R^T H R with the run's own rotation
    rrow = norms[(norms.checkpoint_of == "rotated-adam") & (norms.quantity == "rotated-l11")]
    best = runs[(runs.optimizer == "rotated-adam") & runs.best & (runs.seed == 0)].iloc[0]
    ckpt = sorted(Path(best.run).glob("ckpt_*.pt"))[-1]
    model, _, loss_fn, meta = rebuild(ckpt)
    assert meta["rotation"] == rrow.rotation.item()
    op = hn.HessianOperator.from_module(model, loss_fn, _runs.fixed_train_batches(meta, 1, 12345))
    rop = op.rotated(parse_rotation(meta["rotation"], op.d))
    est = hn.l11_norm(rop, n=12, seed=0, progress=False)
    assert est.value / op.d == pytest.approx(rrow.per_dim.item(), rel=1e-5)


def test_table2_rerun_uses_the_cache(gpt_quick, tmp_path):
    _, out, runs_dir = gpt_quick
    ckpts = sorted(runs_dir.rglob("ckpt_*.pt"))
    before = {p: p.stat().st_mtime_ns for p in ckpts}
    norms_before = pd.read_csv(out / "norms.csv")
    table2.run(tmp_path, quick=True, runs_dir=runs_dir, progress=False)
    assert {p: p.stat().st_mtime_ns for p in sorted(runs_dir.rglob("ckpt_*.pt"))} == before
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "norms.csv"), norms_before)


def test_resnet_quick_outputs(resnet_quick):
    path, out, _ = resnet_quick
    for name in ("table.md", "runs.csv", "table4.csv", "norms.csv", "curves.png"):
        assert (out / name).is_file(), name
    md = path.read_text()
    for heading in ("## Table 4", "### Orderings", "## Table 3", "## Setup and every deviation"):
        assert heading in md
    runs = pd.read_csv(out / "runs.csv")
    t4 = pd.read_csv(out / "table4.csv")
    assert list(t4.batch_size) == [16, 64]
    for (opt, bs), g in runs[runs.seed == 0].groupby(["optimizer", "batch_size"]):
        best = g[g.best]
        assert len(best) == 1
        assert best.final_train_loss.item() == g.final_train_loss.min()
        assert t4.set_index("batch_size").loc[bs, f"{opt}_mean"] == pytest.approx(
            best.final_train_loss.item()
        )
        # the fixed budget: the same number of examples at every batch size
        assert best.steps.item() == math.ceil(1 * 1500 / bs)
    # the paper's numbers are shown beside ours
    assert "[paper 0.0472]" in md and "| Adam | H(L, Φ_Adam) | ‖∇²L‖₁,₁ / d |" in md


def test_resnet_norms_come_from_the_estimators(resnet_quick):
    _, out, _ = resnet_quick
    norms = pd.read_csv(out / "norms.csv")
    runs = pd.read_csv(out / "runs.csv")
    row = norms[(norms.checkpoint_of == "adasgd") & (norms.quantity == "spectral")].iloc[0]
    best = runs[(runs.optimizer == "adasgd") & runs.best & (runs.batch_size == 64)].iloc[0]
    ckpt = sorted(Path(best.run).glob("ckpt_*.pt"))[-1]
    model, _, loss_fn, meta = rebuild(ckpt)
    op = hn.HessianOperator.from_module(model, loss_fn, _runs.fixed_train_batches(meta, 1, 12345))
    est = hn.spectral_norm(op, tol=1e-3, max_iter=100, seed=0, progress=False)
    assert est.value == pytest.approx(row.per_dim, rel=1e-6)
    assert (
        f"| AdaSGD | H(L, Φ_AdaSGD) | d‖∇²L‖₂ / d = ‖∇²L‖₂ | {row.per_dim:.4g} ["
        in (out / "table.md").read_text()
    )


@pytest.mark.slow
def test_resnet_norms_match_the_exact_hessian(resnet_quick):
    """Table 3 entries against the dense Hessian of the same batch (d = 398, 398 HVPs)."""
    _, out, _ = resnet_quick
    norms = pd.read_csv(out / "norms.csv")
    assert set(norms.checkpoint_of) == {"sgd", "adasgd", "adam", "rotated-adam"}
    runs = pd.read_csv(out / "runs.csv")
    for opt in ("adam", "rotated-adam"):
        best = runs[(runs.optimizer == opt) & runs.best & (runs.batch_size == 64)].iloc[0]
        ckpt = sorted(Path(best.run).glob("ckpt_*.pt"))[-1]
        model, _, loss_fn, meta = rebuild(ckpt, dtype="float64")
        batches = _runs.fixed_train_batches(meta, 1, 12345, dtype=torch.float64)
        op = hn.HessianOperator.from_module(model, loss_fn, batches)
        H = exact.hessian(op)
        R = parse_rotation(meta["rotation"] or "randperm:depth=2,seed=0", op.d).matrix(
            torch.float64
        )
        truth = {
            "spectral": float(torch.linalg.eigvalsh(H).abs().max()),
            "l11": float(H.abs().sum()) / op.d,
            "rotated-l11": float((R.T @ H @ R).abs().sum()) / op.d,
        }
        got = norms[norms.checkpoint_of == opt].set_index("quantity")
        # Lanczos' bracket is rigorous (float32 run: allow 1e-4 relative rounding)
        lo, hi = got.loc["spectral", "low_per_dim"], got.loc["spectral", "high_per_dim"]
        assert lo * (1 - 1e-4) <= truth["spectral"] <= hi * (1 + 1e-4)
        # (1,1)-norms: 20 probes; the 95% bootstrap interval must cover the truth
        for q in ("l11", "rotated-l11"):
            lo, hi = got.loc[q, "low_per_dim"], got.loc[q, "high_per_dim"]
            assert lo <= truth[q] <= hi, (opt, q, lo, truth[q], hi)


def test_search_lr_walks_to_an_interior_minimum():
    calls = []

    def f(lr):
        calls.append(lr)
        return (math.log10(lr) + 2.0) ** 2  # minimum at 1e-2

    grid = (1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)
    best, seen = _runs.search_lr(grid, 0, f)
    assert grid[best] == 1e-2
    assert sorted(seen) == [0, 1, 2, 3, 4]  # stops once both neighbours are worse
    assert len(calls) == len(set(calls))  # nothing evaluated twice
    # a diverged value (nan/inf) never wins; edge optimum reported at the edge
    best, _ = _runs.search_lr(grid, 5, lambda lr: math.nan if lr > 0.05 else -lr)
    assert grid[best] == 1e-2


def test_verdict_branches():
    assert _runs.verdict(0.5, 0.1) == "holds"
    assert _runs.verdict(-0.5, 0.1) == "does not hold"
    assert _runs.verdict(0.1, 0.1) == "not separable"
    assert _runs.verdict(0.1, math.nan) == "holds (no noise estimate)"
    assert _runs.verdict(math.inf, 0.1) == "holds"
    assert _runs.verdict(-math.inf, 0.1) == "does not hold"


def test_train_cached_marks_divergence(tmp_path):
    cfg = TrainConfig(
        task="quadratic",
        optimizer="sgd",
        steps=200,
        lr=1e4,
        out=str(tmp_path / "run"),
        device="cpu",
        progress=False,
        task_options={"d": 20},
    )
    r = _runs.train_cached(cfg)
    assert r["status"] == "diverged" and r["final_eval_loss"] == math.inf
    assert (tmp_path / "run" / _runs.DIVERGED).is_file()
    again = _runs.train_cached(cfg)
    assert again["cached"] and again["status"] == "diverged"


def test_scale_errors_name_the_fix():
    with pytest.raises(ConfigError, match="--data-dir"):
        table2.configs("paper", False, None)
    with pytest.raises(ConfigError, match="--data-dir"):
        resnet.config("paper", False, None)
    with pytest.raises(ConfigError, match="unknown scale"):
        table2.configs("huge", False)
    with pytest.raises(ConfigError, match="unknown scale"):
        resnet.config("huge", False)
    with pytest.raises(ConfigError, match="--data-dir"):
        table2.main(["--scale", "paper", "--out", "unused"])
    with pytest.raises(ConfigError, match="unknown quantities"):
        _runs.hessian_norms("never-read.pt", ["frobenius"])


def test_paper_scale_estimates_are_computed():
    c = table2.configs("paper", False, data_dir="x")[0]
    assert c.model["n_layer"] == 12 and c.model["n_embd"] == 768 and c.steps == 100_000
    # nanoGPT's 6N + 12·L·T·C per token at 124M parameters
    f = table2.gpt_flops_per_step(c.model, 1) / c.model["block_size"]
    assert 7.5e8 < f < 8.5e8
    fwd = resnet.resnet_flops_per_example({"width": 8, "stages": 2}, (1, 8, 8))
    assert fwd > 0
    text = "\n".join(table2._paper_estimate_lines())
    assert re.search(r"~\d+ h per 100k-step run", text)
