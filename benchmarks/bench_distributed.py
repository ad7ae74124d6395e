"""Data-parallel throughput: l11_norm(n=50) of the tiny GPT on 1 and 2 CPU processes.

Each process runs one thread (``torch.set_num_threads(1)``) and holds a contiguous shard
of the gpt task's evaluation windows (64 by default); the processes form a gloo group,
so every HVP is a local HVP on the shard plus an all-reduce of k x d floats
(``hessnorm.distributed``). The table gives the wall time of ``l11_norm(op, n=50)`` on
rank 0 (after one warm-up call that also settles the HVP path), the speed-up over one
process, and the estimate, which must be identical for every N (same seed, same probes).

    python benchmarks/bench_distributed.py [--procs 1 2] [--eval-examples 64] [--repeats 2]

The CPU is shared: the script prints ``os.getloadavg()`` before and after; a load above
the core count makes the speed-up meaningless.
"""

from __future__ import annotations

import argparse
import datetime
import os
import tempfile
import time

import torch
import torch.multiprocessing as mp


def _worker(rank, world, init_file, out_file, eval_examples, n, repeats):
    torch.set_num_threads(1)
    import torch.distributed as dist

    dist.init_process_group(
        "gloo",
        init_method=f"file://{init_file}",
        rank=rank,
        world_size=world,
        timeout=datetime.timedelta(seconds=600),
    )
    try:
        from hessnorm import l11_norm
        from hessnorm.distributed import shard_batches
        from hessnorm.operator import HessianOperator
        from hessnorm.train.tasks import build_task

        task = build_task("gpt", {}, seed=0)
        task.model.eval()
        batches = shard_batches(task.eval_batches(eval_examples), rank, world)
        op = HessianOperator.from_module(task.model, task.loss_fn, batches)
        l11_norm(op, n=n, seed=0, progress=False)  # warm-up: HVP path, allocator
        times = []
        for _ in range(repeats):
            dist.barrier()
            t0 = time.perf_counter()
            est = l11_norm(op, n=n, seed=0, progress=False)
            dist.barrier()
            times.append(time.perf_counter() - t0)
        if rank == 0:
            torch.save({"seconds": min(times), "value": est.value, "d": op.d}, out_file)
    finally:
        dist.destroy_process_group()


def measure(world: int, eval_examples: int, n: int, repeats: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "out.pt")
        mp.spawn(
            _worker,
            args=(world, os.path.join(tmp, "init"), out, eval_examples, n, repeats),
            nprocs=world,
            join=True,
        )
        return torch.load(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--procs", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--eval-examples", type=int, default=64)
    ap.add_argument("--n", type=int, default=50, help="Cauchy probes")
    ap.add_argument("--repeats", type=int, default=2, help="timed calls (the minimum is kept)")
    args = ap.parse_args()
    print(f"load average before: {os.getloadavg()}, cores: {os.cpu_count()}")
    rows = []
    for world in args.procs:
        rows.append((world, measure(world, args.eval_examples, args.n, args.repeats)))
    print(f"load average after: {os.getloadavg()}")
    base = rows[0][1]["seconds"]
    print(
        f"\ntiny GPT (gpt task, d = {rows[0][1]['d']}), {args.eval_examples} windows, "
        f"l11_norm(n={args.n}), one thread per process, gloo\n"
    )
    print("| processes | seconds | HVP/s | speed-up | estimate |")
    print("|---|---|---|---|---|")
    for world, r in rows:
        print(
            f"| {world} | {r['seconds']:.2f} | {args.n / r['seconds']:.1f} | "
            f"{base / r['seconds']:.2f}x | {r['value']:.6g} |"
        )


if __name__ == "__main__":
    main()
