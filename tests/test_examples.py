"""Every example runs (small size) and its numbers agree with exact references."""

import importlib.util
import pathlib

import pandas as pd
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def load_example(name):
    spec = importlib.util.spec_from_file_location(
        f"example_{name}", ROOT / "examples" / f"{name}.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_norms_from_python():
    out = load_example("norms_from_python").main(small=True)
    spec, l11, truth = out["spectral"], out["l11"], out["exact"]
    # Lanczos converged to tol=1e-4 relative interval width: its error is below that
    assert spec.value == pytest.approx(truth["spectral"], rel=1e-4)
    # the interval holds the exact value up to the dense eigensolver's rounding (~1e-15)
    assert spec.low <= truth["spectral"] * (1 + 1e-12)
    assert spec.high >= truth["spectral"] * (1 - 1e-12)
    # n = 50 Cauchy probes: relative standard error ~12%; 4 of them is a 1-in-10⁴ miss
    assert l11.value == pytest.approx(truth["l11"], rel=0.5)


def test_gpt_optimizers_report(tmp_path):
    report = load_example("gpt_optimizers_report").main(tmp_path, small=True)
    assert report.is_file() and (report.parent / "report.html").is_file()
    df = pd.read_csv(tmp_path / "results.csv")
    assert set(df["optimizer"]) == {"adam", "adasgd", "rotated-adam"}
    assert sorted(set(df["step"])) == [10, 20]
    rotated = df[df["optimizer"] == "rotated-adam"]
    assert (rotated["rotation"] != "none").all() and rotated["metric"].str.contains("L∘R").all()
    text = report.read_text()
    assert "L0" in text and "L1" in text  # Adam's smoothness record made it into the report


def test_demo_command(capsys):
    from hessnorm.cli import main

    assert main(["demo", "--steps", "30", "--n-cauchy", "20", "--quiet"]) == 0
    out = capsys.readouterr().out
    rows = {
        line.split("  ")[0].strip(): line.split()
        for line in out.splitlines()
        if "‖" in line or "blockwise" in line
    }
    spectral = rows["spectral norm ‖H‖₂"]
    estimate, exact_value = float(spectral[3]), float(spectral[-3])
    assert estimate == pytest.approx(exact_value, rel=1e-4)  # Lanczos stops at 1e-4 interval width
    assert "RandPerm² rotated" in out and "d = 1210" in out
