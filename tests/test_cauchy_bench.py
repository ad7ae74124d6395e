"""Micro-benchmark (prints, asserts only correctness): cost of l11_norm's interval at large d.

The interval needs one comparison and one matrix-vector product per stored entry on
top of the sort that the row medians need anyway, so it is O(n·d), not O(B·n·d).
Run: ``HESSNORM_BENCH_D=10000000 pytest tests/test_cauchy_bench.py -m slow -s``.
"""

import os
import time

import pytest
import torch

from hessnorm.estimators.cauchy import _chunk_pass, _influence_sums, cauchy_scale_bias


@pytest.mark.slow
def test_spread_cost_at_large_d():
    d = int(os.environ.get("HESSNORM_BENCH_D", 10_000_000))
    n = int(os.environ.get("HESSNORM_BENCH_N", 50))
    g = torch.Generator().manual_seed(0)
    scale = torch.rand(d, generator=g) * 2 + 0.1
    Y = torch.empty(n, d, dtype=torch.float32)
    for i in range(n):  # synthetic probe results: row j is Cauchy(0, scale_j)
        Y[i] = torch.empty(d, dtype=torch.float32).cauchy_(generator=g) * scale
    c_n, col = cauchy_scale_bias(n), (1 << 28) // (40 * n)  # l11_norm's default slices
    # Time the two steps slice by slice, interleaved, so that load on a shared
    # machine hits both alike: the sort + row statistics that the value needs, and
    # the sign + matrix-vector product that the interval adds.
    t_med = t_int = raw = 0.0
    Z = torch.zeros(n, dtype=torch.float64)
    for c0 in range(0, d, col):
        t0 = time.perf_counter()
        Yc = Y[:, c0 : c0 + col]
        m, _ = _chunk_pass(Yc, "median", c_n, False)
        t1 = time.perf_counter()
        Z += _influence_sums(Yc.abs(), m.float(), c_n)
        t2 = time.perf_counter()
        t_med, t_int, raw = t_med + t1 - t0, t_int + t2 - t1, raw + float(m.sum())
    spread = t_int
    print(
        f"\nd={d:.3g} n={n} threads={torch.get_num_threads()}: sort + row medians {t_med:.2f} s,"
        f" interval (|Y|, sign, matvec) {t_int:.2f} s = {100 * t_int / t_med:.0f}% of the median"
        f" pass, {t_int / n * 1e3:.1f} ms per probe"
    )
    assert abs(raw / c_n / scale.double().sum().item() - 1) < 1e-3
    assert Z.shape == (n,) and torch.isfinite(Z).all()
    del Y

    # One HVP of a nanoGPT-style LM with ~d parameters, for scale.
    from hessnorm.operator import HessianOperator
    from hessnorm.train.gpt import GPT, GPTConfig, lm_loss

    width = 64 * max(1, round((d / 12 / 4) ** 0.5 / 64))  # 4 layers of ~12·width² weights
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=64, vocab_size=256, n_layer=4, n_head=4, n_embd=width))
    tok = torch.randint(0, 256, (8, 65), generator=g)
    op = HessianOperator.from_module(model, lm_loss, [(tok[:, :-1], tok[:, 1:])])
    v = torch.empty(op.d).cauchy_(generator=g)
    op.hvp(v)  # warm-up
    t0 = time.perf_counter()
    op.hvp(v)
    hvp = time.perf_counter() - t0
    print(
        f"one HVP of a GPT with d={op.d:.3g} (batch 8×64 tokens): {hvp:.2f} s; the interval costs"
        f" {100 * spread / n / hvp:.1f}% of an HVP per probe"
    )
