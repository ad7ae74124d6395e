"""Every estimator at GPT-2 small size (124M parameters) on one machine.

nanoGPT's GPT-2 small configuration (12 layers, 12 heads, 768 wide, vocab 50304,
block 1024), random init, float32, on ``--batch`` random sequences of ``--seq-len``
tokens. Each stage runs in a fresh subprocess, so its peak memory is its own: peak
RSS (``VmHWM`` of /proc/self/status) on the CPU, ``torch.cuda.max_memory_allocated``
on a GPU. Stages:

* ``grad``       one gradient of the mean loss (the unit of time and memory),
* ``hvp1``       one HVP through the single-vector path (``op.hvp(v)``, steady state),
* ``hvpk``       ``--hvp-batch`` HVPs in one batched call (forward-over-reverse, vmap),
* ``chunk=c``    the same batch with a fixed vmap chunk size c (``--chunk-sweep``),
                 its peak against the operator's own estimate of a chunk's memory,
* ``spectral``   ``spectral_norm(tol=1e-3, max_iter=--lanczos-iter)``,
* ``l11``        ``l11_norm(n=--n-cauchy)``,
* ``blockwise``  ``blockwise_smoothness(Partition.by_tensor(op))``: its HVP count is
                 known in advance; it runs only with ``--run-blockwise``, otherwise
                 the table shows its estimated time and memory, marked "estimated",
* ``rotated``    ``l11_norm`` of the RandPerm²-rotated operator,
* ``local``      ``local_smoothness`` along one SGD step (``--alpha`` 0.1: 11 gradients).

The parent prints an ETA before every stage from the measured gradient and HVP times.
Nothing is asserted here; ``tests/test_scale.py`` holds the checks.

Run:  python benchmarks/bench_scale.py --batch 2 --seq-len 128 --n-cauchy 8
      python benchmarks/bench_scale.py --device cuda --batch 8 --seq-len 1024
      python benchmarks/bench_scale.py --quick     # a 2-layer, 256-wide model: a smoke run
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time

import torch

GiB = 2**30


# ----------------------------------------------------------------------------- stage side
def _status(key: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    return -1


def _reset_peak(device: str) -> int:
    """Reset the peak-memory counter; returns the current usage it starts from."""
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        return torch.cuda.memory_allocated()
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
    except OSError:
        pass
    return _status("VmRSS")


def _peak(device: str) -> int:
    if device == "cuda":
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated()
    return _status("VmHWM")


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _config(args):
    from hessnorm.train.gpt import GPTConfig

    if args.quick:
        return GPTConfig(n_layer=2, n_head=4, n_embd=256, vocab_size=50304, block_size=1024)
    return GPTConfig()  # GPT-2 small: 12 x 12 x 768, vocab 50304, block 1024


def _operator(args, **kw):
    from hessnorm.operator import HessianOperator
    from hessnorm.train.gpt import GPT, lm_loss

    cfg = _config(args)
    with torch.random.fork_rng():
        torch.manual_seed(args.seed)
        model = GPT(cfg).eval()
        idx = torch.randint(0, cfg.vocab_size, (args.batch, args.seq_len + 1))
    data = (idx[:, :-1].contiguous(), idx[:, 1:].contiguous())
    op = HessianOperator.from_module(model, lm_loss, data, device=args.device, **kw)
    del model  # the operator holds its own copy
    return op


def _probe(op, k: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(k, op.d, generator=g).to(op.device, op.dtype)


def run_stage(args) -> dict:
    from hessnorm import Partition, RandPerm, l11_norm, local_smoothness, spectral_norm

    torch.set_num_threads(args.threads)
    dev = args.device
    stage = args.stage
    kw = {}
    if stage.startswith("chunk="):
        kw = {"chunk_size": int(stage.split("=")[1]), "mode": "fwd"}
    op = _operator(args, **kw)
    out = {"stage": stage, "d": op.d}
    if stage == "grad":
        op.gradient()  # warm up (allocator, thread pool)
        base = _reset_peak(dev)
        t = time.perf_counter()
        op.gradient()
        _sync(dev)
        out.update(seconds=time.perf_counter() - t, n_hvp=0)
    elif stage == "hvp1":
        v = _probe(op, 1, 1)[0]
        base = _reset_peak(dev)
        t = time.perf_counter()
        op.hvp(v)  # builds and caches the gradient graph (single-vector path)
        _sync(dev)
        first = time.perf_counter() - t
        t = time.perf_counter()
        op.hvp(v)
        _sync(dev)
        out.update(seconds=time.perf_counter() - t, first_call=first, n_hvp=1)
        out["path"] = op.strategy
    elif stage == "hvpk" or stage.startswith("chunk="):
        # a chunk stage runs exactly one chunk, so its peak is that chunk's
        k = args.hvp_batch if stage == "hvpk" else int(stage.split("=")[1])
        V = _probe(op, k, 2)
        op.hvp(V[:1])  # warm up forward-mode AD (decompositions, vmap caches)
        base = _reset_peak(dev)
        t = time.perf_counter()
        op.hvp(V)
        _sync(dev)
        out.update(seconds=(time.perf_counter() - t) / k, n_hvp=k)
        fixed, per_vec = op._chunk_cost()
        chunk = op._chunk(k)
        out.update(
            chunk=chunk,
            estimate_bytes=fixed + chunk * per_vec,
            budget=op._memory_profile()[1],
            activation_bytes=op._memory_profile()[0],
        )
    elif stage == "spectral":
        base = _reset_peak(dev)
        t = time.perf_counter()
        e = spectral_norm(op, tol=1e-3, max_iter=args.lanczos_iter, progress=False)
        out.update(seconds=time.perf_counter() - t, n_hvp=e.n_hvp, value=e.value)
        out["rel_width"] = (e.high - e.low) / max(abs(e.value), 1e-30)
    elif stage == "l11":
        base = _reset_peak(dev)
        t = time.perf_counter()
        e = l11_norm(op, n=args.n_cauchy, progress=False)
        out.update(seconds=time.perf_counter() - t, n_hvp=e.n_hvp, value=e.value)
        out.update(store=e.details["store"], rel_width=(e.high - e.low) / e.value)
    elif stage == "rotated":
        base = _reset_peak(dev)
        t = time.perf_counter()
        R = RandPerm(op.d, depth=2, seed=0)
        out["build_rotation"] = time.perf_counter() - t
        e = l11_norm(op.rotated(R), n=args.n_cauchy, progress=False)
        out.update(seconds=time.perf_counter() - t, n_hvp=e.n_hvp, value=e.value)
    elif stage == "local":
        g = op.gradient()
        w_next = op.point - 1e-3 * g / g.norm()
        base = _reset_peak(dev)
        t = time.perf_counter()
        e = local_smoothness(op, op.point, w_next, alpha=args.alpha)
        out.update(seconds=time.perf_counter() - t, n_hvp=0, value=e.value)
    elif stage == "blockwise":
        from hessnorm.estimators.blockwise import blockwise_smoothness

        base = _reset_peak(dev)
        t = time.perf_counter()
        e = blockwise_smoothness(op, Partition.by_tensor(op), progress=False)
        out.update(seconds=time.perf_counter() - t, n_hvp=e.n_hvp, value=e.value)
    else:
        raise SystemExit(f"unknown stage {stage!r}")
    out.update(peak=_peak(dev), base=base)
    return out


# ----------------------------------------------------------------------------- parent side
def machine(device: str) -> str:
    from hessnorm.experiments._runs import machine_info

    info = machine_info()
    mem = "?"
    try:
        with open("/proc/meminfo") as fh:
            kb = {ln.split(":")[0]: int(ln.split()[1]) for ln in fh}
        mem = (
            f"{kb['MemTotal'] / 2**20:.0f} GiB RAM, {kb['MemAvailable'] / 2**20:.0f} GiB available"
        )
    except (OSError, KeyError):
        pass
    s = f"{info['cpu']}, {info['cores']} cores, {mem}, torch {info['torch']}"
    if device == "cuda" and "gpu" in info:
        s += f", GPU {info['gpu']}"
    if info["load_avg_1_5_15"] is not None:
        s += f", load average {info['load_avg_1_5_15'][0]}"
    return s


def blockwise_cost(args, per_hvp: float) -> dict:
    """HVPs and time blockwise_smoothness(by_tensor) plans (its ``dry_run``), without running it."""
    import types

    from hessnorm.estimators.blockwise import blockwise_smoothness
    from hessnorm.partition import Partition
    from hessnorm.train.gpt import GPT

    with torch.device("meta"):
        model = GPT(_config(args))
    shapes = {n: tuple(p.shape) for n, p in model.named_parameters()}  # tied weights once
    d = sum(math.prod(s) for s in shapes.values())
    # the plan needs only the sizes: an operator stand-in that never runs an HVP
    stub = types.SimpleNamespace(
        d=d, dtype=torch.float32, device=torch.device("cpu"), matvec_count=0, hvp=None
    )
    part = Partition.by_tensor(shapes)
    plan = blockwise_smoothness(stub, part, dry_run=True, progress=False)
    n_hvp = int(plan["n_hvp_max"])
    return {
        "stage": "blockwise",
        "estimated": True,
        "n_hvp": n_hvp,
        "seconds": n_hvp * per_hvp,
        "n_blocks": part.n_blocks,
        "pairs": part.n_blocks**2,
        "plan": {k: v for k, v in plan.items() if isinstance(v, (int, float, str))},
    }


def fmt_s(s: float) -> str:
    return f"{s:8.1f} s" if s < 3600 else f"{s / 3600:7.1f} h"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--n-cauchy", type=int, default=50)
    ap.add_argument("--lanczos-iter", type=int, default=30, help="spectral_norm max_iter")
    ap.add_argument("--hvp-batch", type=int, default=4, help="k of the batched HVP stage")
    ap.add_argument("--chunk-sweep", default="", help="e.g. 1,2,4: fixed vmap chunk sizes")
    ap.add_argument("--stages", default="grad,hvp1,hvpk,spectral,l11,blockwise,rotated,local")
    ap.add_argument("--run-blockwise", action="store_true", help="run it, not just estimate")
    ap.add_argument("--quick", action="store_true", help="2 layers x 256 wide (smoke run)")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--alpha", type=float, default=0.1, help="local_smoothness grid step")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--stage-timeout", type=float, default=3600.0)
    ap.add_argument("--json", default="", help="also write the rows to this file")
    ap.add_argument("--stage", default="", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.stage:
        print("RESULT " + json.dumps(run_stage(args)), flush=True)
        return
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is visible to torch")

    cfg = _config(args)
    print(f"machine: {machine(args.device)}")
    print(
        f"model: GPT {cfg.n_layer}x{cfg.n_head}x{cfg.n_embd}, vocab {cfg.vocab_size}, "
        f"random init, float32, {args.batch} x {args.seq_len} tokens, device {args.device}, "
        f"{args.threads} threads"
    )
    stages = [s for s in args.stages.split(",") if s]
    sweep = [f"chunk={c}" for c in args.chunk_sweep.split(",") if c]
    if "hvpk" in stages:
        stages[stages.index("hvpk") + 1 : stages.index("hvpk") + 1] = sweep
    else:
        stages += sweep
    env = dict(os.environ)
    # large allocations straight from mmap, so freed memory leaves RSS and peaks are honest
    env.setdefault("MALLOC_MMAP_THRESHOLD_", "65536")
    env["PYTHONPATH"] = os.pathsep.join(
        [os.path.dirname(os.path.dirname(os.path.abspath(__file__))), env.get("PYTHONPATH", "")]
    )
    rows: list[dict] = []
    unit = {"grad": None, "hvp": None}

    def eta(stage: str) -> str:
        g, h = unit["grad"], unit["hvp"]
        if g is None:
            return "unknown (first stage)"
        h = h or 3 * g
        n = {
            "grad": 0,
            "hvp1": 3,
            "hvpk": args.hvp_batch + 3,
            "spectral": args.lanczos_iter + 2,
            "l11": args.n_cauchy + 2,
            "rotated": args.n_cauchy + 2,
        }.get(stage.split("=")[0], None)
        if stage.startswith("chunk="):
            n = args.hvp_batch + 2
        if stage == "local":
            return fmt_s((round(1 / args.alpha) + 4) * g).strip()
        return fmt_s((n or 0) * h + 3 * g).strip()

    for stage in stages:
        if stage == "blockwise" and not args.run_blockwise:
            per = unit["hvp"] or float("nan")
            row = blockwise_cost(args, per)
            rows.append(row)
            print(
                f"[blockwise] not run: by_tensor has {row['n_blocks']} blocks "
                f"({row['pairs']:,} block pairs) and would take ~{row['n_hvp']:,} HVPs "
                f"= {fmt_s(row['seconds']).strip()} here (--run-blockwise to run it)",
                flush=True,
            )
            continue
        print(f"[{stage}] running, ETA {eta(stage)} ...", flush=True)
        cmd = [sys.executable, os.path.abspath(__file__), "--stage", stage]
        for a in ("batch", "seq_len", "device", "n_cauchy", "lanczos_iter", "hvp_batch", "alpha"):
            cmd += [f"--{a.replace('_', '-')}", str(getattr(args, a))]
        cmd += ["--threads", str(args.threads), "--seed", str(args.seed)]
        if args.quick:
            cmd.append("--quick")
        t = time.perf_counter()
        try:
            proc = subprocess.run(
                cmd, env=env, capture_output=True, text=True, timeout=args.stage_timeout
            )
        except subprocess.TimeoutExpired:
            print(f"[{stage}] timed out after {args.stage_timeout:.0f} s", flush=True)
            rows.append({"stage": stage, "error": "timeout"})
            continue
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
        if proc.returncode != 0 or not lines:
            err = (proc.stderr.strip().splitlines() or ["?"])[-1]
            print(f"[{stage}] failed (rc {proc.returncode}): {err}", flush=True)
            rows.append({"stage": stage, "error": err})
            continue
        row = json.loads(lines[-1][7:])
        row["wall"] = time.perf_counter() - t
        rows.append(row)
        if stage == "grad":
            unit["grad"] = row["seconds"]
            unit["grad_peak"] = row["peak"]
        if stage == "hvpk":
            unit["hvp"] = row["seconds"]
        elif stage == "hvp1" and unit["hvp"] is None:
            unit["hvp"] = row["seconds"]
        print(f"[{stage}] done in {row['wall']:.1f} s: {json.dumps(row)}", flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"machine": machine(args.device), "unit": unit, "rows": rows}, fh, indent=1)
    print(f"machine at the end: {machine(args.device)}")
    print_table(rows, unit, args)


def print_table(rows, unit, args) -> None:
    g, gp = unit.get("grad"), unit.get("grad_peak")
    mem = "peak RSS" if args.device == "cpu" else "peak CUDA alloc"
    print()
    print(f"| stage | wall time | HVPs | per HVP (x grad) | {mem} (x grad) | value / note |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['stage']} | - | - | - | - | failed: {r['error'][:80]} |")
            continue
        n = r.get("n_hvp", 0)
        per = r["seconds"] / n if n and r["stage"] not in ("hvp1", "hvpk") else r["seconds"]
        if r["stage"].startswith("chunk=") or r["stage"] in ("hvp1", "hvpk"):
            per = r["seconds"]
        x = f"{per:.2f} s ({per / g:.1f}x)" if g and n else "-"
        if r.get("estimated"):
            peak = "-"
            note = "planned maximum (dry_run), not run"
            print(
                f"| {r['stage']} | ~{fmt_s(r['seconds']).strip()} | ~{n:,} | {x} | {peak} | {note} |"
            )
            continue
        peak = f"{r['peak'] / GiB:.2f} GiB" + (f" ({r['peak'] / gp:.1f}x)" if gp else "")
        note = ""
        if "value" in r:
            note = f"{r['value']:.4g}"
        if r["stage"] == "hvp1":
            note = f"{r['path']}; first call (builds graph) {r['first_call']:.1f} s"
        if "chunk" in r:
            note = (
                f"chunk {r['chunk']}: measured +{(r['peak'] - r['base']) / GiB:.2f} GiB, "
                f"estimate {r['estimate_bytes'] / GiB:.2f} GiB, budget {r['budget'] / GiB:.1f} GiB"
            )
        if r["stage"] == "rotated":
            note += f"; RandPerm build {r['build_rotation']:.1f} s"
        if r["stage"] in ("spectral", "l11"):
            note += f"; rel. width {r['rel_width']:.1e}"
        if "store" in r:
            note += f"; probe results in {r['store']}"
        wall = fmt_s(r["seconds"] if r["stage"] not in ("hvpk",) else r["seconds"] * n).strip()
        print(f"| {r['stage']} | {wall} | {n} | {x} | {peak} | {note} |")


if __name__ == "__main__":
    main()
