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

``hf``            a Hugging Face ``save_pretrained`` folder (``config.json`` and
                  ``model.safetensors``/``pytorch_model.bin``, plus the tokenizer), a
                  causal LM loaded by :mod:`hessnorm.hf` (extra ``hessnorm[hf]``);
                  evaluation windows cut from a text file (``text=``) by the same rule.

Every kind is loaded through the trainer task that owns its evaluation set: a
nanoGPT checkpoint and a state_dict with ``task="gpt"`` get the ``gpt`` task's
evaluation windows (:func:`hessnorm.train.tasks.lm_windows`, evenly spaced, 64 by
default, in batches of 16), exactly like a hessnorm run of the gpt task, so the
same weights give the same Hessian whatever the file format.

Checkpoints are data, not code: files are read by :func:`hessnorm._io.read_state`
(``torch.load(weights_only=True)``, the only ``torch.load`` in hessnorm); one that
needs arbitrary unpickling is refused and never executed. Key or shape mismatches
are listed by name. User code named by ``model=``/``data=``/``loss=`` is imported
without registering it in ``sys.modules``.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from hessnorm._io import read_state
from hessnorm.errors import CheckpointError, ConfigError
from hessnorm.train.runs import list_checkpoints, rebuild
from hessnorm.train.tasks import build_task

__all__ = [
    "detect",
    "expand",
    "is_hf_folder",
    "load",
    "read_state",
    "load_state_into",
    "resolve_callable",
]

_COMPILE_PREFIX = "_orig_mod."


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
    """The kind of checkpoint at ``path``: hessnorm-run, run-folder, nanogpt, state_dict or hf.

    Raises:
        CheckpointError: an unreadable or unrecognised file, or an empty folder.

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "w.pt"
        >>> torch.save({"w": torch.ones(1)}, p)
        >>> detect(p)
        'state_dict'
    """
    path = Path(path)
    if is_hf_folder(path):
        return "hf"
    if path.is_dir():
        if not expand(path):
            raise CheckpointError(f"{path} is a folder without ckpt_*.pt checkpoints")
        return "run-folder"
    return _kind_of(read_state(path))


def expand(path: str | Path) -> list[Path]:
    """A run folder becomes its checkpoints in step order; a file (or HF folder) stays itself.

    Example:
        >>> expand("weights.pt")
        [PosixPath('weights.pt')]
    """
    path = Path(path)
    if path.is_dir() and not is_hf_folder(path):
        return [p for _, p in list_checkpoints(path)]
    return [path]


_HF_WEIGHTS = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)


def is_hf_folder(path: str | Path) -> bool:
    """True for a Hugging Face ``save_pretrained`` folder: ``config.json`` plus weights.

    A hessnorm run folder also holds a ``config.json`` but no such weight file.

    Example:
        >>> import tempfile, pathlib
        >>> is_hf_folder(tempfile.mkdtemp())
        False
    """
    path = Path(path)
    return (
        path.is_dir()
        and (path / "config.json").is_file()
        and any((path / f).is_file() for f in _HF_WEIGHTS)
    )


def _load_hf(path: Path, *, text, eval_examples, block_size, device, dtype) -> tuple:
    """A Hugging Face folder through :func:`hessnorm.hf.causal_lm_batches`."""
    from hessnorm import hf

    if text is None:
        raise ConfigError(
            f"{path} is a Hugging Face model folder: its evaluation set is cut from a text "
            "file, so pass text=FILE (CLI: --text FILE; with --eval-examples N windows of "
            "--block-size T tokens)"
        )
    model, batches, info = hf.causal_lm_batches(
        path,
        text,
        n=16 if eval_examples is None else eval_examples,
        block_size=block_size,
        dtype=torch.float32 if dtype is None else dtype,
        device="cpu" if device is None else device,
    )
    meta = {
        "kind": "hf",
        "task": "causal-lm",
        "optimizer": "unknown",
        "step": None,
        "rotation": None,
        "architecture": info["architecture"],
        "data": info["data"],
        "notes": info["notes"],
    }
    return model, batches, hf.causal_lm_loss, meta


