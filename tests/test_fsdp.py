"""FSDP2-sharded Hessian operators: 1 and 2 gloo ranks on the CPU, float64.

Each spawned world shards a real MLP (uneven evaluation shards, 37 + 24 examples) and
the tiny GPT with ``fully_shard`` and builds the operator through the ordinary
``HessianOperator.from_module``. Checked against the single-process exact operator on
the union of the shards: the sharded FD HVPs equal the dense Hessian's products to
their logged error estimate (which is within 10x of the true error); spectral_norm,
l11_norm and trace from 2 ranks cover the exact values; 1 and 2 ranks give the same
numbers for the same seed to 1e-9 relative; the model is left bit-for-bit unchanged.
"""

from __future__ import annotations

import datetime
import os

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from hessnorm import exact, l11_norm, spectral_norm, trace
from hessnorm.operator import HessianOperator
from hessnorm.testing import TinyTransformer, char_tokens

F64 = torch.float64
SHARDS = (37, 24)

pytestmark = pytest.mark.skipif(
    not torch.distributed.is_available(), reason="torch.distributed is not available"
)


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 6), nn.Tanh(), nn.Linear(6, 3)).to(F64)


def _gpt() -> nn.Module:
    torch.manual_seed(0)
    return TinyTransformer(vocab=16, dim=8, heads=2, layers=1, block=6).to(F64).eval()


def _lm_loss(logits, y):
    return nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))


def _data():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(sum(SHARDS), 5, generator=g, dtype=F64)
    y = torch.randint(0, 3, (sum(SHARDS),), generator=g)
    return x, y


def _shard(rank: int, world: int):
    """Rank r's examples: the 37 + 24 split on 2 ranks (uneven batches), all on 1."""
    x, y = _data()
    if world == 1:
        return [(x[:16], y[:16]), (x[16:], y[16:])]
    lo = 0 if rank == 0 else SHARDS[0]
    hi = lo + SHARDS[rank]
    size = 16 if rank == 0 else 10
    xs, ys = x[lo:hi], y[lo:hi]
    return [(xs[i : i + size], ys[i : i + size]) for i in range(0, len(xs), size)]


def _probes(d: int, k: int = 3):
    return torch.randn(k, d, generator=torch.Generator().manual_seed(2), dtype=F64)


def _shard_model(model: nn.Module, parts) -> nn.Module:
    from torch.distributed.fsdp import fully_shard

    for m in parts:
        fully_shard(m)
    fully_shard(model)
    return model


