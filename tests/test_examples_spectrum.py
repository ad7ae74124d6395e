"""examples/spectrum_of_a_checkpoint.py runs (small size) and agrees with exact references."""

import importlib.util
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_spectrum_of_a_checkpoint(tmp_path):
    spec = importlib.util.spec_from_file_location(
        "example_spectrum", ROOT / "examples" / "spectrum_of_a_checkpoint.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = module.main(tmp_path, small=True)
    assert out["plot"].is_file() and out["plot"].stat().st_size > 1000
    from hessnorm.estimators import exact

    H = exact.hessian(out["op"])
    lam = exact.eigvalsh(H)
    assert out["trace"].low < out["trace"].high
    # 12 Lanczos steps (small run): the top Ritz value is a lower bound, already close
    assert 0.5 * float(lam[-1]) < out["density"].lambda_max <= float(lam[-1]) + 1e-9
    share = float(H.diagonal().abs().sum() / H.abs().sum())
    assert out["share"].covers(share)
    assert 0.0 <= out["rotated_share"].low <= out["rotated_share"].high <= 1.0
    assert out["heterogeneity"].d == len(out["op"].param_names)
