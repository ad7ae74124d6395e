"""Per-HVP cost of hessnorm's operator against the double-backward loop peers use.

For an MLP and a tiny transformer on the CPU (float32), measures:

* one gradient (plain ``loss.backward()``),
* one HVP through each hessnorm path (graph / fwd / rev),
* the amortized time per HVP of a k = 50 block (``op.hvp(V)``, forward-over-reverse
  under vmap),
* the same 50 HVPs done PyHessian's way: a loop of double-backward calls through a
  gradient graph built once (``pyhessian.hessian`` when installed, else the same
  loop written here), and curvlinops' ``HessianLinearOperator`` when installed.

Prints a table of seconds and ratios. Nothing is asserted: targets live in the
README (batched amortized HVP ≤ 2× one gradient; ≥ 1.5× faster than the loop).

Run:  python benchmarks/bench_operator.py [--threads 2] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from _peers import MeanLoss

from hessnorm.operator import HessianOperator, math_attention
from hessnorm.testing import MLP, TinyTransformer, char_tokens, digits, init_params, lm_loss


def timeit(fn, repeats: int) -> float:
    fn()  # warm up (graph building, vmap tracing caches)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def problems():
    g = torch.Generator().manual_seed(0)
    x, y = digits(512)
    yield "MLP 64-128-128-10", init_params(MLP((64, 128, 128, 10)), g), F.cross_entropy, (x, y)
    xt, yt = char_tokens(32, block=32, vocab=64)
    model = init_params(TinyTransformer(vocab=64, dim=64, heads=4, layers=2, block=32), g)
    yield "transformer 2x64", model, lm_loss, (xt, yt)


def bench(name, model, loss_fn, batch, k, repeats):
    x, y = batch
    params = [p for p in model.parameters() if p.requires_grad]
    d = sum(p.numel() for p in params)
    row = {"model": name, "d": d}

    def grad_once():
        model.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()

    row["grad"] = timeit(grad_once, repeats)

    op = HessianOperator.from_module(model, loss_fn, batch)
    gen = torch.Generator().manual_seed(0)
    V = torch.randn(k, d, generator=gen)
    for mode in ("graph", "fwd", "rev"):
        op.mode = mode
        row[f"hvp1_{mode}"] = timeit(lambda: op.hvp(V[0]), repeats)
    op.mode = "fwd"
    row["batched_fwd"] = timeit(lambda: op.hvp(V), max(1, repeats // 2)) / k
    op.mode = "rev"
    row["batched_rev"] = timeit(lambda: op.hvp(V), max(1, repeats // 2)) / k

    # PyHessian's way: gradient graph built once, then one double-backward per vector.
    try:
        from pyhessian import hessian as pyh_hessian
        from pyhessian.utils import hessian_vector_product

        def loop():  # math attention: PyHessian fails on the fused SDPA kernels otherwise
            with math_attention():
                _pyhessian_loop()

        def _pyhessian_loop():
            h = pyh_hessian(model, lambda out, t: loss_fn(out, t), data=(x, y), cuda=False)
            for i in range(k):
                hessian_vector_product(
                    h.gradsH,
                    h.params,
                    [
                        t.view_as(p)
                        for t, p in zip(torch.split(V[i], [p.numel() for p in params]), params)
                    ],
                )

        row["peer"] = "pyhessian"
    except ImportError:

        def loop():
            with math_attention():
                _loop()

        def _loop():
            loss = loss_fn(model(x), y)
            grads = torch.autograd.grad(loss, params, create_graph=True)
            for i in range(k):
                vs = [
                    t.view_as(p)
                    for t, p in zip(torch.split(V[i], [p.numel() for p in params]), params)
                ]
                torch.autograd.grad(grads, params, grad_outputs=vs, retain_graph=True)

        row["peer"] = "double-backward loop"
    row["loop"] = timeit(loop, max(1, repeats // 2)) / k

    try:
        from curvlinops import HessianLinearOperator

        with math_attention():
            H = HessianLinearOperator(
                model, MeanLoss(loss_fn), params, [(x, y)], check_deterministic=False
            )
        Vn = V.T.contiguous()

        def cl():
            with math_attention():
                H @ Vn

        row["curvlinops"] = timeit(cl, max(1, repeats // 2)) / k
    except Exception as exc:  # not installed or API drift: report, don't fail
        row["curvlinops"] = float("nan")
        row["curvlinops_error"] = f"{type(exc).__name__}: {exc}"[:80]
    return row


def main():
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("-k", type=int, default=50)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, CPU, {args.threads} threads, float32, k = {args.k}; median of {args.repeats}"
    )
    print(
        f"{'model':<20}{'d':>8}{'grad ms':>9}{'hvp1 graph':>11}{'fwd':>8}{'rev':>8}"
        f"{'batched/HVP':>12}{'loop/HVP':>10}{'curvlin/HVP':>12}{'batched/grad':>13}{'loop/batched':>13}"
    )
    for prob in problems():
        r = bench(*prob, k=args.k, repeats=args.repeats)
        ms = {key: 1e3 * r[key] for key in r if isinstance(r[key], float)}
        best_batched = min(r["batched_fwd"], r["batched_rev"])
        print(
            f"{r['model']:<20}{r['d']:>8}{ms['grad']:>9.2f}{ms['hvp1_graph']:>11.2f}{ms['hvp1_fwd']:>8.2f}"
            f"{ms['hvp1_rev']:>8.2f}{1e3 * best_batched:>12.3f}{ms['loop']:>10.3f}{ms['curvlinops']:>12.3f}"
            f"{best_batched / r['grad']:>13.2f}{r['loop'] / best_batched:>13.2f}"
        )
        print(
            f"{'':<20}  batched fwd {1e3 * r['batched_fwd']:.3f} ms, batched rev {1e3 * r['batched_rev']:.3f} ms; loop = {r['peer']}"
        )
        if "curvlinops_error" in r:
            print(f"{'':<20}  curvlinops: {r['curvlinops_error']}")


if __name__ == "__main__":
    main()
