"""One-shot GPU acceptance run: the figures hessnorm claims on a GPU, in under 5 minutes.

For nanoGPT's GPT-2 small (124M parameters, random init, random tokens: nothing is
downloaded) on one CUDA device it measures, printing each figure and writing them all
to one JSON file (atomically, after every stage, so a run cut short keeps what it got):

* ``hvp``: time and peak memory (``torch.cuda.max_memory_allocated``) of one gradient,
  one exact HVP (``HessianOperator``, single-vector path) and one finite-difference
  HVP (``mode="fd"``, four gradients), in float32 and under bf16 autocast, eager and
  with ``torch.compile`` (a variant that fails records its error instead of a number);
* ``agree``: the relative difference between the exact and the FD HVP of one random
  direction, with the FD error the operator estimated for it (float32, eager);
* ``estimators``: wall time of ``spectral_norm(tol=1e-2, max_iter=--lanczos-iter)`` and
  ``l11_norm(n=--n-cauchy)`` (default 50) at 124M;
* ``train``: a ``--steps`` (default 20) step trainer run of each optimizer on CUDA.

A time guard (``--budget-s``, default 270 s) skips the stages that would start after
it, recording them as skipped. ``--tiny`` runs the same stages on a 2-layer 64-wide GPT
(any device, seconds: the test suite runs it on the CPU so the script cannot rot);
``--dry-run`` prints the plan and writes it without computing anything.

Run:  python benchmarks/gpu.py --out gpu.json
      python benchmarks/gpu.py --tiny --device cpu --skip-compile --out /tmp/gpu.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import torch

STAGES = ("hvp", "agree", "estimators", "train")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="gpu.json", help="JSON file written after every stage")
    p.add_argument("--device", default="cuda", help="cuda (default) or cpu (with --tiny)")
    p.add_argument("--tiny", action="store_true", help="a 2-layer 64-wide GPT (a smoke run)")
    p.add_argument("--dry-run", action="store_true", help="print and write the plan only")
    p.add_argument("--stages", default=",".join(STAGES), help=f"comma list of {STAGES}")
    p.add_argument("--batch", type=int, default=4, help="sequences per batch")
    p.add_argument("--seq-len", type=int, default=512, help="tokens per sequence")
    p.add_argument("--n-cauchy", type=int, default=50, help="Cauchy probes for l11_norm")
    p.add_argument("--lanczos-iter", type=int, default=20, help="cap on Lanczos iterations")
    p.add_argument("--steps", type=int, default=20, help="trainer steps per optimizer")
    p.add_argument("--optimizers", default=None, help="comma list (default: all of them)")
    p.add_argument("--skip-compile", action="store_true", help="eager variants only")
    p.add_argument("--budget-s", type=float, default=270.0, help="start no stage after this")
    p.add_argument("--repeats", type=int, default=3, help="timed repeats (median reported)")
    args = p.parse_args(argv)
    stages = [s for s in args.stages.split(",") if s]
    bad = [s for s in stages if s not in STAGES]
    if bad:
        p.error(f"unknown stage(s) {bad}; choose from {', '.join(STAGES)}")
    args.stages = stages
    if args.device.startswith("cuda") and not args.dry_run and not torch.cuda.is_available():
        p.error(
            "--device cuda but no CUDA device is visible; use --tiny --device cpu for a smoke run"
        )
    for name in ("batch", "seq_len", "n_cauchy", "lanczos_iter", "steps", "repeats"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    return args


def _config(args):
    from hessnorm.train.gpt import TINY_GPT, GPTConfig

    if args.tiny:
        return TINY_GPT
    return GPTConfig(block_size=max(1024, args.seq_len))


def _device_name(device, dry_run: bool) -> str:
    if device.type == "cuda":
        if torch.cuda.is_available():
            return torch.cuda.get_device_name(device)
        return "cuda (not visible: plan only)" if dry_run else "cuda"
    return platform.processor() or "cpu"


def _write(path: Path, result: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(result, indent=2, default=str))
    os.replace(tmp, path)


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _measure(fn, device, repeats: int) -> dict:
    """Median seconds of ``fn`` after one warm-up call, and its peak memory (CUDA)."""
    fn()
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    out = {"seconds": statistics.median(times)}
    if device.type == "cuda":
        out["peak_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    return out


def _problem(args, device):
    from hessnorm.train.gpt import GPT

    cfg = _config(args)
    torch.manual_seed(0)
    model = GPT(cfg).to(device).eval()
    T = min(args.seq_len, cfg.block_size)
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, cfg.vocab_size, (args.batch, T), generator=g).to(device)
    y = torch.randint(0, cfg.vocab_size, (args.batch, T), generator=g).to(device)
    return model, (x, y)


def _variant(args, device, precision: str, compiled: bool) -> dict:
    from hessnorm.operator import HessianOperator
    from hessnorm.train.gpt import lm_loss

    model, batch = _problem(args, device)
    net = torch.compile(model) if compiled else model
    amp = (
        torch.autocast(device.type, dtype=torch.bfloat16)
        if precision == "bf16-autocast"
        else nullcontext()
    )
    out = {}

    def grad():
        net.zero_grad(set_to_none=True)
        with amp:
            loss = lm_loss(net(batch[0]), batch[1])
        loss.backward()

    out["grad"] = _try(lambda: _measure(grad, device, args.repeats))
    for mode in ("auto", "fd"):
        key = "exact_hvp" if mode == "auto" else "fd_hvp"

        def hvp(mode=mode):
            with amp:
                op = HessianOperator.from_module(net, lm_loss, batch, mode=mode)
                v = torch.randn(op.d, device=device, dtype=op.dtype)
                res = _measure(lambda: op.hvp(v), device, args.repeats)
            res["strategy"] = op.strategy
            return res

        out[key] = _try(hvp)
    return out


def _try(fn):
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001 - a failing variant is a result, not a crash
        return {"error": f"{type(exc).__name__}: {exc}"[:400]}


def stage_hvp(args, device) -> dict:
    res = {}
    for precision in ("fp32", "bf16-autocast"):
        for compiled in (False,) if args.skip_compile else (False, True):
            key = f"{precision}/{'compile' if compiled else 'eager'}"
            res[key] = _variant(args, device, precision, compiled)
            print(f"  {key}: {json.dumps(res[key])}", flush=True)
    return res


def stage_agree(args, device) -> dict:
    from hessnorm.operator import HessianOperator
    from hessnorm.train.gpt import lm_loss

    model, batch = _problem(args, device)
    exact = HessianOperator.from_module(model, lm_loss, batch)
    fd = HessianOperator.from_module(model, lm_loss, batch, mode="fd")
    v = torch.randn(exact.d, generator=torch.Generator().manual_seed(3)).to(device)
    a, b = exact.hvp(v), fd.hvp(v)
    rel = float((a - b).norm() / a.norm())
    _, est, hv = fd.hvp_error.records[-1]
    return {"d": exact.d, "relative_difference": rel, "fd_error_estimate_relative": est / hv}


def stage_estimators(args, device) -> dict:
    from hessnorm import l11_norm, spectral_norm
    from hessnorm.operator import HessianOperator
    from hessnorm.train.gpt import lm_loss

    model, batch = _problem(args, device)
    op = HessianOperator.from_module(model, lm_loss, batch)
    res = {"d": op.d}
    t0 = time.perf_counter()
    sp = spectral_norm(op, tol=1e-2, max_iter=args.lanczos_iter, progress=False)
    res["spectral"] = {"seconds": time.perf_counter() - t0, **_brief(sp)}
    t0 = time.perf_counter()
    l11 = l11_norm(op, n=args.n_cauchy, progress=False)
    res["l11"] = {"seconds": time.perf_counter() - t0, **_brief(l11)}
    return res


def _brief(est) -> dict:
    return {"value": est.value, "low": est.low, "high": est.high, "n_hvp": est.n_hvp}


def stage_train(args, device) -> dict:
    from hessnorm.optim import OPTIMIZERS
    from hessnorm.train.loop import TrainConfig, train

    names = args.optimizers.split(",") if args.optimizers else list(OPTIMIZERS)
    options = {} if not args.tiny else {"n_layer": 1, "n_embd": 32, "n_head": 2, "block_size": 32}
    res = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:

            def run(name=name):
                cfg = TrainConfig(
                    task="gpt",
                    optimizer=name,
                    steps=args.steps,
                    out=str(Path(tmp) / name),
                    device=device.type,
                    progress=False,
                    task_options=options,
                )
                summary = train(cfg)
                return {"seconds": summary["seconds"], "train_loss": summary["train_loss"]}

            res[name] = _try(run)
            print(f"  train {name}: {json.dumps(res[name])}", flush=True)
    return res


def main(argv=None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    cfg = _config(args)
    out = Path(args.out)
    result = {
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "device": _device_name(device, args.dry_run),
        "torch": torch.__version__,
        "python": sys.version.split()[0],
        "model": {"n_layer": cfg.n_layer, "n_embd": cfg.n_embd, "vocab_size": cfg.vocab_size},
        "batch": [args.batch, min(args.seq_len, cfg.block_size)],
        "stages": args.stages,
        "results": {},
    }
    if args.dry_run:
        print(json.dumps(result, indent=2))
        _write(out, result)
        return 0
    t_start = time.perf_counter()
    fns = {
        "hvp": stage_hvp,
        "agree": stage_agree,
        "estimators": stage_estimators,
        "train": stage_train,
    }
    for stage in args.stages:
        if time.perf_counter() - t_start > args.budget_s:
            result["results"][stage] = {"skipped": f"past --budget-s {args.budget_s:g}"}
            continue
        print(f"[{time.perf_counter() - t_start:6.1f}s] {stage}", flush=True)
        t0 = time.perf_counter()
        result["results"][stage] = _try(lambda stage=stage: fns[stage](args, device))
        result["results"][stage + "_seconds"] = time.perf_counter() - t0
        _write(out, result)
    result["total_seconds"] = time.perf_counter() - t_start
    _write(out, result)
    print(json.dumps(result["results"], indent=2, default=str))
    print(f"wrote {out} ({result['total_seconds']:.0f} s)")
    ok = all(not (isinstance(v, dict) and "error" in v) for v in result["results"].values())
    return 0 if ok and math.isfinite(result["total_seconds"]) else 1


if __name__ == "__main__":
    sys.exit(main())
