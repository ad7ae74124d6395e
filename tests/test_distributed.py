"""Data-parallel operators on torch.distributed: 2 gloo ranks on the CPU.

The 2-rank operator over uneven shards (37 + 24 examples) must equal the single-process
operator on their union (dense Hessian, HVPs, loss, gradient, spectral_norm, l11_norm
with the same seed) and every rank must hold the same bits; the error cases (an empty
shard, different models, a failing rank) must stop every rank with a message.
"""

from __future__ import annotations

import datetime
import os

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from hessnorm import l11_norm, spectral_norm
from hessnorm.distributed import shard_batches
from hessnorm.operator import HessianOperator

F64 = torch.float64
SHARDS = (37, 24)

pytestmark = pytest.mark.skipif(
    not torch.distributed.is_available(), reason="torch.distributed is not available"
)


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 6), nn.Tanh(), nn.Linear(6, 3)).to(F64)


def _data():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(sum(SHARDS), 5, generator=g, dtype=F64)
    y = torch.randint(0, 3, (sum(SHARDS),), generator=g)
    return x, y


def _batches(x, y, size):
    return [(x[i : i + size], y[i : i + size]) for i in range(0, len(x), size)]


def _probes(d):
    return torch.randn(3, d, generator=torch.Generator().manual_seed(2), dtype=F64)


def _init(rank, world, init_file):
    torch.set_num_threads(1)
    torch.distributed.init_process_group(
        "gloo",
        init_method=f"file://{init_file}",
        rank=rank,
        world_size=world,
        timeout=datetime.timedelta(seconds=60),
    )


def _close():
    # wait for the peer before tearing the group down: a rank that destroys its group
    # while the other still talks to it can abort inside gloo (seen under heavy load)
    try:
        torch.distributed.barrier()
    finally:
        torch.distributed.destroy_process_group()