def resolve_callable(spec: str | Callable, what: str) -> Callable:
    """``"pkg.module:function"`` or ``"path/to/file.py:function"`` -> the function.

    This imports user code the user named explicitly (unlike unpickling a file); a
    file is executed as a fresh module each time and not added to ``sys.modules``.

    Raises:
        ConfigError: a malformed spec, a missing file or module, or no such callable.

    Example:
        >>> resolve_callable("math:sqrt", "loss")(4.0)
        2.0
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
    """Load ``state`` into ``model``, listing every missing, unexpected or mis-shaped key.

    The ``_orig_mod.`` prefix of ``torch.compile`` is stripped; a tied weight stored
    once (as safetensors does) is not missing.

    Raises:
        CheckpointError: naming every mismatched key.

    Example:
        >>> net = load_state_into(nn.Linear(2, 1), {"_orig_mod.weight": torch.ones(1, 2),
        ...                                        "_orig_mod.bias": torch.zeros(1)})
        >>> net.weight.tolist()
        [[1.0, 1.0]]
    """
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


def _load_nanogpt(ckpt: Mapping, *, data_dir, eval_examples, seed) -> tuple:
    from hessnorm.train.gpt import GPTConfig

    args = dict(ckpt["model_args"])
    known = set(GPTConfig.__dataclass_fields__)
    # every GPTConfig field explicit (nanoGPT's defaults where model_args is silent)
    options = GPTConfig(**{k: v for k, v in args.items() if k in known}).to_dict()
    task = build_task("gpt", options | {"data_dir": data_dir}, seed=seed)
    model = load_state_into(task.model, ckpt["model"], "nanoGPT checkpoint")
    batches = task.eval_batches(eval_examples)
    top = max(int(x.max()) for x, _ in batches)
    if top >= options["vocab_size"]:
        raise CheckpointError(
            f"token id {top} is outside the model's vocabulary of {options['vocab_size']}"
        )
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
    return model, batches, task.loss_fn, meta


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
    text: str | Path | None = None,
    block_size: int | None = None,
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
        eval_examples: evaluation examples (sequences for language models; the
            task's default when None: 64 for gpt).
        seed: seeds the model a task builds before the weights are loaded (the
            evaluation set of every task is deterministic and does not depend on it).
        device, dtype: where and in which precision the model is returned.
        text: Hugging Face folders only: the UTF-8 text file the evaluation windows
            are cut from (``eval_examples`` windows, 16 by default, of ``block_size``
            tokens, the model's context length up to 1024 by default, by
            :func:`hessnorm.train.tasks.lm_windows`).
        block_size: Hugging Face folders only: tokens per window.

    ``meta`` always holds ``kind``, ``task``, ``optimizer``, ``step``, ``rotation``.

    Raises:
        CheckpointError: unreadable, unrecognised or mismatched checkpoints.
        ConfigError: a state_dict without ``model``/``data`` or ``task``.

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "w.safetensors"
        >>> from safetensors.torch import save_file
        >>> save_file(nn.Linear(2, 1).state_dict(), str(p))
        >>> net, batches, loss_fn, meta = load(p, model=lambda: nn.Linear(2, 1),
        ...                                    data=lambda: [(torch.ones(1, 2), torch.zeros(1))])
        >>> meta["kind"], type(net).__name__
        ('state_dict', 'Linear')
    """
    path = Path(path)
    if is_hf_folder(path):
        net, batches, loss_fn, meta = _load_hf(
            path,
            text=text,
            eval_examples=eval_examples,
            block_size=block_size,
            device=device,
            dtype=dtype,
        )
        return net, batches, loss_fn, {"checkpoint": str(path), **meta}
    if path.is_dir():
        raise CheckpointError(
            f"{path} is a run folder; pass one of its checkpoints, or use analyze() for all"
        )
    state = read_state(path)
    kind = _kind_of(state)
    if kind == "hessnorm-run":
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
