"""Tests of hessnorm.results: the one estimator registry analyze and report read."""

from __future__ import annotations

import pytest
import torch

from hessnorm.errors import ConfigError
from hessnorm.estimators import exact
from hessnorm.operator import DenseOperator
from hessnorm.results import (
    COLUMNS,
    DEFAULT_ESTIMATORS,
    ESTIMATORS,
    NUMERIC_COLUMNS,
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
    ]
    assert set(DEFAULT_ESTIMATORS) <= set(ESTIMATORS)
    assert set(NUMERIC_COLUMNS) <= set(COLUMNS)
    for name, spec in ESTIMATORS.items():
        assert spec.name == name
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
    assert l11.covers(exact.l11_norm(H))


def test_parse_estimators_and_errors():
    assert parse_estimators(["l11", " spectral "]) == ["l11", "spectral"]
    with pytest.raises(ConfigError, match="unknown estimator.*choose from spectral"):
        parse_estimators("trace")
    with pytest.raises(ConfigError, match="unknown estimator"):
        parse_estimators(",")


def test_per_dim_label():
    assert per_dim_label("d‖H‖₂") == "‖H‖₂"
    assert per_dim_label("d‖RᵀHR‖₂") == "‖RᵀHR‖₂"
    assert per_dim_label("S(H, Φ)") == "S(H, Φ) / d"
    assert per_dim_label("") == "estimate / d"
