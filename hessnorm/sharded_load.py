"""``analyze --shard fsdp``: each rank loads only its slice of a checkpoint, then analyses.

The model is built on the ``meta`` device (no memory), sharded with FSDP2's
``fully_shard`` (every child of an ``nn.ModuleList`` — the transformer blocks — then
the root), materialised with ``to_empty`` (each rank allocates its own shards only),
and each parameter's local rows are read straight from the file:

* ``.safetensors`` files, or a folder of them (sharded safetensors, with or without a
  ``*.safetensors.index.json``): ``safe_open(...).get_slice(name)[lo:hi]`` reads only
  those rows;
* ``.pt``/``.pth`` (a state_dict, or a nanoGPT ``ckpt.pt``): ``torch.load(mmap=True,
  weights_only=True)`` maps the file, and copying rows ``[lo:hi]`` reads only their
  pages.

Buffers (small) are read whole. No rank ever holds the whole model. The evaluation
set is built as by :func:`hessnorm.checkpoint.load` and split over the ranks
(:func:`hessnorm.distributed.shard_batches`); the estimators run on the
:class:`~hessnorm.sharded.ShardedOperator`, and only rank 0 writes the rows, which
also carry the per-rank memory of the model state (``rank_state_bytes``).

Supported: state_dicts with ``model=``/``data=`` factories (``--model``/``--data``),
and nanoGPT checkpoints. Hessnorm run checkpoints and Hugging Face folders are not
yet loaded this way (a clear error says so).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hessnorm.errors import CheckpointError, ConfigError

__all__ = ["TensorSource", "load_sharded", "analyze_sharded", "analyze_sharded_args"]


class TensorSource:
    """Named tensors of a checkpoint, readable by row range without loading the rest.

    Example:
        >>> import tempfile, pathlib
        >>> from safetensors.torch import save_file
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "w.safetensors"
        >>> save_file({"w": torch.arange(6.0).reshape(3, 2)}, str(p))
        >>> src = TensorSource.open(p)
        >>> src.rows("w", 1, 3).tolist(), src.shape("w")
        ([[2.0, 3.0], [4.0, 5.0]], (3, 2))
    """

    def __init__(self, kind: str, handles: dict[str, Any], state: dict | None = None) -> None:
        self.kind = kind
        self._handles = handles  # name -> safe_open handle (safetensors)
        self._state = state  # name -> mmap'd tensor (torch files)

    @classmethod
    def open(cls, path: str | Path) -> TensorSource:
        path = Path(path)
        files = sorted(path.glob("*.safetensors")) if path.is_dir() else [path]
        if path.is_dir() and not files:
            raise CheckpointError(
                f"{path} holds no .safetensors file; --shard fsdp reads safetensors files, "
                "folders of them, or .pt state_dicts"
            )
        if files[0].suffix == ".safetensors":
            from safetensors import safe_open

            handles = {}
            for f in files:
                h = safe_open(str(f), framework="pt")
                for k in h.keys():
                    handles[k] = h
            return cls("safetensors", handles)
        if not path.is_file():
            raise CheckpointError(f"checkpoint {path} does not exist")
        try:
            state = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
        except Exception as exc:
            raise CheckpointError(
                f"{path} cannot be memory-mapped as a weights-only torch file ({exc}); "
                "re-save it with torch.save(state_dict) (new zipfile format)"
            ) from exc
        if not isinstance(state, dict):
            raise CheckpointError(f"{path} holds a {type(state).__name__}, not a state_dict")
        return cls("torch", {}, state)

    def raw(self) -> dict | None:
        """The mapped top-level object of a torch file (None for safetensors)."""
        return self._state

    def keys(self) -> list[str]:
        return list(self._handles) if self._state is None else list(self._state)

    def shape(self, name: str) -> tuple[int, ...]:
        if self._state is not None:
            return tuple(self._state[name].shape)
        return tuple(self._handles[name].get_slice(name).get_shape())

    def rows(self, name: str, lo: int, hi: int) -> torch.Tensor:
        """Rows [lo, hi) of tensor ``name`` (the whole tensor for a 0-d one)."""
        if self._state is not None:
            t = self._state[name]
            return t.clone() if t.dim() == 0 else t[lo:hi].clone()
        sl = self._handles[name].get_slice(name)
        if len(sl.get_shape()) == 0:
            return self._handles[name].get_tensor(name)
        return sl[lo:hi]

    def full(self, name: str) -> torch.Tensor:
        shape = self.shape(name)
        return self.rows(name, 0, shape[0] if shape else 0)

    def with_state(self, state: dict) -> TensorSource:
        """The same file seen through a sub-dict (nanoGPT's ``ckpt["model"]``)."""
        return TensorSource("torch", {}, state)


def _shard_policy(net: nn.Module) -> None:
    from torch.distributed.fsdp import fully_shard

    for m in net.modules():
        if isinstance(m, nn.ModuleList):
            for child in m:
                if any(True for _ in child.parameters()):
                    fully_shard(child)
    fully_shard(net)


def _fill(net: nn.Module, source: TensorSource, rename: Callable[[str], str]) -> None:
    """Copy each parameter's local rows and every buffer from ``source`` into ``net``."""
    from torch.distributed.tensor._utils import compute_local_shape_and_global_offset

    keys = set(source.keys())
    with torch.no_grad():
        for name, p in net.named_parameters():
            key = rename(name)
            if key not in keys:
                raise CheckpointError(
                    f"the checkpoint has no tensor {key!r} for parameter {name!r} of the model "
                    f"(it holds {sorted(keys)[:8]} ...); check --model against the checkpoint"
                )
            if source.shape(key) != tuple(p.shape):
                raise CheckpointError(
                    f"{key!r} has shape {source.shape(key)} in the checkpoint but "
                    f"{tuple(p.shape)} in the model; check --model against the checkpoint"
                )
            local = p.to_local()
            if local.numel() == 0:
                continue
            shape, off = compute_local_shape_and_global_offset(p.shape, p.device_mesh, p.placements)
            lo = off[0] if p.dim() else 0
            local.copy_(source.rows(key, lo, lo + shape[0] if p.dim() else 0).view(local.shape))
        for name, b in net.named_buffers():
            key = rename(name)
            if key not in keys:
                raise CheckpointError(
                    f"the checkpoint has no tensor {key!r} for buffer {name!r}; --shard fsdp "
                    "needs every buffer in the checkpoint (the model is built on the meta device)"
                )
            b.copy_(source.full(key))


def _dtype_of(source: TensorSource, requested) -> torch.dtype:
    if requested is not None:
        return requested
    for k in source.keys():
        t = source.rows(k, 0, 1)
        if t.is_floating_point():
            return torch.float32 if t.dtype in (torch.float16, torch.bfloat16) else t.dtype
    return torch.float32


def load_sharded(
    path: str | Path,
    *,
    model: str | Callable[[], nn.Module] | None = None,
    data: str | Callable[[], Any] | None = None,
    loss: str | Callable | None = None,
    data_dir: str | None = None,
    eval_examples: int | None = None,
    seed: int = 0,
    dtype: torch.dtype | None = None,
    data_seed: int | None = None,
) -> tuple[nn.Module, list, Callable, dict]:
    """This rank's ``(sharded model, evaluation shard, loss_fn, meta)`` of a checkpoint.

    Needs an initialised process group (``torchrun``). See the module docstring for the
    formats. No HVP; reads about 1/N of the parameters per rank.

    Example:
        Without a process group it says how to launch it:

        >>> load_sharded("ckpt.pt")
        Traceback (most recent call last):
        ...
        hessnorm.errors.ConfigError: --shard fsdp runs under torchrun: torchrun --nproc-per-node N -m hessnorm analyze CKPT --shard fsdp ...
    """
    import torch.nn.functional as F

    from hessnorm import distributed
    from hessnorm.checkpoint import is_hf_folder, resolve_callable

    if not distributed.is_distributed():
        raise ConfigError(
            "--shard fsdp runs under torchrun: torchrun --nproc-per-node N -m hessnorm "
            "analyze CKPT --shard fsdp ..."
        )
    path = Path(path)
    if path.is_dir() and is_hf_folder(path):
        raise ConfigError(
            f"{path} is a Hugging Face folder; --shard fsdp does not build HF models yet. Pass "
            "its .safetensors file(s) with --model module:factory and --data module:function"
        )
    source = TensorSource.open(path)
    raw = source.raw()
    rename: Callable[[str], str] = lambda n: n  # noqa: E731
    if raw is not None and "model_args" in raw and "model" in raw:  # nanoGPT ckpt.pt
        from hessnorm.checkpoint import nanogpt_eval_windows, nanogpt_tokens
        from hessnorm.train.gpt import GPT, GPTConfig, lm_loss

        args = dict(raw["model_args"])
        known = set(GPTConfig.__dataclass_fields__)
        config = GPTConfig(**{k: v for k, v in args.items() if k in known})
        state = raw["model"]
        prefix = "_orig_mod." if any(k.startswith("_orig_mod.") for k in state) else ""
        source = source.with_state(state)
        rename = lambda n: prefix + n  # noqa: E731

        def factory():
            return GPT(config)

        n = int(eval_examples or 64)
        tokens, _, _ = nanogpt_tokens(data_dir, data)
        x, y, _ = nanogpt_eval_windows(tokens, n, config.block_size, data_seed=data_seed)
        batches = [(x[i : i + 16], y[i : i + 16]) for i in range(0, n, 16)]
        loss_fn = lm_loss
        meta = {"kind": "nanogpt", "task": "gpt", "step": int(raw.get("iter_num", 0))}
    else:
        if raw is not None and any(k in raw for k in ("config", "run", "optimizer_state")):
            raise ConfigError(
                f"{path} looks like a hessnorm run checkpoint; --shard fsdp loads state_dicts "
                "(with --model/--data) and nanoGPT checkpoints only"
            )
        if raw is not None and "state_dict" in raw and isinstance(raw["state_dict"], dict):
            source = source.with_state(raw["state_dict"])
        if model is None or data is None:
            raise ConfigError(
                "a state_dict does not say which model it belongs to: pass --model "
                "module:factory and --data module:function"
            )
        factory = resolve_callable(model, "model")
        batches = list(resolve_callable(data, "data")())
        loss_fn = resolve_callable(loss, "loss") if loss is not None else F.cross_entropy
        meta = {"kind": "state_dict", "task": "user", "step": None}
    work = _dtype_of(source, dtype)
    with torch.device("meta"):
        net = factory()
    if not isinstance(net, nn.Module):
        raise ConfigError(f"the model factory returned {type(net).__name__}, not an nn.Module")
    net = net.to(work)
    _shard_policy(net)
    net.to_empty(device="cpu")
    _fill(net, source, rename)
    net.eval()
    mine = distributed.shard_batches(batches, distributed.rank(), distributed.world_size())
    cast = [
        (x.to(work) if x.is_floating_point() else x, y.to(work) if y.is_floating_point() else y)
        for x, y in mine
    ]
    meta.update(checkpoint=str(path), optimizer="unknown", rotation=None, notes=[])
    return net, cast, loss_fn, meta


def analyze_sharded(
    checkpoints: Sequence[str | Path],
    estimators: Sequence[str],
    *,
    run_estimators: Callable[..., list] | None = None,
    n_cauchy: int = 50,
    seed: int = 0,
    tol: float = 1e-4,
    progress: bool = True,
    **load_options: Any,
):
    """Rows of :func:`hessnorm.analyze.analyze` for FSDP-sharded checkpoints (every rank).

    Each checkpoint: :func:`load_sharded`, a :class:`~hessnorm.sharded.ShardedOperator`,
    then the named estimators through ``run_estimators`` (the CLI passes
    :func:`hessnorm.analyze.analyze_operator`; this module does not import analyze) (spectral, l11 and ``trace`` in Hutchinson form run on
    it; blockwise and rotated estimators raise a clear error). Rows also carry
    ``rank_state_bytes`` (max over ranks of the model state an HVP holds) and ``ranks``
    (in ``details["shard"]``). tests/test_fsdp.py runs it under torchrun.

    Example:
        >>> analyze_sharded([], ["spectral"]).shape[0]  # no checkpoint, no row
        0
    """
    import pandas as pd

    from hessnorm import distributed
    from hessnorm.operator import HessianOperator
    from hessnorm.results import columns

    rows = []
    show = progress and distributed.rank() == 0
    for path in checkpoints:
        net, batches, loss_fn, meta = load_sharded(path, seed=seed, **load_options)
        op = HessianOperator.from_module(net, loss_fn, batches)
        mem = torch.tensor([op.memory()["state_bytes"]], dtype=torch.float64)
        peak = torch.tensor([op.memory()["peak_bytes"]], dtype=torch.float64)
        import torch.distributed as dist

        dist.all_reduce(mem, op=dist.ReduceOp.MAX)
        dist.all_reduce(peak, op=dist.ReduceOp.MAX)
        at = {"loss": op.loss(), "grad_norm": float(op.gradient().double().norm() ** 2)}
        gsq = torch.tensor([at["grad_norm"]], dtype=torch.float64)
        at["grad_norm"] = float(op.allreduce_(gsq)[0]) ** 0.5
        labels = [getattr(e, "label", e) for e in estimators]
        options = {k: v for k, v in (("n_cauchy", n_cauchy), ("tol", tol)) if v is not None}
        for row in run_estimators(op, labels, seed=seed, progress=show, options=options):
            details = dict(row["details"])
            details["shard"] = {
                "ranks": op.world,
                "rank_state_bytes": int(mem[0]),
                "rank_peak_bytes": int(peak[0]),
                "hvp": "finite differences (FSDP2, shard-local)",
            }
            row.update(
                details=details,
                rotation="none",
                checkpoint=str(path),
                kind=meta["kind"],
                run="",
                task=meta["task"],
                optimizer=meta["optimizer"],
                step=meta["step"],
                **at,
            )
            rows.append(row)
    return pd.DataFrame(rows, columns=columns())


def analyze_sharded_args(args, run_estimators, format_table, write_results) -> int:
    """``hessnorm analyze ... --shard fsdp`` with parsed CLI ``args``; rank 0 prints and writes.

    Example:
        >>> import argparse
        >>> from hessnorm.analyze import configure_parser
        >>> p = argparse.ArgumentParser()
        >>> configure_parser(p)
        >>> analyze_sharded_args(p.parse_args(["w.pt", "--shard", "fsdp", "--task", "gpt"]),
        ...                      None, None, None)
        Traceback (most recent call last):
        ...
        hessnorm.errors.ConfigError: --shard fsdp does not support --task yet; drop them (the model is sharded on the CPU with gloo here)
    """
    from hessnorm import distributed
    from hessnorm.registry import parse_estimators

    unsupported = [
        flag
        for flag, value in (
            ("--task", args.task),
            ("--text", args.text),
            ("--eval-resamples", args.eval_resamples or None),
            ("--device", None if args.device in (None, "cpu") else args.device),
        )
        if value is not None
    ]
    if unsupported:
        raise ConfigError(
            f"--shard fsdp does not support {', '.join(unsupported)} yet; drop them (the "
            "model is sharded on the CPU with gloo here)"
        )
    dtype = getattr(torch, args.dtype) if isinstance(args.dtype, str) else args.dtype
    df = analyze_sharded(
        _expand(args.checkpoints),
        parse_estimators(args.estimators),
        run_estimators=run_estimators,
        n_cauchy=args.n_cauchy,
        seed=args.seed,
        tol=args.tol,
        progress=not args.quiet,
        model=args.model,
        data=args.data,
        loss=args.loss,
        data_dir=args.data_dir,
        eval_examples=args.windows,
        dtype=dtype,
        data_seed=args.data_seed,
    )
    if distributed.rank() != 0:
        return 0
    print(format_table(df))
    if args.out:
        print(f"wrote {write_results(df, args.out)}")
    return 0


def _expand(paths) -> list[Path]:
    out = []
    for p in paths:
        p = Path(p)
        if not p.exists():
            raise ConfigError(f"{p} does not exist")
        out.append(p)
    return out
