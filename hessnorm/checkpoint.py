"""Load any supported checkpoint as ``(model, batches, loss_fn, meta)``, safely.

Kinds, detected from the file itself:

``hessnorm-run``  a checkpoint of hessnorm's trainer (or a run folder: all of them).
                  Self-describing: task, model config and data are rebuilt from it.
``nanogpt``       a nanoGPT ``ckpt.pt`` (``model``, ``model_args``, ``iter_num``,
                  ``config``); the ``_orig_mod.`` prefix ``torch.compile`` leaves is
                  stripped. Evaluation data: ``val.bin`` of a nanoGPT data folder, or
                  the embedded byte-level corpus.
``state_dict``    a plain ``.pt``/``.pth`` state_dict or a ``.safetensors`` file; the
                  model comes from user code (``model="module:factory"`` or a file
                  path ``"path/to/file.py:factory"``) or a trainer task name, the
                  evaluation batches from ``data="module:function"`` or the task.

Checkpoints are data, not code: ``.pt`` files are read with
``torch.load(weights_only=True)``; one that needs arbitrary unpickling is refused
and never executed. Key or shape mismatches are listed by name.
"""

from __future__ import annotations

import importlib
import importlib.util
import pickle
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from hessnorm.errors import CheckpointError, ConfigError

__all__ = ["detect", "expand", "load", "read_state", "load_state_into", "resolve_callable"]

_COMPILE_PREFIX = "_orig_mod."


