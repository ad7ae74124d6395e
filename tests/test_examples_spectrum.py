"""examples/spectrum_of_a_checkpoint.py runs (small size); the slow test checks it against exact values."""

import importlib.util
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _run(tmp_path):
    spec = importlib.util.spec_from_file_location(
        "example_spectrum", ROOT / "examples" / "spectrum_of_a_checkpoint.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main(tmp_path, small=True)


def test_spectrum_of_a_checkpoint_runs(tmp_path):
    out = _run(tmp_path)
    assert out["plot"].is_file() and out["plot"].stat().st_size > 1000
    assert (tmp_path / "tiny_transformer.pt").is_file()
    assert out["trace"].low < out["trace"].value < out["trace"].high
    assert out["density"].lambda_min < out["density"].lambda_max
    for key in ("share", "rotated_share"):
        est = out[key]
        assert 0.0 <= est.low <= est.value <= est.high <= 1.0
        assert set(est.details["per_tensor"]) == (
            set(out["op"].param_names) if key == "share" else {"all"}
        )
    assert out["heterogeneity"].d == len(out["op"].param_names)


@pytest.mark.slow
def test_spectrum_of_a_checkpoint_against_exact(tmp_path):
    from hessnorm.estimators import exact

    out = _run(tmp_path)
    H = exact.hessian(out["op"])
    lam = exact.eigvalsh(H)
    # 12 Lanczos steps (small run): the top Ritz value is a lower bound, already close
    assert 0.5 * float(lam[-1]) < out["density"].lambda_max <= float(lam[-1]) + 1e-9
    assert out["share"].covers(float(H.diagonal().abs().sum() / H.abs().sum()))
