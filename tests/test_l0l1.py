"""Tests of hessnorm.l0l1: the (L0, L1) fit."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hessnorm.errors import ShapeError
from hessnorm.l0l1 import fit_l0l1, l0l1_points

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


def test_points_are_validated_and_returned_as_floats():
    g, s = l0l1_points([1, 2], [3, 4])
    assert g.dtype == s.dtype == np.float64 and g.tolist() == [1.0, 2.0]