def read_state(path: str | Path) -> Any:
    """Read a ``.pt``/``.pth``/``.safetensors`` file without executing any code."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as exc:
            raise CheckpointError(f"{path} is not a readable safetensors file: {exc}") from exc
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"refused to load {path}: it needs arbitrary unpickling (weights_only=True "
            f"rejected it: {str(exc).splitlines()[0][:200]}). Unpickling can run any code, "
            "so hessnorm never does it. If you trust the file, re-save only its tensors: "
            "torch.save(model.state_dict(), 'weights.pt') or safetensors.torch.save_file."
        ) from exc
    except Exception as exc:
        raise CheckpointError(
            f"cannot read {path} with torch.load(weights_only=True): {exc}"
        ) from exc


def _is_tensor_dict(obj: Any) -> bool:
    return (
        isinstance(obj, Mapping)
        and bool(obj)
        and all(isinstance(v, torch.Tensor) for v in obj.values())
    )


def _kind_of(obj: Any) -> str:
    if isinstance(obj, Mapping):
        if str(obj.get("format", "")).startswith("hessnorm-run"):
            return "hessnorm-run"
        if "model" in obj and "model_args" in obj:
            return "nanogpt"
        if (
            _is_tensor_dict(obj)
            or _is_tensor_dict(obj.get("state_dict"))
            or _is_tensor_dict(obj.get("model"))
        ):
            return "state_dict"
    raise CheckpointError(
        "unrecognised checkpoint: expected a hessnorm run checkpoint, a nanoGPT ckpt.pt "
        "(keys 'model' and 'model_args') or a state_dict of tensors; found "
        f"{type(obj).__name__} with keys {list(obj)[:8] if isinstance(obj, Mapping) else '-'}"
    )


def detect(path: str | Path) -> str:
    """The kind of checkpoint at ``path``: hessnorm-run, run-folder, nanogpt or state_dict."""
    path = Path(path)
    if path.is_dir():
        if not expand(path):
            raise CheckpointError(f"{path} is a folder without ckpt_*.pt checkpoints")
        return "run-folder"
    return _kind_of(read_state(path))


def expand(path: str | Path) -> list[Path]:
    """A run folder becomes its checkpoints in step order; a file stays itself."""
    path = Path(path)
    if path.is_dir():
        from hessnorm.train.checkpoint import list_checkpoints

        return [p for _, p in list_checkpoints(path)]
    return [path]


def resolve_callable(spec: str | Callable, what: str) -> Callable:
    """``"pkg.module:function"`` or ``"path/to/file.py:function"`` -> the function.

    This imports user code the user named explicitly (unlike unpickling a file).
    """
    if callable(spec):
        return spec
    if not isinstance(spec, str) or ":" not in spec:
        raise ConfigError(
            f"{what} must look like 'module:function' or 'file.py:function', got {spec!r}"
        )
    target, _, name = spec.rpartition(":")
    try:
        if target.endswith(".py"):
            file = Path(target)
            if not file.is_file():
                raise ConfigError(f"{what}: file {file} does not exist")
            mod_name = f"_hessnorm_user_{file.stem}"
            spec_ = importlib.util.spec_from_file_location(mod_name, file)
            module = importlib.util.module_from_spec(spec_)
            sys.modules[mod_name] = module
            spec_.loader.exec_module(module)
        else:
            module = importlib.import_module(target)
    except ImportError as exc:
        raise ConfigError(f"{what}: cannot import {target!r}: {exc}") from exc
    fn = getattr(module, name, None)
    if not callable(fn):
        raise ConfigError(f"{what}: {target!r} has no callable {name!r}")
    return fn


def _strip_prefix(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {
        k[len(_COMPILE_PREFIX) :] if k.startswith(_COMPILE_PREFIX) else k: v
        for k, v in state.items()
    }


def load_state_into(
    model: nn.Module, state: Mapping[str, torch.Tensor], source: str = "checkpoint"
) -> nn.Module:
    """Load ``state`` into ``model``, listing every missing, unexpected or mis-shaped key."""
    state = _strip_prefix(state)
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    # tied weights may be stored once (safetensors drops shared tensors): a missing key
    # whose tensor shares storage with another of the model's keys is not missing
    tensors = model.state_dict(keep_vars=True)
    missing = [
        k
        for k in missing
        if not any(
            j != k and t.data_ptr() == tensors[k].data_ptr() and t.shape == tensors[k].shape
            for j, t in tensors.items()
        )
    ]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing from the {source}: {missing}")
        if unexpected:
            parts.append(f"unexpected in the {source}: {unexpected}")
        if shapes:
            parts.append(f"shape mismatches: {shapes}")
        raise CheckpointError(
            f"the {source} does not match the model ({type(model).__name__}): " + "; ".join(parts)
        )
    model.load_state_dict(state, strict=False)
    return model


def _lm_batches(
    tokens, block: int, n: int, seed: int, vocab: int
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    import numpy as np

    if len(tokens) <= block + 1:
        raise CheckpointError(
            f"the evaluation split has {len(tokens)} tokens, fewer than block_size+1 = {block + 1}"
        )
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, len(tokens) - block - 1, size=n)
    x = torch.stack(
        [torch.from_numpy(np.asarray(tokens[s : s + block], dtype=np.int64)) for s in starts]
    )
    y = torch.stack(
        [
            torch.from_numpy(np.asarray(tokens[s + 1 : s + 1 + block], dtype=np.int64))
            for s in starts
        ]
    )
    if int(x.max()) >= vocab:
        raise CheckpointError(
            f"token id {int(x.max())} is outside the model's vocabulary of {vocab}"
        )
    per = 8
    return [(x[i : i + per], y[i : i + per]) for i in range(0, n, per)]


def _load_nanogpt(ckpt: Mapping, *, data_dir, eval_examples, seed) -> tuple:
    from hessnorm.train.data import load_text
    from hessnorm.train.gpt import GPT, GPTConfig, lm_loss

    args = dict(ckpt["model_args"])
    known = set(GPTConfig.__dataclass_fields__)
    cfg = GPTConfig(**{k: v for k, v in args.items() if k in known})
    model = GPT(cfg)
    load_state_into(model, ckpt["model"], "nanoGPT checkpoint")
    _, val, _ = load_text(data_dir)
    n = eval_examples or 16
    batches = _lm_batches(val, cfg.block_size, n, seed, cfg.vocab_size)
    source = f"val.bin of {data_dir}" if data_dir else "the embedded byte-level corpus (eval split)"
    meta = {
        "kind": "nanogpt",
        "task": "gpt",
        "optimizer": str(ckpt.get("config", {}).get("optimizer", "adamw"))
        if isinstance(ckpt.get("config"), Mapping)
        else "adamw",
        "step": int(ckpt.get("iter_num", 0)),
        "model_args": args,
        "data": source,
        "rotation": None,
    }
    return model, batches, lm_loss, meta


def load(
    path: str | Path,
    *,
    model: str | Callable[[], nn.Module] | None = None,
    data: str | Callable[[], Any] | None = None,
    loss: str | Callable | None = None,
    task: str | None = None,
    data_dir: str | None = None,
    eval_examples: int | None = None,
    seed: int = 0,
    device: str | None = None,
    dtype: torch.dtype | None = None,
) -> tuple[nn.Module, list, Callable, dict]:
    """Rebuild ``(model, batches, loss_fn, meta)`` from a checkpoint file.

    Args:
        path: a hessnorm run checkpoint, a nanoGPT ``ckpt.pt``, a state_dict
            ``.pt``/``.pth`` or a ``.safetensors`` file.
        model: for state_dicts, ``"module:factory"`` building the model (no args).
        data: for state_dicts, ``"module:function"`` returning the evaluation
            batches (a list of ``(inputs, targets)``).
        loss: ``"module:function"`` for the batch-mean loss (default cross-entropy).
        task: a trainer task name, instead of ``model``/``data`` for state_dicts.
        data_dir: nanoGPT data folder with ``val.bin`` (nanoGPT checkpoints), or the
            task's data folder.
        eval_examples: evaluation examples (sequences for language models).
        seed: which evaluation examples are drawn (deterministic).
        device, dtype: where and in which precision the model is returned.

    ``meta`` always holds ``kind``, ``task``, ``optimizer``, ``step``, ``rotation``.
    """
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(
            f"{path} is a run folder; pass one of its checkpoints, or use analyze() for all"
        )
    state = read_state(path)
    kind = _kind_of(state)
    if kind == "hessnorm-run":
        from hessnorm.train import rebuild

        net, batches, loss_fn, meta = rebuild(state, eval_examples=eval_examples)
        meta = {**meta, "kind": "hessnorm-run"}
    elif kind == "nanogpt":
        net, batches, loss_fn, meta = _load_nanogpt(
            state, data_dir=data_dir, eval_examples=eval_examples, seed=seed
        )
    else:
        if "state_dict" in state and _is_tensor_dict(state["state_dict"]):
            state = state["state_dict"]
        elif "model" in state and _is_tensor_dict(state["model"]):
            state = state["model"]
        net, batches, loss_fn, meta = _user_model(
            state,
            model=model,
            data=data,
            loss=loss,
            task=task,
            data_dir=data_dir,
            eval_examples=eval_examples,
            seed=seed,
        )
    if device is not None or dtype is not None:
        net = net.to(device=device, dtype=dtype)
    net.eval()
    meta = {"checkpoint": str(path), **meta}
    return net, batches, loss_fn, meta


def _user_model(state, *, model, data, loss, task, data_dir, eval_examples, seed):
    if task is not None:
        from hessnorm.train.tasks import build_task

        t = build_task(task, seed=seed)
        net = t.model
        load_state_into(net, state, "state_dict")
        batches = t.eval_batches(eval_examples)
        loss_fn = t.loss_fn
        meta = {
            "kind": "state_dict",
            "task": task,
            "optimizer": "unknown",
            "step": None,
            "rotation": None,
        }
        return net, batches, loss_fn, meta
    if model is None or data is None:
        raise ConfigError(
            "a plain state_dict does not say which model it belongs to: pass "
            "model='module:factory' and data='module:function' (CLI: --model, --data), "
            "or task=NAME (--task) for a hessnorm trainer task"
        )
    net = resolve_callable(model, "model")()
    if not isinstance(net, nn.Module):
        raise ConfigError(f"the model factory returned {type(net).__name__}, not an nn.Module")
    load_state_into(net, state, "state_dict")
    batches = resolve_callable(data, "data")()
    loss_fn = resolve_callable(loss, "loss") if loss is not None else F.cross_entropy
    meta = {
        "kind": "state_dict",
        "task": "user",
        "optimizer": "unknown",
        "step": None,
        "rotation": None,
    }
    return net, batches, loss_fn, meta