def _worker(rank, world, init_file, out_dir):
    torch.set_num_threads(1)
    torch.distributed.init_process_group(
        "gloo",
        init_method=f"file://{init_file}",
        rank=rank,
        world_size=world,
        timeout=datetime.timedelta(seconds=120),
    )
    try:
        model = _model()
        model = _shard_model(model, [model[0], model[2]])
        before = [p.to_local().clone() for p in model.parameters()]
        op = HessianOperator.from_module(model, nn.functional.cross_entropy, _shard(rank, world))
        V = _probes(op.d)
        hv = op.gather(op.hvp(op.scatter(V)))
        errs = [e for _, e, _ in op.hvp_error.records]
        res = {
            "type": type(op).__name__,
            "d": op.d,
            "local_d": op.local_d,
            "memory": op.memory(),
            "hvp": hv,
            "err_est": errs,
            "loss": op.loss(),
            "grad": op.gather(op.gradient()),
            "spectral": spectral_norm(op, seed=0, progress=False).to_dict(),
            "l11": l11_norm(op, n=16, seed=0, progress=False).to_dict(),
            "trace": trace(op, n=8, seed=0, method="hutchinson", progress=False).to_dict(),
            "unchanged": all(torch.equal(a, p.to_local()) for a, p in zip(before, model.parameters())),
        }
        gpt = _gpt()
        gpt = _shard_model(gpt, list(gpt.blocks))
        x, y = char_tokens(8, block=6, vocab=16)
        half = 5 if rank == 0 else 3
        lo = 0 if rank == 0 or world == 1 else 5
        hi = 8 if world == 1 else lo + half
        gop = HessianOperator.from_module(gpt, _lm_loss, (x[lo:hi], y[lo:hi]))
        W = _probes(gop.d, 2)
        res["gpt_hvp"] = gop.gather(gop.hvp(gop.scatter(W)))
        res["gpt_err_est"] = [e for _, e, _ in gop.hvp_error.records]
        torch.save(res, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


def _spawn(world: int, tmp_path):
    mp.spawn(_worker, args=(world, str(tmp_path / "init"), str(tmp_path)), nprocs=world, join=True)
    return [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(world)]


@pytest.fixture(scope="module")
def two(tmp_path_factory):
    return _spawn(2, tmp_path_factory.mktemp("fsdp2"))


@pytest.fixture(scope="module")
def one(tmp_path_factory):
    return _spawn(1, tmp_path_factory.mktemp("fsdp1"))


@pytest.fixture(scope="module")
def reference():
    x, y = _data()
    op = HessianOperator.from_module(_model(), nn.functional.cross_entropy, (x, y))
    H = op.dense()
    xg, yg = char_tokens(8, block=6, vocab=16)
    gop = HessianOperator.from_module(_gpt(), _lm_loss, (xg, yg))
    return {"op": op, "H": H, "gop": gop, "gH": gop.dense()}


def _check_hvp(hv, H, V, est, what):
    true = (V @ H.T - hv).norm(dim=1)
    for i, (t, e) in enumerate(zip(true.tolist(), est)):
        assert t <= 10 * e + 1e-13, f"{what} probe {i}: true FD error {t:.3g} > 10 x estimate {e:.3g}"
        assert e <= 10 * t + 1e-13, f"{what} probe {i}: estimate {e:.3g} > 10 x true error {t:.3g}"
        assert t <= 1e-6 * float((V[i] @ H).norm()), f"{what} probe {i}: FD error {t:.3g} too large"


def test_sharded_fd_hvp_equals_dense_to_its_error(two, reference):
    for r in two:
        assert r["type"] == "ShardedOperator" and r["d"] == reference["op"].d
        assert r["unchanged"], "the sharded model's parameters were not restored"
        V = _probes(r["d"])
        _check_hvp(r["hvp"], reference["H"], V, r["err_est"][:3], f"MLP rank {two.index(r)}")
        W = _probes(reference["gop"].d, 2)
        _check_hvp(r["gpt_hvp"], reference["gH"], W, r["gpt_err_est"], "tiny GPT")
    assert abs(two[0]["loss"] - reference["op"].loss()) < 1e-12
    torch.testing.assert_close(two[0]["grad"], reference["op"].gradient(), rtol=1e-10, atol=1e-12)
    assert two[0]["local_d"] + two[1]["local_d"] == two[0]["d"]


def test_sharded_estimators_cover_exact_values(two, reference):
    H = reference["H"]
    truth = {
        "spectral": float(torch.linalg.eigvalsh(H).abs().max()),
        "l11": float(exact.l11_norm(H)),
        "trace": float(torch.diagonal(H).sum()),
    }
    for name, value in truth.items():
        est = two[0][name]
        assert est["low"] <= value <= est["high"], f"{name}: {value} not in [{est['low']}, {est['high']}]"
        assert "fd_error" in est["details"], f"{name}: the interval was not widened by the FD error"
    # spectral: FD agrees with the single-process exact-HVP estimate within both intervals
    ex = spectral_norm(reference["op"], seed=0, progress=False)
    assert abs(two[0]["spectral"]["value"] - ex.value) <= ex.high - ex.low + two[0]["spectral"]["high"] - two[0]["spectral"]["low"]


def test_one_and_two_ranks_give_the_same_numbers(one, two):
    for name in ("spectral", "l11", "trace"):
        a, b = one[0][name], two[0][name]
        for key in ("value", "low", "high"):
            assert abs(a[key] - b[key]) <= 1e-9 * abs(a[key]), f"{name}.{key}: {a[key]} vs {b[key]}"
        same = {k: v for k, v in two[0][name].items() if k != "seconds"}
        assert same == {k: v for k, v in two[1][name].items() if k != "seconds"}, f"{name}: ranks disagree"


def test_per_rank_memory_falls_like_one_over_n(one, two):
    full = one[0]["memory"]["state_bytes"]
    per_rank = [r["memory"]["state_bytes"] for r in two]
    assert sum(per_rank) == full
    assert max(per_rank) <= 0.6 * full
