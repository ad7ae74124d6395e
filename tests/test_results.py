"""Tests of hessnorm.results: the one estimator registry analyze and report read."""

from __future__ import annotations

import pytest
import torch

from hessnorm.errors import ConfigError
from hessnorm.estimators import exact
from hessnorm.estimators.cauchy import l11_norm
from hessnorm.operator import DenseOperator
from hessnorm.results import (
    COLUMNS,
    DEFAULT_ESTIMATORS,
    ESTIMATORS,
    NUMERIC_COLUMNS,
    is_spectrum,
    parse_estimators,
    per_dim_label,
)


def test_registry_names_and_labels():
    assert list(ESTIMATORS) == [
        "spectral",
        "l11",
        "blockwise:by_tensor",
        "blockwise:by_row",
        "rotated-l11",
        "rotated-spectral",
        "trace",
        "density",
        "diagonal-share",
        "rotated-diagonal-share",
        "block-spectra:by_tensor",
    ]
    assert set(DEFAULT_ESTIMATORS) <= set(ESTIMATORS)
    assert set(NUMERIC_COLUMNS) <= set(COLUMNS)
    for name, spec in ESTIMATORS.items():
        assert spec.name == name
        assert spec.rotated == name.startswith("rotated")
        if spec.family == "spectrum":
            assert is_spectrum(name) and not spec.bound_is_d_times_value
            assert spec.ratio == (name.endswith("diagonal-share") or "block" in name)
            continue
        assert spec.family == "smoothness" and not spec.ratio and not is_spectrum(name)
        # a run trained with rotated Adam is analysed on L∘R: labels say so
        assert spec.metric_rotated_run.startswith("H(L∘R,")
        assert "RᵀHR" in spec.bound_rotated_run
        assert spec.rotated == name.startswith("rotated")
        assert spec.bound_is_d_times_value == name.endswith("spectral")


def test_bound_per_dim_rule():
    assert ESTIMATORS["spectral"].bound_per_dim(3.0, 10) == 3.0  # d‖H‖₂ / d
    assert ESTIMATORS["l11"].bound_per_dim(3.0, 10) == pytest.approx(0.3)


def test_every_entry_runs_and_matches_exact():
    g = torch.Generator().manual_seed(0)
    A = torch.randn(6, 6, generator=g, dtype=torch.float64)
    H = A + A.T
    op = DenseOperator(H)
    kw = dict(n_cauchy=400, seed=0, tol=1e-8, progress=False)
    assert ESTIMATORS["spectral"].run(op, **kw).value == pytest.approx(exact.spectral_norm(H))
    l11 = ESTIMATORS["l11"].run(op, **kw)
    direct = l11_norm(op, n=400, seed=0, progress=False)
    assert (l11.value, l11.low, l11.high) == (direct.value, direct.low, direct.high)
    # 400 probes: within 4 standard errors of the exact value (fails with p < 1e-4)
    assert abs(l11.value - exact.l11_norm(H)) < 4 * l11.details["se"]


def test_parse_estimators_and_errors():
    assert parse_estimators(["l11", " spectral "]) == ["l11", "spectral"]
    with pytest.raises(ConfigError, match="unknown estimator.*choose from spectral"):
        parse_estimators("trace-norm")
    with pytest.raises(ConfigError, match="unknown estimator"):
        parse_estimators(",")


def test_spectrum_entries_equal_direct_calls():
    """Each spectrum entry's Estimate is the direct estimator call with the same seed."""
    from torch import nn

    from hessnorm.estimators.density import block_heterogeneity, block_spectra, spectral_density
    from hessnorm.estimators.diagonal import diagonal_share
    from hessnorm.estimators.trace import trace
    from hessnorm.operator import HessianOperator

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3)).double()  # d = 75
    x, y = torch.randn(16, 5, dtype=torch.float64), torch.arange(16) % 3
    op = HessianOperator.from_module(net, nn.functional.cross_entropy, (x, y))
    kw = dict(n_cauchy=20, seed=3, tol=1e-6, progress=False)
    assert ESTIMATORS["trace"].run(op, **kw).value == trace(op, seed=3, progress=False).value
    dens = ESTIMATORS["density"].run(op, **kw)
    sd = spectral_density(op, seed=3, progress=False)
    assert dens.value == sd.to_estimate().value and dens.low == sd.to_estimate().low
    assert dens.details["lambda_max"] == sd.lambda_max
    assert "nodes" not in dens.details  # the measure travels in "spectra", not the row
    assert dens.details["spectra"]["H"] == sd
    share = ESTIMATORS["diagonal-share"].run(op, **kw)
    direct = diagonal_share(op, n_l11=20, seed=3, progress=False)
    assert (share.value, share.low, share.high) == (direct.value, direct.low, direct.high)
    het = ESTIMATORS["block-spectra:by_tensor"].run(op, **kw)
    spectra = block_spectra(op, "by_tensor", n_probes=4, steps=24, seed=3, progress=False)
    want = block_heterogeneity(spectra, seed=3)
    assert (het.value, het.low, het.high) == (want.value, want.low, want.high)
    assert het.d == op.d and het.details["n_blocks"] == len(op.param_names)
    assert list(het.details["spectra"]) == op.param_names
    # ratios are their own per-dimension value; traces are divided by d
    assert ESTIMATORS["diagonal-share"].bound_per_dim(0.4, 100) == 0.4
    assert ESTIMATORS["trace"].bound_per_dim(4.0, 100) == 0.04


def test_per_dim_label():
    assert per_dim_label("d‖H‖₂") == "‖H‖₂"
    assert per_dim_label("d‖RᵀHR‖₂") == "‖RᵀHR‖₂"
    assert per_dim_label("S(H, Φ)") == "S(H, Φ) / d"
    assert per_dim_label("") == "estimate / d"
    assert per_dim_label("tr(H)") == "tr(H) / d"
    assert per_dim_label("mean pairwise JS distance") == "mean pairwise JS distance"


def test_block_spectra_needs_named_parameters():
    from hessnorm.errors import SelectionError

    op = DenseOperator(torch.eye(4, dtype=torch.float64))
    with pytest.raises(SelectionError, match="needs the model's named parameters"):
        ESTIMATORS["block-spectra:by_tensor"].run(op, n_cauchy=5, seed=0, tol=1e-3, progress=False)
