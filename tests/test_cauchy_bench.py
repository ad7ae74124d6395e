"""Micro-benchmark (prints, asserts only correctness): cost of l11_norm's interval at large d.

The interval needs one comparison and one matrix-vector product per stored entry on
top of the sort that the row medians need anyway, so it is O(n·d), not O(B·n·d).
Run: ``HESSNORM_BENCH_D=10000000 pytest tests/test_cauchy_bench.py -m slow -s``.
"""

import os
import time

import pytest
import torch

from hessnorm.estimators.cauchy import _summarize, cauchy_scale_bias


@pytest.mark.slow
def test_spread_cost_at_large_d():
    d = int(os.environ.get("HESSNORM_BENCH_D", 10_000_000))
    n = int(os.environ.get("HESSNORM_BENCH_N", 50))
    g = torch.Generator().manual_seed(0)
    scale = torch.rand(d, generator=g) * 2 + 0.1
    Y = torch.empty(n, d, dtype=torch.float32)
    for i in range(n):  # synthetic probe results: row j is Cauchy(0, scale_j)
        Y[i] = torch.empty(d, dtype=torch.float32).cauchy_(generator=g) * scale
    c_n, slices = cauchy_scale_bias(n), {"all": slice(0, d)}
    times = {}
    for with_spread in (False, True):
        t0 = time.perf_counter()
        raw, _, Z = _summarize(Y, "median", c_n, slices, with_spread)
        times[with_spread] = time.perf_counter() - t0
    spread = times[True] - times[False]
    print(
        f"\nd={d:.3g} n={n} threads={torch.get_num_threads()}: row medians {times[False]:.2f} s,"
        f" medians + interval {times[True]:.2f} s, interval alone {spread:.2f} s"
        f" ({100 * spread / times[False]:.0f}% of the median pass, {spread / n * 1e3:.1f} ms per probe)"
    )
    assert abs(raw / c_n / scale.double().sum().item() - 1) < 1e-3
    assert Z.shape == (n,) and torch.isfinite(Z).all()
