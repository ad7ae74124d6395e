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
from hessnorm.results import read_results
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


def _worker(rank, world, init_file, out_dir, full):
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
            "unchanged": all(
                torch.equal(a, p.to_local()) for a, p in zip(before, model.parameters())
            ),
        }
        if full:  # few HVPs (each is 4 FSDP gradients): wider intervals, same checks
            res["l11"] = l11_norm(op, n=8, seed=0, progress=False).to_dict()
            res["spectral"] = spectral_norm(op, seed=0, progress=False, max_iter=24).to_dict()
            res["trace"] = trace(op, n=6, seed=0, method="hutchinson", progress=False).to_dict()
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


def _spawn(world: int, tmp_path, full: bool = True):
    args = (world, str(tmp_path / "init"), str(tmp_path), full)
    mp.spawn(_worker, args=args, nprocs=world, join=True)
    return [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(world)]


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    """2 ranks: HVPs of the MLP and the tiny GPT (the default suite; the rest is slow)."""
    return _spawn(2, tmp_path_factory.mktemp("fsdp2q"), full=False)


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
        assert t <= 10 * e + 1e-13, (
            f"{what} probe {i}: true FD error {t:.3g} > 10 x estimate {e:.3g}"
        )
        assert e <= 10 * t + 1e-13, f"{what} probe {i}: estimate {e:.3g} > 10 x true error {t:.3g}"
        assert t <= 1e-6 * float((V[i] @ H).norm()), f"{what} probe {i}: FD error {t:.3g} too large"


def test_sharded_fd_hvp_equals_dense_to_its_error(quick, reference):
    two = quick
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


@pytest.mark.slow
def test_sharded_l11_covers_and_matches_the_exact_operator(two, reference):
    """The Cauchy probes are drawn by global coordinate: the same probes as one process."""
    est = two[0]["l11"]
    value = float(exact.l11_norm(reference["H"]))
    assert est["low"] <= value <= est["high"] and "fd_error" in est["details"]
    one_process = l11_norm(reference["op"], n=8, seed=0, progress=False)
    assert abs(est["value"] - one_process.value) <= 1e-7 * one_process.value


@pytest.mark.slow
def test_sharded_estimators_cover_exact_values(two, reference):
    H = reference["H"]
    truth = {
        "spectral": float(torch.linalg.eigvalsh(H).abs().max()),
        "l11": float(exact.l11_norm(H)),
        "trace": float(torch.diagonal(H).sum()),
    }
    for name, value in truth.items():
        est = two[0][name]
        assert est["low"] <= value <= est["high"], (
            f"{name}: {value} not in [{est['low']}, {est['high']}]"
        )
        assert "fd_error" in est["details"], f"{name}: the interval was not widened by the FD error"
    # spectral: FD agrees with the single-process exact-HVP estimate within both intervals
    ex = spectral_norm(reference["op"], seed=0, progress=False)
    assert (
        abs(two[0]["spectral"]["value"] - ex.value)
        <= ex.high - ex.low + two[0]["spectral"]["high"] - two[0]["spectral"]["low"]
    )


@pytest.mark.slow
def test_one_and_two_ranks_give_the_same_numbers(one, two):
    for name in ("spectral", "l11", "trace"):
        a, b = one[0][name], two[0][name]
        for key in ("value", "low", "high"):
            assert abs(a[key] - b[key]) <= 1e-9 * abs(a[key]), f"{name}.{key}: {a[key]} vs {b[key]}"
        same = {k: v for k, v in two[0][name].items() if k != "seconds"}
        assert same == {k: v for k, v in two[1][name].items() if k != "seconds"}, (
            f"{name}: ranks disagree"
        )


@pytest.mark.slow
def test_per_rank_memory_falls_like_one_over_n(one, two):
    full = one[0]["memory"]["state_bytes"]
    per_rank = [r["memory"]["state_bytes"] for r in two]
    assert sum(per_rank) == full
    assert max(per_rank) <= 0.6 * full


_NETDEF = """
import torch
from torch import nn

def model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 6), nn.Tanh(), nn.Linear(6, 3)).to(torch.float64)

def data():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(61, 5, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (61,), generator=g)
    return [(x[:30], y[:30]), (x[30:], y[30:])]
"""


@pytest.mark.slow
def test_torchrun_analyze_shard_fsdp_reads_real_checkpoints(tmp_path):
    """2 ranks, a .pt state_dict and a folder of two .safetensors shards, rank 0 writes."""
    import subprocess
    import sys
    from pathlib import Path

    from safetensors.torch import save_file

    from hessnorm.analyze import analyze

    (tmp_path / "netdef.py").write_text(_NETDEF)
    sys.path.insert(0, str(tmp_path))
    try:
        import netdef

        state = {k: v.contiguous() for k, v in netdef.model().state_dict().items()}
        torch.save(state, tmp_path / "w.pt")
        folder = tmp_path / "shards"
        folder.mkdir()
        keys = sorted(state)
        save_file({k: state[k] for k in keys[:2]}, str(folder / "model-00001-of-00002.safetensors"))
        save_file({k: state[k] for k in keys[2:]}, str(folder / "model-00002-of-00002.safetensors"))
        common = [
            "--estimators=spectral,l11",
            "--n-cauchy=10",
            "--model=netdef:model",
            "--data=netdef:data",
            "--quiet",
        ]
        ref = analyze(
            tmp_path / "w.pt",
            ["spectral", "l11"],
            n_cauchy=10,
            model="netdef:model",
            data="netdef:data",
            progress=False,
            log=False,
        )
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("netdef", None)
    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join([str(root), str(tmp_path), env.get("PYTHONPATH", "")])
    out = tmp_path / "rows.csv"
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]
    proc = subprocess.run(
        [
            *launch,
            "-m",
            "hessnorm",
            "analyze",
            str(tmp_path / "w.pt"),
            str(folder),
            *common,
            "--shard=fsdp",
            f"--out={out}",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=root,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("wrote ") == 1  # rank 0 alone writes
    rows = read_results(out)
    assert len(rows) == 4 and set(rows["estimator"]) == {"spectral", "l11"}
    for _, row in rows.iterrows():
        exact_row = ref[ref["estimator"] == row["estimator"]].iloc[0]
        assert row["d"] == exact_row["d"] == 57
        # same model from both files; the exact one-process estimate lies in the FD interval
        assert row["low"] <= exact_row["value"] <= row["high"], row["estimator"]
        details = row["details"]
        assert details["shard"]["ranks"] == 2 and details["shard"]["rank_state_bytes"] < 6 * 57 * 8
    for est in ("spectral", "l11"):
        vals = rows[rows["estimator"] == est]["value"].tolist()
        assert vals[0] == pytest.approx(vals[1], rel=1e-12), est  # .pt and safetensors agree
    l11_fd = rows[rows["estimator"] == "l11"]["value"].iloc[0]
    # same Cauchy probes by global coordinate: only the FD error separates the two
    assert l11_fd == pytest.approx(ref[ref["estimator"] == "l11"]["value"].iloc[0], rel=1e-7)
