"""Tests of the estimator registry (hessnorm.registry) and the result rows (hessnorm.results)."""

from __future__ import annotations

import pytest
import torch

from hessnorm.errors import ConfigError
from hessnorm.estimators import exact
from hessnorm.estimators.cauchy import l11_norm
from hessnorm.operator import DenseOperator
from hessnorm.registry import (
    BUILTIN_MODULES,
    estimator_options,
    estimators,
    get_estimator,
    parse_estimators,
    split_options,
)
from hessnorm.results import (
    COLUMNS,
    DEFAULT_ESTIMATORS,
    NUMERIC_COLUMNS,
    is_spectrum,
    per_dim_label,
)

BUILTINS = [
    "spectral",
    "l11",
    "blockwise",
    "trace",
    "density",
    "block-spectra",
    "diagonal-share",
    "adam-sharpness",
    "linf",
    "phi",
]
# the names `hessnorm analyze --estimators` accepted before the registry existed
LEGACY_NAMES = [
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


def test_every_builtin_registers_in_its_own_module():
    specs = estimators()
    assert [n for n in specs if specs[n].fn.__module__ in BUILTIN_MODULES] == BUILTINS
    for name, spec in specs.items():
        assert spec.name == name and spec.description, name
        assert spec.family in ("smoothness", "spectrum", "other")
        assert spec.fn.__module__.startswith("hessnorm.estimators."), name


def test_legacy_names_resolve_with_the_same_labels():
    sels = parse_estimators(LEGACY_NAMES)
    assert [s.label for s in sels] == LEGACY_NAMES
    assert set(DEFAULT_ESTIMATORS) <= set(LEGACY_NAMES)
    assert set(NUMERIC_COLUMNS) <= set(COLUMNS)
    by = {s.label: s for s in sels}
    assert by["rotated-l11"].rotated and by["rotated-l11"].spec.name == "l11"
    assert dict(by["blockwise:by_row"].fixed) == {"partition": "by_row"}
    assert by["spectral"].labels() == ("H(L, Φ_AdaSGD)", "d‖H‖₂")
    assert by["rotated-spectral"].labels() == ("H(L∘R, Φ_AdaSGD)", "d‖RᵀHR‖₂")
    assert by["l11"].labels(rotated_run=True) == ("H(L∘R, Φ_Adam)", "‖RᵀHR‖₁,₁")
    assert by["blockwise:by_row"].labels() == ("H(L, Φ_by_row)", "S(H, Φ)")
    for s in sels:
        if s.spec.family == "smoothness":
            # a run trained with rotated Adam is analysed on L∘R: labels say so
            metric, bound = s.labels(rotated_run=True)
            assert metric.startswith("H(L∘R,") and "RᵀHR" in bound, s.label
            assert not is_spectrum(s.label)
        else:
            assert is_spectrum(s.label)


def test_bound_per_dim_rule():
    assert get_estimator("spectral").bound_per_dim(3.0, 10) == 3.0  # d‖H‖₂ / d
    assert get_estimator("l11").bound_per_dim(3.0, 10) == pytest.approx(0.3)
    assert get_estimator("diagonal-share").bound_per_dim(0.4, 100) == 0.4
    assert get_estimator("trace").bound_per_dim(4.0, 100) == 0.04


def test_options_come_from_the_signatures():
    spec = get_estimator("l11")
    assert spec.option_names == ("n_cauchy",) and spec.defaults() == {"n_cauchy": 50}
    assert spec.options[0].help.startswith("Cauchy probes")
    assert spec.cost({"n_cauchy": 7}, 1000) == 7
    assert get_estimator("spectral").cost({}, 20) == 20  # at most d Lanczos steps
    opts = estimator_options()
    assert {"n_cauchy", "tol", "max_iter", "partition"} <= set(opts)
    assert opts["partition"].choices == ("by_tensor", "by_row", "coordinates", "single")
    with pytest.raises(ConfigError, match="takes a int"):
        spec.resolve({"n_cauchy": "many"})
    with pytest.raises(ConfigError, match="takes no option tol"):
        spec.resolve({"tol": 1e-3})


def test_split_options_scopes_and_typos():
    sels = parse_estimators("spectral,l11,diagonal-share")
    per, unused = split_options(sels, {"n_cauchy": 20, "l11.n_cauchy": 30, "tol": 1e-3})
    assert per["l11"]["n_cauchy"] == 30 and per["diagonal-share"]["n_cauchy"] == 20
    assert per["spectral"] == {"tol": 1e-3, "max_iter": 300} and unused == []
    _, unused = split_options(parse_estimators("spectral"), {"n_cauchy": 20})
    assert unused == ["n_cauchy"]
    with pytest.raises(ConfigError, match="unknown option 'n_cauhcy'"):
        split_options(sels, {"n_cauhcy": 20})
    with pytest.raises(ConfigError, match="trace is not among the selected"):
        split_options(sels, {"trace.n_cauchy": 20})


def test_every_entry_runs_and_matches_exact():
    g = torch.Generator().manual_seed(0)
    A = torch.randn(6, 6, generator=g, dtype=torch.float64)
    H = A + A.T
    op = DenseOperator(H)
    spectral = get_estimator("spectral").run(op, {"tol": 1e-8})
    assert spectral.value == pytest.approx(exact.spectral_norm(H))
    # the unconverged smallest Ritz value is labelled so in the spectral row only
    assert "lambda_min_unconverged" in spectral.details and "lambda_min" not in spectral.details
    l11 = get_estimator("l11").run(op, {"n_cauchy": 400})
    direct = l11_norm(op, n=400, seed=0, progress=False)
    assert (l11.value, l11.low, l11.high) == (direct.value, direct.low, direct.high)
    # 400 probes: within 4 standard errors of the exact value (fails with p < 1e-4)
    assert abs(l11.value - exact.l11_norm(H)) < 4 * l11.details["se"]


def test_parse_estimators_and_errors():
    assert [s.label for s in parse_estimators(["l11", " spectral "])] == ["l11", "spectral"]
    with pytest.raises(ConfigError, match="unknown estimator.*choose from spectral"):
        parse_estimators("trace-norm")
    with pytest.raises(ConfigError, match="no estimator named"):
        parse_estimators(",")
    with pytest.raises(ConfigError, match="named twice: l11"):
        parse_estimators("l11,l11")
    with pytest.raises(ConfigError, match="must be one of by_tensor"):
        parse_estimators("blockwise:by_column")
    with pytest.raises(ConfigError, match="needs its partition after a colon"):
        parse_estimators("blockwise")
    with pytest.raises(ConfigError, match="takes no ':' argument"):
        parse_estimators("l11:by_row")


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

    def run(name, **options):
        (sel,) = parse_estimators([name])
        return sel.spec.run(op, sel.resolve(options), seed=3)

    assert run("trace").value == trace(op, seed=3, progress=False).value
    dens = run("density")
    sd = spectral_density(op, seed=3, progress=False)
    assert dens.value == sd.to_estimate().value and dens.low == sd.to_estimate().low
    assert dens.details["lambda_max"] == sd.lambda_max
    assert "nodes" not in dens.details and "spectra" not in dens.details
    assert dens.artifacts["spectra"]["H"] == sd  # the measure travels with the estimate
    share = run("diagonal-share", n_cauchy=20)
    direct = diagonal_share(op, n_l11=20, seed=3, progress=False)
    assert (share.value, share.low, share.high) == (direct.value, direct.low, direct.high)
    het = run("block-spectra:by_tensor")
    spectra = block_spectra(op, "by_tensor", n_probes=4, steps=24, seed=3, progress=False)
    want = block_heterogeneity(spectra, seed=3)
    assert (het.value, het.low, het.high) == (want.value, want.low, want.high)
    assert het.d == op.d and het.details["n_blocks"] == len(op.param_names)
    assert list(het.artifacts["spectra"]) == op.param_names


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
        get_estimator("block-spectra").run(op, {"partition": "by_tensor"})


def test_registration_contract_errors():
    from hessnorm.registry import register_estimator

    with pytest.raises(ConfigError, match="must be keyword-only"):
        register_estimator("bad-a", metric="x")(lambda op, seed=0, progress=False: None)
    with pytest.raises(ConfigError, match="must take keyword-only seed"):

        def no_seed(op, *, progress=False):
            return None

        register_estimator("bad-b", metric="x")(no_seed)
    with pytest.raises(ConfigError, match="options must be int, float, str or bool"):

        def bad_type(op, *, seed=0, progress=False, probes: list = None):  # noqa: B006
            return None

        register_estimator("bad-c", metric="x")(bad_type)
    with pytest.raises(ConfigError, match="already registered"):

        def spectral(op, *, seed=0, progress=False):
            return None

        register_estimator("spectral", metric="x")(spectral)
    with pytest.raises(ConfigError, match="not starting with 'rotated-'"):
        register_estimator("rotated-x", metric="x")
    assert not {"bad-a", "bad-b", "bad-c"} & set(estimators())
