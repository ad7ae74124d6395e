"""The spectrum estimators through analyze (rows, sidecar) and report (tables, figures)."""

import json
import math

import pandas as pd
import pytest
import torch
from torch import nn

import hessnorm as hn
from hessnorm.checkpoint import load
from hessnorm.estimators.density import (
    SpectralDensity,
    block_heterogeneity,
    block_spectra,
    spectral_density,
)
from hessnorm.estimators.diagonal import diagonal_share
from hessnorm.estimators.trace import trace
from hessnorm.report import make_report
from hessnorm.results import read_results, spectra_path, write_results
from hessnorm.rotation import parse as parse_rotation

NAMES = "trace,density,diagonal-share,rotated-diagonal-share,block-spectra:by_tensor"


def _model():
    return nn.Sequential(nn.Linear(10, 20), nn.Tanh(), nn.Linear(20, 5))  # d = 325


def _data():
    g = torch.Generator().manual_seed(0)
    return [(torch.randn(32, 10, generator=g), torch.randint(0, 5, (32,), generator=g))]


@pytest.fixture(scope="module")
def analysed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("spectrum")
    paths = []
    for i in range(2):
        torch.manual_seed(i)
        paths.append(tmp / f"w{i}.pt")
        torch.save(_model().state_dict(), paths[-1])
    kw = dict(model=_model, data=_data, dtype="float64", n_cauchy=20, seed=1)
    df = hn.analyze(paths, NAMES, progress=False, log=False, **kw)
    out = write_results(df, tmp / "results.csv")
    return tmp, paths, df, out, kw


def test_rows_equal_direct_calls(analysed):
    _, paths, df, _, kw = analysed
    assert len(df) == 10 and set(df["estimator"]) == set(NAMES.split(","))
    net, batches, loss_fn, _ = load(paths[1], model=_model, data=_data, dtype=torch.float64)
    op = hn.HessianOperator.from_module(net, loss_fn, batches)
    rows = df[df["checkpoint"] == str(paths[1])].set_index("estimator")
    R = parse_rotation("randperm:depth=2,seed=0", op.d)  # analyze's default rotation
    direct = {
        "trace": trace(op, seed=1, progress=False),
        "density": spectral_density(op, seed=1, progress=False).to_estimate(),
        "diagonal-share": diagonal_share(op, n_l11=20, seed=1, progress=False),
        "rotated-diagonal-share": diagonal_share(op.rotated(R), n_l11=20, seed=1, progress=False),
        "block-spectra:by_tensor": block_heterogeneity(
            block_spectra(op, "by_tensor", n_probes=4, steps=24, seed=1, progress=False), seed=1
        ),
    }
    for name, est in direct.items():
        row = rows.loc[name]
        assert (row["value"], row["low"], row["high"]) == (est.value, est.low, est.high), name
        assert row["d"] == op.d == 325 and row["n_hvp"] == est.n_hvp, name
    assert not direct["trace"].details["exact"]  # 60 < d: a real Hutch++ estimate
    assert rows.loc["rotated-diagonal-share", "rotation"] == "randperm:depth=2,seed=0"
    assert rows.loc["diagonal-share", "bound_per_dim"] == rows.loc["diagonal-share", "value"]
    assert rows.loc["trace", "bound_per_dim"] == pytest.approx(rows.loc["trace", "value"] / 325)
    per_tensor = rows.loc["diagonal-share", "details"]["per_tensor"]
    assert per_tensor == pytest.approx(direct["diagonal-share"].details["per_tensor"])


def test_sidecar_holds_the_densities(analysed):
    tmp, paths, df, out, _ = analysed
    side = spectra_path(out)
    assert side == tmp / "results.spectra.json" and side.is_file()
    written = read_results(out)  # details parsed where files are read, and only there
    doc = json.loads(side.read_text())
    assert doc["format"] == "hessnorm-spectra/1" and doc["results"] == "results.csv"
    assert len(doc["spectra"]) == 4  # density and block spectra of two checkpoints
    for row in written.itertuples():
        details = row.details
        if row.estimator not in ("density", "block-spectra:by_tensor"):
            assert "spectra_file" not in details
            continue
        assert details["spectra_file"] == side.name
        entry = doc["spectra"][details["spectra_key"]]
        assert entry["checkpoint"] == row.checkpoint and entry["estimator"] == row.estimator
        blocks = {k: SpectralDensity.from_dict(v) for k, v in entry["blocks"].items()}
        want = df.attrs["spectra"][details["spectra_key"]]["blocks"]
        assert blocks == want  # per-probe nodes and weights, exactly
        if row.estimator == "density":
            (sd,) = blocks.values()
            assert sd.lambda_max == details["lambda_max"]
            assert sd.to_estimate().value == row.value
        else:
            assert list(blocks) == ["0.weight", "0.bias", "2.weight", "2.bias"]
            assert block_heterogeneity(blocks, seed=1).value == row.value
    # results without attrs (e.g. rebuilt frames) are written without a sidecar
    plain = pd.DataFrame(df.to_dict(orient="records"))
    write_results(plain, tmp / "plain.json")
    assert not spectra_path(tmp / "plain.json").exists()


def test_report_draws_the_spectrum(analysed):
    tmp, _, df, out, _ = analysed
    rep = tmp / "report"
    md = make_report([out], rep, progress=False).read_text()
    assert "The whole spectrum" in md and "Smoothness under" not in md  # no norm rows
    pngs = sorted(p.name for p in rep.glob("*.png"))
    assert pngs == ["block_spectra_unknown_w0_pt.png", "block_spectra_unknown_w1_pt.png", "diagonal_share.png",
                    "esd.png"], pngs  # fmt: skip
    assert all((rep / p).stat().st_size > 5000 for p in pngs)
    table = pd.read_csv(rep / "spectrum.csv")
    assert len(table) == 10
    for r in table.itertuples():
        src = df[(df["checkpoint"] == r.checkpoint) & (df["estimator"] == r.estimator)].iloc[0]
        assert (r.value, r.low, r.high) == (src["value"], src["low"], src["high"])
        if r.estimator == "density":
            assert r.lambda_max == src["details"]["lambda_max"]
            # the converged λ_min of the density (it used to be renamed away: an empty column)
            assert r.lambda_min == src["details"]["lambda_min"] and math.isfinite(r.lambda_min)
            assert f"λ_min ≈ {r.lambda_min:.4g}" in md
            assert f"λ_max ≈ {r.lambda_max:.4g}" in md
        assert f"{r.value:.4g}" in md
    shares = pd.read_csv(rep / "diagonal_share_per_tensor.csv")
    assert set(shares["tensor"]) == {"0.weight", "0.bias", "2.weight", "2.bias"}
    assert len(shares) == 8


def test_report_without_sidecar_says_so(analysed):
    tmp, _, df, _, _ = analysed
    plain = tmp / "nosidecar.csv"
    write_results(pd.DataFrame(df.to_dict(orient="records")), plain)
    md = make_report([plain], tmp / "report2", progress=False).read_text()
    assert "No spectra sidecar found" in md
    assert not (tmp / "report2" / "esd.png").exists()
    assert (tmp / "report2" / "diagonal_share.png").is_file()
