"""Report tables and figures for a folder of checkpoints (issue 26): one table row per
(run, checkpoint) in step order, and no title or label cut off by the canvas."""

from __future__ import annotations

import json

import pandas as pd
import pytest

import hessnorm.report.figures as figures
from hessnorm.report import make_report, norms_table
from hessnorm.report.figures import texts_outside_canvas

TENSORS = ["transformer.wte.weight", "transformer.h.0.attn.c_attn.weight", "lm_head.weight"]


def _rows(run="very/long/path/to/a/nanogpt/out_dir_with_a_long_name", steps=(300, 100, 200)):
    """analyze rows of one run at three steps (listed out of order), one estimator."""
    rows = []
    for i, step in enumerate(steps):
        for est, metric, bound, value in (
            ("spectral", "H(L, ‖·‖₂)", "d‖H‖₂", 2.0 + i),
            ("l11", "H(L, ‖·‖∞)", "‖H‖₁,₁", 400.0 + 10 * i),
        ):
            per_tensor = {t: value / len(TENSORS) for t in TENSORS} if est == "l11" else {}
            rows.append(
                dict(
                    checkpoint=f"{run}/ckpt_{step}.pt",
                    kind="nanogpt",
                    run=run,
                    task="gpt",
                    optimizer="adamw",
                    step=step,
                    loss=2.5 - step / 1000,
                    estimator=est,
                    metric=metric,
                    bound=bound,
                    rotation="none",
                    value=value,
                    value_per_dim=value / 100,
                    low=0.99 * value,
                    high=1.01 * value,
                    confidence=0.95,
                    bound_per_dim=value if est == "spectral" else value / 100,
                    n_hvp=40,
                    seconds=1.0,
                    d=100,
                    eval_resamples=3,
                    eval_sd=0.1 * value,
                    eval_min=0.9 * value,
                    eval_max=1.1 * value,
                    details=json.dumps({"per_tensor": per_tensor} if per_tensor else {}),
                )
            )
    return pd.DataFrame(rows)


def test_norms_table_has_one_row_per_checkpoint_in_step_order():
    df = _rows()
    t = norms_table(df)
    assert len(t) == 6
    assert t[t["estimator"] == "spectral"]["step"].tolist() == [100, 200, 300]
    assert t["step"].tolist() == [100, 100, 200, 200, 300, 300]
    assert t.groupby(["checkpoint", "estimator"]).size().eq(1).all()
    # the numbers are those of the row of the same checkpoint
    for r in t.itertuples():
        src = df[(df["checkpoint"] == r.checkpoint) & (df["estimator"] == r.estimator)]
        assert r.value == src["value"].item()


def test_report_lists_every_checkpoint_and_keeps_shares_at_the_last(tmp_path):
    res = tmp_path / "res.csv"
    _rows().to_csv(res, index=False)
    make_report([res], tmp_path / "rep", progress=False)
    norms = pd.read_csv(tmp_path / "rep" / "norms.csv")
    assert sorted(norms["step"].unique()) == [100, 200, 300] and len(norms) == 6
    shares = pd.read_csv(tmp_path / "rep" / "l11_per_tensor.csv")
    assert shares["checkpoint"].unique().tolist() == [_rows()["checkpoint"].iloc[0]]


@pytest.fixture
def drawn(monkeypatch):
    """Every figure make_report renders, with the texts that leave its canvas."""
    seen = []
    finish = figures._finish

    def spy(fig, rect=None):
        png = finish(fig, rect)
        seen.append((fig, texts_outside_canvas(fig)))
        return png

    monkeypatch.setattr(figures, "_finish", spy)
    return seen


def test_no_report_figure_clips_a_title_or_label(tmp_path, drawn):
    res = tmp_path / "res.csv"
    # one run and one estimator: a single narrow panel under the longest suptitle
    _rows()[lambda d: d["estimator"] == "spectral"].to_csv(res, index=False)
    res2 = tmp_path / "res2.csv"
    _rows(run="r2")[lambda d: d["estimator"] == "l11"].to_csv(res2, index=False)
    make_report([res], tmp_path / "one", progress=False)
    make_report([res2], tmp_path / "two", progress=False)
    assert len(drawn) >= 3
    for fig, outside in drawn:
        assert outside == [], f"{fig.get_suptitle()!r}: clipped {outside}"


def test_the_clipping_check_sees_a_clipped_title(tmp_path, monkeypatch, drawn):
    # without the wrapping, the single-panel trajectory figure's suptitle is cut off
    monkeypatch.setattr(figures, "_wrap_wide_texts", lambda fig: False)
    res = tmp_path / "res.csv"
    _rows()[lambda d: d["estimator"] == "spectral"].to_csv(res, index=False)
    make_report([res], tmp_path / "one", progress=False)
    clipped = [outside for _, outside in drawn if outside]
    assert any("Hessian-norm estimates along training" in t for o in clipped for t in o)
