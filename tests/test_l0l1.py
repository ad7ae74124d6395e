"""Tests of hessnorm.l0l1: the (L0, L1) fit, its plot and paper 003's synthetic experiments."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from hessnorm.errors import ConfigError, ShapeError
from hessnorm.l0l1 import (
    fit_l0l1,
    gd_divergence_example,
    gd_divergence_radius,
    plot_l0l1,
    reproduce,
    sgd_divergence_example,
    shi_adam_distances,
    shi_component_gradients,
    shi_objective,
    tail_average,
    trajectory_smoothness,
)

# ---------------------------------------------------------------------------- fit


def test_fit_recovers_line_exactly_when_two_points_touch_it():
    # Points on or below s = 3 + 0.5 g, with the two extreme-g points on the line. Any
    # line above both extremes lies above the true line on [g_min, g_max] ∋ mean(g), so
    # the true line is the unique LP optimum: exact up to LP tolerance.
    rng = np.random.default_rng(0)
    g = np.sort(rng.uniform(0.1, 100.0, 200))
    s = (3.0 + 0.5 * g) * (1 - rng.uniform(0.0, 0.3, g.size))
    s[0], s[-1] = 3.0 + 0.5 * g[0], 3.0 + 0.5 * g[-1]
    fit = fit_l0l1(g, s)
    assert fit.L0 == pytest.approx(3.0, rel=1e-7)
    assert fit.L1 == pytest.approx(0.5, rel=1e-7)
    assert fit.max_violation <= 1e-12 and fit.n_points == 200
    assert fit.mean_gap == pytest.approx(np.mean(3.0 + 0.5 * g - s), rel=1e-6)


def test_fit_with_noise_below_every_point():
    # Multiplicative noise in [0, 5%] below s = 2 + 4g on g ∈ [0.01, 10] (log-uniform).
    # The true line is feasible, so the fit's mean gap is at most the true one; with 500
    # points the hull points sit within the 5% band, so (L0, L1) are within ~5% too.
    rng = np.random.default_rng(1)
    g = np.exp(rng.uniform(np.log(0.01), np.log(10.0), 500))
    true = 2.0 + 4.0 * g
    s = true * (1 - rng.uniform(0.0, 0.05, g.size))
    fit = fit_l0l1(g, s)
    assert np.all(fit.bound(g) >= s)
    assert fit.mean_gap <= np.mean(true - s) + 1e-9
    assert fit.L0 == pytest.approx(2.0, rel=0.05)
    assert fit.L1 == pytest.approx(4.0, rel=0.05)


def test_loglog_view_of_fig_1b():
    # s = e^{1.4} g exactly (the paper's Transformer line): c = 1.4, and the LP line is
    # the same (L0 = 0, L1 = e^{1.4}).
    g = np.geomspace(0.1, 50, 30)
    s = math.exp(1.4) * g
    fit = fit_l0l1(g, s)
    assert fit.loglog_c == pytest.approx(1.4, abs=1e-12)
    assert fit.loglog_L1 == pytest.approx(math.exp(1.4), rel=1e-12)
    assert fit.L0 == pytest.approx(0.0, abs=1e-7 * s.max())
    assert fit.L1 == pytest.approx(math.exp(1.4), rel=1e-7)
    # c is the max of log(s/g): lowering one point leaves it, raising one moves it.
    s2 = s.copy()
    s2[5] *= 2.0
    assert fit_l0l1(g, s2).loglog_c == pytest.approx(1.4 + math.log(2.0), abs=1e-12)


def test_zero_gradient_points_are_left_out_of_the_loglog_view():
    fit = fit_l0l1([0.0, 1.0, 2.0], [2.0, 3.0, 4.0])
    assert fit.n_points == 3 and fit.n_loglog == 2
    assert fit.loglog_c == pytest.approx(math.log(3.0))
    assert fit.L0 == pytest.approx(2.0, rel=1e-7) and fit.L1 == pytest.approx(1.0, rel=1e-7)
    assert math.isnan(fit_l0l1([0.0], [1.0]).loglog_c)


@pytest.mark.parametrize(
    "g, s, match",
    [
        ([1.0, 2.0], [1.0], "same length"),
        ([], [], "at least one"),
        ([1.0, float("nan")], [1.0, 2.0], "finite"),
        ([1.0, -2.0], [1.0, 2.0], ">= 0"),
    ],
)
def test_fit_rejects_bad_points(g, s, match):
    with pytest.raises(ShapeError, match=match):
        fit_l0l1(g, s)


def test_plot_has_labels_legend_and_both_bounds():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    g = np.geomspace(0.1, 10, 20)
    s = 1.0 + 2.0 * g
    ax = plot_l0l1(g, s, title="demo", color_by=np.arange(20))
    try:
        assert ax.get_title() == "demo"
        assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
        assert "gradient norm" in ax.get_xlabel() and "smoothness" in ax.get_ylabel()
        labels = [t.get_text() for t in ax.get_legend().get_texts()]
        assert any("L0" in t for t in labels) and any("log s" in t for t in labels)
        # The (L0, L1) line drawn is the fitted one.
        line = ax.get_lines()[0]
        x, y = line.get_data()
        assert np.allclose(y, 1.0 + 2.0 * x, rtol=1e-6)
    finally:
        plt.close(ax.figure)


# ---------------------------------------------------------------------------- Shi et al.


def test_shi_problem_is_the_sum_convention():
    x = np.linspace(-5, 5, 11)
    f0 = (x - 3) ** 2 + 0.1
    fi = -0.1 * (x - 10 / 3) ** 2 + 0.1
    assert np.allclose(f0 + 9 * fi, shi_objective(x), atol=1e-12)
    grads = sum(shi_component_gradients(i, x) for i in range(10))
    assert np.allclose(grads, x / 5, atol=1e-12)


def test_shi_adam_neighbourhood_shrinks_as_beta2_grows():
    # Paper 003, Fig. 2: RR-Adam (β1 = 0.9, η_k = 1/√k) does not reach the minimizer 0,
    # but settles closer as β2 → 1. 6000 epochs: by then β2 = 0.99 has passed its zero
    # crossing and sits near its neighbourhood (|x| ≈ 0.15-0.2, see reports/l0l1), while
    # 0.999 is still approaching a smaller one. The ordering must hold for every seed
    # (same permutations across β2), with margins well outside the seed spread.
    dist = shi_adam_distances([0.9, 0.99, 0.999], epochs=6000, n_seeds=8, seed=0)
    assert dist.shape == (3, 8, 6001)
    tail = tail_average(dist, 0.1)
    assert np.all(tail[2] < 0.5 * tail[1]), tail
    assert np.all(tail[1] < 0.1 * tail[0]), tail
    # Not converged to 0 either: a neighbourhood, not the minimizer.
    assert np.all(tail[2] > 1e-3)
    # Deterministic for a fixed seed.
    again = shi_adam_distances([0.999], epochs=200, n_seeds=2, seed=0)
    assert np.array_equal(again[0], shi_adam_distances([0.999], epochs=200, n_seeds=2, seed=0)[0])


def test_shi_adam_first_epoch_by_hand():
    # One epoch, one seed, β2 = 0.9, checked against a direct scalar loop (no vectorization).
    x_vec = shi_adam_distances([0.9], epochs=1, n_seeds=1, seed=3, signed=True)[0, 0, 1]
    rng = np.random.default_rng(3)
    perm = np.argsort(rng.random((1, 1, 10)), axis=-1)[0, 0]
    x, m = 1.0, 0.0
    nu = np.mean(shi_component_gradients(np.arange(10), 1.0) ** 2)
    for i in perm:
        g = 2 * (x - 3) if i == 0 else -0.2 * (x - 10 / 3)
        m = 0.9 * m + 0.1 * g
        nu = 0.9 * nu + 0.1 * g * g
        x = x - m / (math.sqrt(nu) + 1e-8)
    assert x_vec == pytest.approx(x, rel=1e-14)


def test_shi_adam_rejects_bad_options():
    with pytest.raises(ConfigError, match="beta2s"):
        shi_adam_distances([1.0], epochs=1)
    with pytest.raises(ConfigError, match="beta1"):
        shi_adam_distances([0.9], epochs=1, beta1=1.0)
    with pytest.raises(ConfigError, match="epochs"):
        shi_adam_distances([0.9], epochs=0)
    with pytest.raises(ConfigError, match="nu0"):
        shi_adam_distances([0.9], epochs=1, nu0="cold")


# ---------------------------------------------------------------------------- Section 4.3


@pytest.mark.parametrize("eta1", [0.05, 0.5, 2.0])
def test_gd_diverges_beyond_the_proven_threshold_and_adam_does_not(eta1):
    R = gd_divergence_radius(eta1)
    assert 0.86 * eta1 * math.exp(R) / (2 * R + 1) >= 1.0  # the proof's condition
    assert R == 1.0 or 0.86 * eta1 * math.exp(R - 1e-6) / (2 * R - 2e-6 + 1) < 1.0
    starts = (R, 1.5 * R, -R - 3.0)
    ex = gd_divergence_example(eta1=eta1, starts=starts, steps=300)
    assert all(ex["gd_diverged"]), ex["gd_diverged"]
    # Adam: each step is at most η_t(1-β1)/sqrt((1-β2)(1-β1²/β2)) ≈ 7.25 η_t, so the
    # iterate never leaves |w0| + 7.25 η1 Σ 1/√t, and it ends near the minimizer.
    bound = 7.26 * eta1 * 2 * math.sqrt(300)
    for w0, row in zip(starts, ex["adam"]):
        assert np.all(np.abs(row) <= abs(w0) + bound)
        assert np.all(np.isfinite(row))


def test_gd_converges_below_threshold_and_adam_reaches_the_minimizer():
    ex = gd_divergence_example()  # η1 = 0.5, starts 1, 2.5, 3.5, 6; R ≈ 2.70
    assert 2.5 < ex["R"] < 2.75
    assert ex["gd_diverged"] == [False, True, True, True]
    assert abs(ex["gd"][0, -1]) < 1e-8
    assert max(ex["adam_final_abs"]) < 0.1


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sgd_diverges_where_gd_converges(seed):
    ex = sgd_divergence_example(seed=seed)
    assert ex["eta1"] == pytest.approx(1 / (2 * math.cosh(1.0)))
    assert abs(ex["gd"][-1]) < 1e-6  # GD with η1 = 1/L converges
    assert ex["sgd_diverged"] and not np.isfinite(ex["sgd"][-1])
    assert np.all(np.isfinite(ex["adam"])) and abs(ex["adam"][-1]) < 0.05


def test_trajectory_smoothness_matches_secants_of_cosh():
    # For f = 2cosh in 1-D the ratios are secant slopes (2sinh(w+γΔ) − 2sinh(w))/(γΔ).
    traj = np.array([2.0, 1.2, 0.3, 0.31])
    gn, sm = trajectory_smoothness(lambda w: 2 * np.sinh(w), traj[:, None])
    for k in range(3):
        w, d = traj[k], traj[k + 1] - traj[k]
        sec = [
            abs(2 * np.sinh(w + g * d) - 2 * np.sinh(w)) / (g * abs(d))
            for g in np.arange(1, 11) / 10
        ]
        assert sm[k] == pytest.approx(max(sec), rel=1e-12)
        assert gn[k] == pytest.approx(abs(2 * np.sinh(w)), rel=1e-14)
        # 2 ≤ secant ≤ max f'' on the segment, and f'' ≤ 2 + |f'| (L0 = 2, L1 = 1).
        assert 2.0 <= sm[k] <= 2 * np.cosh(max(abs(w), abs(w + d))) + 1e-12


# ---------------------------------------------------------------------------- reproduce


def test_reproduce_quick_writes_the_report(tmp_path):
    reproduce(tmp_path, quick=True, seed=0, progress=False)
    for name in [
        "shi_adam.png",
        "shi_adam.csv",
        "shi_adam_tail.csv",
        "divergence.png",
        "divergence.csv",
        "l0l1_fit.png",
        "l0l1_points.csv",
        "summary.json",
        "README.md",
    ]:
        assert (tmp_path / name).stat().st_size > 0, name
    summary = json.loads((tmp_path / "summary.json").read_text())
    tails = summary["shi"]["tail_mean_distance"]
    assert tails["0.999"] < tails["0.99"] < tails["0.9"]
    assert summary["example2"]["sgd_diverged"]
    fit = summary["fit_adam_cosh"]
    # Along Adam steps on 2cosh the secant slopes obey s ≤ 2 + |f'| up to the step size,
    # so the fitted pair sits near (2, 1).
    assert 1.5 < fit["L0"] < 2.5 and 0.7 < fit["L1"] < 1.3
    assert not list(tmp_path.glob(".*"))  # no temp files left behind
    readme = (tmp_path / "README.md").read_text()
    assert "6000 epochs" in readme
