"""The adam-edge experiment: report logic on synthetic rows, and a tiny end-to-end run."""

import pandas as pd
import pytest
from matplotlib.figure import Figure

from hessnorm.experiments import adam_edge


def _rows(fracs):
    rows = []
    for lr in (1e-3, 1e-2):
        thr = 3.8 / lr * 10
        for step, f in zip(range(10, 10 * len(fracs) + 1, 10), fracs):
            lam = f * thr
            rows.append(
                dict(optimizer="adam", lr=lr, step=step, lambda_max=lam, low=lam * 0.99,
                     high=lam * 1.01, lambda_min=-1.0, threshold=thr, edge_fraction=f,
                     n_hvp=10, loss=1.0)
            )  # fmt: skip
    return pd.DataFrame(rows)


LINF = pd.DataFrame(
    [dict(optimizer=o, lr=3e-3, step=s, linf_low=10.0, l11_high=h, ratio=h / 10.0, n_hvp=5)
     for o, h in [("adam", 20.0), ("rotated-adam", 40.0)] for s in (10, 20)]
)  # fmt: skip


@pytest.mark.parametrize(
    "frac, verdict",
    [
        ((0.1, 0.3, 0.2, 0.3), "does **not** appear"),
        ((2.0, 0.1, 0.1, 0.1), "does **not** appear"),  # one early crossing is not the edge
        ((0.1, 0.9, 1.0, 0.95), "picture appears there"),
    ],
)
def test_report_states_what_is_observed(frac, verdict, tmp_path):
    text = adam_edge._report(_rows(frac), LINF, 20, 10, True, 0, 1.0)
    assert verdict in text
    assert ("not sustained" in text) == (frac[0] == 2.0)
    assert "adam 2.00, rotated-adam 4.00" in text
    adam_edge._plot_sharpness(Figure, _rows(frac), tmp_path / "s.png")
    adam_edge._plot_linf(Figure, LINF, tmp_path / "l.png")
    assert (tmp_path / "s.png").stat().st_size > 1000 and (tmp_path / "l.png").stat().st_size > 1000


@pytest.mark.slow
def test_reproduce_tiny(tmp_path, monkeypatch):
    """Two checkpoints per run, one Adam lr plus rotated Adam (minutes on a loaded CPU)."""
    monkeypatch.setattr(adam_edge, "_QUICK", (4, (3e-3,), 2, 1e-2, 20))
    adam_edge.reproduce(tmp_path, quick=True, seed=0, progress=False)
    s = pd.read_csv(tmp_path / "sharpness.csv")
    assert set(s.optimizer) == {"adam", "rotated-adam"} and len(s) == 4
    assert (s.low <= s.lambda_max).all() and (s.lambda_max <= s.high).all()
    assert (s.threshold == pytest.approx(38 / 3e-3)).all()
    ell = pd.read_csv(tmp_path / "linf.csv")
    assert (ell.linf_low <= ell.l11_high).all() and len(ell) == 2
    assert "fraction of the edge" in (tmp_path / "report.md").read_text()