def _agree(rank, world, init_file, out_dir):
    _init(rank, world, init_file)
    try:
        x, y = _data()
        lo = 0 if rank == 0 else SHARDS[0]
        hi = lo + SHARDS[rank]
        # uneven shards cut into uneven batches: 16+16+5 on rank 0, 10+10+4 on rank 1
        shard = _batches(x[lo:hi], y[lo:hi], 16 if rank == 0 else 10)
        op = HessianOperator.from_module(_model(), nn.functional.cross_entropy, shard)
        V = _probes(op.d)
        res = {
            "loss": op.loss(),
            "grad": op.gradient(),
            "dense": op.dense(),
            "hvp_block": op.hvp(V),
            "hvp_single": op.hvp(V[0]),
            "spectral": spectral_norm(op, seed=0, progress=False).value,
            "l11": l11_norm(op, n=20, seed=0, progress=False).value,
            "loss_at": op.at(op.point * 0.5).loss(),
            "description": op.description,
        }
        torch.save(res, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        _close()


def _errors(rank, world, init_file, out_dir):
    _init(rank, world, init_file)
    out = {}
    try:
        x, y = _data()
        loss = nn.functional.cross_entropy

        def attempt(name, fn):
            try:
                fn()
                out[name] = None
            except Exception as exc:  # noqa: BLE001 - recorded for the test
                out[name] = (type(exc).__name__, str(exc))

        # an empty shard on rank 1
        data = [(x[:8], y[:8])] if rank == 0 else []
        attempt("empty", lambda: HessianOperator.from_module(_model(), loss, data))
        # different models: rank 1 perturbs one weight
        model = _model()
        if rank == 1:
            with torch.no_grad():
                model[0].weight[0, 0] += 1e-12
        attempt("models", lambda: HessianOperator.from_module(model, loss, (x[:8], y[:8])))

        # a rank whose loss raises inside an HVP (rank 1, from its second call on)
        calls = {"n": 0}

        def flaky(out_, t):
            calls["n"] += 1
            if rank == 1 and calls["n"] > 1:
                raise RuntimeError("simulated failure on this rank")
            return loss(out_, t)

        def hvp_fails():
            op = HessianOperator.from_module(_model(), flaky, (x[:8], y[:8]), mode="rev")
            op.hvp(torch.ones(op.d, dtype=F64))

        attempt("failing", hvp_fails)
        # the group still works afterwards: no rank is left inside a collective
        op = HessianOperator.from_module(_model(), loss, (x[:8], y[:8]))
        out["after"] = op.loss()
        torch.save(out, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        _close()


def _spawn(fn, tmp_path):
    init_file = tmp_path / "init"
    mp.spawn(fn, args=(2, str(init_file), str(tmp_path)), nprocs=2, join=True)
    return [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2)]


@pytest.fixture(scope="module")
def agree(tmp_path_factory):
    return _spawn(_agree, tmp_path_factory.mktemp("agree"))


@pytest.fixture(scope="module")
def errors(tmp_path_factory):
    return _spawn(_errors, tmp_path_factory.mktemp("errors"))


def test_two_ranks_agree_bit_for_bit(agree):
    r0, r1 = agree
    for key in ("grad", "dense", "hvp_block", "hvp_single"):
        assert torch.equal(r0[key], r1[key]), key
    for key in ("loss", "spectral", "l11", "loss_at"):
        assert r0[key] == r1[key], key
    assert "61 examples over 2 ranks (rank 0: 37)" in r0["description"]
    assert "(rank 1: 24)" in r1["description"]


def test_two_uneven_shards_equal_their_union(agree):
    r0, _ = agree
    x, y = _data()
    op = HessianOperator.from_module(_model(), nn.functional.cross_entropy, _batches(x, y, 16))
    H = op.dense()
    V = _probes(op.d)
    # the distributed dense Hessian (jacrev path) and HVPs (fwd / graph paths) against
    # the single-process dense Hessian of the union; float64 rounding ~1e-16 * |H|
    assert torch.allclose(r0["dense"], H, rtol=0, atol=1e-12)
    assert torch.allclose(r0["hvp_block"], V @ H, rtol=0, atol=1e-10)
    assert torch.allclose(r0["hvp_single"], V[0] @ H, rtol=0, atol=1e-10)
    assert torch.allclose(r0["grad"], op.gradient(), rtol=0, atol=1e-13)
    assert r0["loss"] == pytest.approx(op.loss(), rel=1e-9)
    assert r0["loss_at"] == pytest.approx(op.at(op.point * 0.5).loss(), rel=1e-9)
    # same seed, same probes: the estimators follow the same path as one process
    assert r0["spectral"] == pytest.approx(
        spectral_norm(op, seed=0, progress=False).value, rel=1e-9
    )
    assert r0["l11"] == pytest.approx(l11_norm(op, n=20, seed=0, progress=False).value, rel=1e-9)


def test_empty_shard_stops_every_rank(errors):
    for r in errors:
        kind, msg = r["empty"]
        assert kind == "EmptyDataError"
        assert "rank(s) [1] of 2 hold no evaluation example (examples per rank: [8, 0])" in msg


def test_different_models_stop_every_rank(errors):
    for r in errors:
        kind, msg = r["models"]
        assert kind == "DistributedError"
        assert "the ranks hold different models" in msg and "ranks [0]" in msg


def test_failing_rank_stops_every_rank(errors):
    r0, r1 = errors
    assert r1["failing"] == ("RuntimeError", "simulated failure on this rank")
    kind, msg = r0["failing"]
    assert kind == "DistributedError"
    assert "a Hessian-vector product failed on rank(s) [1] of 2" in msg
    assert "rank 1: RuntimeError: simulated failure on this rank" in msg
    assert r0["after"] == r1["after"]


def test_shard_batches_is_contiguous_and_complete():
    x = torch.arange(11)
    batches = [(x[i : i + 4], x[i : i + 4]) for i in range(0, 11, 4)]
    for world in (1, 2, 3, 5):
        shards = [shard_batches(batches, r, world) for r in range(world)]
        flat = [int(v) for s in shards for b, _ in s for v in b]
        assert flat == list(range(11))
        sizes = [sum(len(b) for b, _ in s) for s in shards]
        assert max(sizes) - min(sizes) <= 1
    whole = [shard_batches(batches, r, 2, whole_batches=True) for r in range(2)]
    assert [len(s) for s in whole] == [1, 2] and whole[1][0][0] is batches[1][0]


def _dies(rank, world, init_file, out_dir):
    _init(rank, world, init_file)
    x, y = _data()
    op = HessianOperator.from_module(_model(), nn.functional.cross_entropy, (x[:8], y[:8]))
    if rank == 1:
        os._exit(3)  # a rank that dies without a word (killed, out of memory, ...)
    try:
        op.hvp(torch.ones(op.d, dtype=F64))
        msg = None
    except Exception as exc:  # noqa: BLE001 - recorded for the test
        msg = (type(exc).__name__, str(exc))
    torch.save(msg, os.path.join(out_dir, "rank0.pt"))


def test_dead_rank_stops_the_others(tmp_path):
    ctx = mp.start_processes(
        _dies, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=False
    )
    for p in ctx.processes:
        p.join(timeout=90)
    assert not any(p.is_alive() for p in ctx.processes), "a rank hangs"
    assert ctx.processes[1].exitcode == 3
    kind, msg = torch.load(tmp_path / "rank0.pt", weights_only=False)
    assert kind == "DistributedError"
    assert "rank 0 lost contact with the other ranks" in msg
