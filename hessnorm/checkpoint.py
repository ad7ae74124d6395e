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

import dataclasses
import importlib
import importlib.util
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from hessnorm._io import read_state
from hessnorm.errors import CheckpointError, ConfigError
from hessnorm.inputs import DEFAULT_LM_WINDOWS, EVAL_BATCH, CheckpointInfo, EvalSet
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
    "nanogpt_eval_windows",
    "window_starts",
    "check_nanogpt_model_args",
    "check_best_val_loss",
    "loss_check",
    "loss_check_columns",
    "LossCheck",
    "precision_allowance",
    "per_window_losses",
    "nanogpt_args_from_weights",
    "check_model_args_against_weights",
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
            raise CheckpointError(
                f"{path} is a folder without checkpoints (ckpt_*.pt of a hessnorm run, or "
                "nanoGPT's ckpt.pt)"
            )
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
        found = [p for _, p in list_checkpoints(path)]
        return found or _nanogpt_folder(path)
    return [path]


def _nanogpt_folder(path: Path) -> list[Path]:
    """A nanoGPT ``out_dir``: its ``ckpt_<iter>.pt`` by iteration and ``ckpt.pt``, else
    the ``ckpt.pt`` of its sub-folders (several ``out*/`` of one run)."""
    import re

    numbered = sorted(
        (int(m.group(1)), p)
        for p in path.iterdir()
        if (m := re.fullmatch(r"ckpt_(\d+)\.pt", p.name)) and p.is_file()
    )
    files = [p for _, p in numbered]
    if (path / "ckpt.pt").is_file():
        files.append(path / "ckpt.pt")
    # a folder of nanoGPT out_dirs (out_100/ckpt.pt, out_200/ckpt.pt, ...): one run's
    # snapshots; analyze orders them by their iter_num
    return files or sorted(p for p in path.glob("*/ckpt.pt") if p.is_file())


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
        n=DEFAULT_LM_WINDOWS if eval_examples is None else eval_examples,
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
        "data": info["text"],
        "split": "text",
        "eval_windows": info["n_windows"],
        "eval_tokens": info["block_size"],
        "eval_rule": "lm_windows: " + info["window_rule"],
        "data_seed": None,
        "resample": None,
        "notes": list(info["notes"]),
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


# ---------------------------------------------------------------- nanoGPT checkpoints

#: nanoGPT ``model_args`` keys hessnorm's GPT understands (nanoGPT's GPTConfig fields).
NANOGPT_MODEL_ARGS = ("n_layer", "n_head", "n_embd", "block_size", "bias", "vocab_size", "dropout")

_EVAL_BATCH = EVAL_BATCH  # windows per batch (hessnorm.inputs)


def nanogpt_eval_windows(
    tokens, n: int, block_size: int, *, data_seed: int | None = None, resample: int | None = None
) -> tuple[torch.Tensor, torch.Tensor, str]:
    """Evaluation windows of a language model and the rule that chose them.

    One rule, a systematic sample: the ``n`` window starts of
    :func:`hessnorm.train.tasks.lm_windows`, ``b_i = floor(i · S / (n - 1))`` over the
    ``S + 1 = len(tokens) - block_size`` possible starts, shifted circularly by an
    offset ``c``: ``start_i = (b_i + c) mod (S + 1)``. With ``data_seed=None`` and
    ``resample=None`` the offset is ``c = 0`` (the deterministic default, exactly
    ``lm_windows``); otherwise ``c`` is drawn uniformly from ``{0, ..., S}`` by
    ``numpy.random.default_rng([data_seed, resample])`` (``resample`` numbers the
    independent sets of ``--eval-resamples``; a missing one counts as 0, a missing
    ``data_seed`` as 0). So the default is one draw (``c = 0``) of the very rule the
    resamples draw from: every start is uniform over the split for a uniform ``c``,
    the windows keep the default's even spacing, and the spread over resamples is the
    variation of the default's own design (a set of independent uniform starts would
    be another design, with a larger spread where the text changes along the split).

    Returns:
        ``(inputs, targets, rule)``: int64 tensors (n, T) and a one-line description.

    Raises:
        ConfigError: ``n < 1`` or a split shorter than ``block_size + 1`` tokens.

    Example:
        >>> x, y, rule = nanogpt_eval_windows(list(range(10)), 2, 3)
        >>> x.tolist(), rule
        ([[0, 1, 2], [6, 7, 8]], 'lm_windows: evenly spaced starts (deterministic, offset 0)')
        >>> x, y, rule = nanogpt_eval_windows(list(range(10)), 2, 3, data_seed=1)
        >>> bool((y - x == 1).all()), rule
        (True, 'lm_windows at a random offset: numpy default_rng([data_seed=1, resample=0])')
    """
    import numpy as np

    from hessnorm.train.tasks import lm_windows

    if data_seed is None and resample is None:
        x, y = lm_windows(tokens, n, block_size)
        return x, y, "lm_windows: evenly spaced starts (deterministic, offset 0)"
    T = int(block_size)
    if int(n) < 1:
        raise ConfigError(f"the number of evaluation windows must be >= 1, got {n}")
    if len(tokens) <= T + 1:
        raise ConfigError(
            f"the evaluation split has {len(tokens)} tokens, fewer than block_size + 1 = {T + 1}"
        )
    s, r = int(data_seed or 0), int(resample or 0)
    starts = window_starts(len(tokens), int(n), T, offset_seed=(s, r))
    rows = torch.from_numpy(
        np.stack([np.asarray(tokens[i : i + T + 1], dtype=np.int64) for i in starts])
    )
    return (
        rows[:, :-1],
        rows[:, 1:],
        f"lm_windows at a random offset: numpy default_rng([data_seed={s}, resample={r}])",
    )


def window_starts(
    n_tokens: int, n: int, block_size: int, *, offset_seed: tuple[int, int] | None = None
) -> list[int]:
    """Window starts of :func:`nanogpt_eval_windows`: lm_windows' starts, shifted.

    ``offset_seed=None`` gives offset 0 (the starts of
    :func:`hessnorm.train.tasks.lm_windows`); ``(data_seed, resample)`` draws the offset
    ``c`` uniformly from ``{0, ..., S}``, ``S = n_tokens - block_size - 1``.

    Example:
        >>> window_starts(10, 2, 3), window_starts(10, 3, 3)
        ([0, 6], [0, 3, 6])
        >>> all(0 <= s <= 6 for s in window_starts(10, 3, 3, offset_seed=(0, 4)))
        True
    """
    import numpy as np

    span = int(n_tokens) - int(block_size) - 1
    base = [i * span // max(n - 1, 1) for i in range(n)]
    if offset_seed is None:
        return base
    c = int(np.random.default_rng(list(offset_seed)).integers(0, span + 1))
    return [(b + c) % (span + 1) for b in base]


def nanogpt_tokens(data_dir, data) -> tuple[Any, dict, int | None]:
    """(val tokens, description, corpus vocabulary) of the data a nanoGPT checkpoint is read on.

    Example:
        >>> tokens, source, vocab = nanogpt_tokens(None, "builtin")
        >>> vocab, source["split"], len(tokens) > 1000
        (256, 'eval (last 10%)', True)
    """
    import numpy as np

    from hessnorm.train.data import load_text

    if data_dir is not None:
        val = Path(data_dir) / "val.bin"
        if not val.is_file():
            raise ConfigError(
                f"--data-dir {data_dir} has no val.bin; pass the nanoGPT data folder the model "
                "was trained on (prepare.py writes val.bin there; train.bin is not needed)"
            )
        if val.stat().st_size < 2:
            raise ConfigError(f"{val} is empty: it holds no uint16 token ids")
        tokens = np.memmap(val, dtype=np.uint16, mode="r")
        return tokens, {"data": str(val.resolve()), "split": "val"}, None
    if data == "builtin":
        _, val, vocab = load_text(None)
        return (
            val,
            {"data": "builtin: hessnorm's byte-level stdlib corpus", "split": "eval (last 10%)"},
            vocab,
        )
    raise ConfigError(
        "a nanoGPT checkpoint does not say which text it was trained on: pass --data-dir DIR, "
        "the nanoGPT data folder holding its val.bin (data_dir= in Python). For a Hugging Face "
        "model folder pass --text FILE. Only with an explicit --data builtin (data='builtin') "
        "is the bundled byte-level corpus used; its numbers then belong to that text, not "
        "to your model's data."
    )


def check_nanogpt_model_args(args: Mapping) -> list[str]:
    """Check a nanoGPT ``model_args`` mapping; returns notes (unknown keys).

    Checks what the weights' shapes cannot: ``n_embd`` divisible by ``n_head`` (the
    head count changes the attention, hence the Hessian, without changing any
    shape), positive sizes, ``0 <= dropout < 1``.

    Raises:
        CheckpointError: a value that no nanoGPT model can have.

    Example:
        >>> check_nanogpt_model_args({"n_layer": 2, "n_head": 4, "n_embd": 64, "foo": 1})
        ["model_args key(s) ['foo'] are not nanoGPT GPTConfig fields and were ignored"]
    """
    bad = []
    for k in ("n_layer", "n_head", "n_embd", "block_size", "vocab_size"):
        if k in args and not (isinstance(args[k], int) and args[k] >= 1):
            bad.append(f"{k}={args[k]!r} must be a positive integer")
    if not bad and "n_head" in args and "n_embd" in args and args["n_embd"] % args["n_head"]:
        bad.append(f"n_embd={args['n_embd']} is not divisible by n_head={args['n_head']}")
    if "dropout" in args and not (0.0 <= float(args["dropout"]) < 1.0):
        bad.append(f"dropout={args['dropout']!r} is not in [0, 1)")
    if bad:
        raise CheckpointError("nanoGPT model_args are inconsistent: " + "; ".join(bad))
    unknown = sorted(k for k in args if k not in NANOGPT_MODEL_ARGS)
    notes = []
    if unknown:
        notes.append(
            f"model_args key(s) {unknown} are not nanoGPT GPTConfig fields and were ignored"
        )
    return notes


#: The ``model_args`` the weights' shapes imply, and those they cannot (see
#: :func:`nanogpt_args_from_weights`).
IMPLIED_BY_WEIGHTS = ("vocab_size", "block_size", "n_embd", "n_layer", "bias")
NOT_IMPLIED_BY_WEIGHTS = ("n_head", "dropout")


def nanogpt_args_from_weights(state: Mapping[str, torch.Tensor]) -> dict:
    """The nanoGPT ``model_args`` a state_dict's keys and shapes imply.

    ``vocab_size`` and ``n_embd`` from ``transformer.wte.weight`` (V, C),
    ``block_size`` from ``transformer.wpe.weight`` (T, C), ``n_layer`` from the
    blocks ``transformer.h.<i>``, ``bias`` from ``transformer.ln_f.bias``. Not
    implied: ``n_head`` (every head count that divides ``n_embd`` gives the same
    shapes; only the loss check of :func:`loss_check` can catch an edited one) and
    ``dropout`` (no parameter; off during analysis anyway). Keys of ``torch.compile``
    (``_orig_mod.``) are understood.

    Example:
        >>> from hessnorm.train.gpt import GPT, GPTConfig
        >>> cfg = GPTConfig(block_size=8, vocab_size=11, n_layer=3, n_head=2, n_embd=4, bias=False)
        >>> nanogpt_args_from_weights(GPT(cfg).state_dict())
        {'vocab_size': 11, 'n_embd': 4, 'block_size': 8, 'n_layer': 3, 'bias': False}
    """
    state = _strip_prefix(state)
    out: dict = {}
    wte, wpe = state.get("transformer.wte.weight"), state.get("transformer.wpe.weight")
    if wte is not None and wte.dim() == 2:
        out["vocab_size"], out["n_embd"] = int(wte.shape[0]), int(wte.shape[1])
    if wpe is not None and wpe.dim() == 2:
        out["block_size"] = int(wpe.shape[0])
    blocks = {int(k.split(".")[2]) for k in state if k.startswith("transformer.h.")}
    if blocks:
        out["n_layer"] = max(blocks) + 1
    if "transformer.ln_f.weight" in state:
        out["bias"] = "transformer.ln_f.bias" in state
    return out


def check_model_args_against_weights(args: Mapping, state: Mapping[str, torch.Tensor]) -> None:
    """Refuse ``model_args`` that contradict what the weights imply (:data:`IMPLIED_BY_WEIGHTS`).

    Raises:
        CheckpointError: naming every contradicting entry, its value and the weights'.

    Example:
        >>> from hessnorm.train.gpt import GPT, GPTConfig
        >>> w = GPT(GPTConfig(block_size=8, vocab_size=11, n_layer=1, n_head=2, n_embd=4)).state_dict()
        >>> check_model_args_against_weights({"n_layer": 2, "n_head": 4}, w)
        Traceback (most recent call last):
        ...
        hessnorm.errors.CheckpointError: the checkpoint's model_args contradict its weights: n_layer=2 but the weights hold 1 (blocks transformer.h.0..0). Weight shapes cannot tell n_head; the loss check compares the recomputed loss with best_val_loss instead
    """
    implied = nanogpt_args_from_weights(state)
    where = {
        "vocab_size": "rows of transformer.wte.weight",
        "n_embd": "columns of transformer.wte.weight",
        "block_size": "rows of transformer.wpe.weight",
        "n_layer": f"blocks transformer.h.0..{implied.get('n_layer', 1) - 1}",
        "bias": "transformer.ln_f.bias present" if implied.get("bias") else "no bias tensors",
    }
    bad = [
        f"{k}={args[k]!r} but the weights hold {implied[k]!r} ({where[k]})"
        for k in IMPLIED_BY_WEIGHTS
        if k in args and k in implied and args[k] != implied[k]
    ]
    if bad:
        raise CheckpointError(
            "the checkpoint's model_args contradict its weights: " + "; ".join(bad) + ". "
            "Weight shapes cannot tell n_head; the loss check compares the recomputed loss "
            "with best_val_loss instead"
        )


def _drop_mask_buffers(state: Mapping[str, torch.Tensor], model: nn.Module) -> dict:
    """Drop nanoGPT's causal-mask buffers ``*.attn.bias`` (non-flash path): buffers, not weights.

    A key is dropped only when the model has no such key and the tensor is the causal
    mask ``tril(ones(T, T))`` of shape (1, 1, T, T); anything else stays and is
    reported as unexpected by :func:`load_state_into`.
    """
    own = model.state_dict()
    out = {}
    for k, v in state.items():
        if k.endswith(".attn.bias") and k not in own and v.dim() == 4 and v.shape[:2] == (1, 1):
            T = v.shape[-1]
            if v.shape[-2] == T and torch.equal(v[0, 0] != 0, torch.ones(T, T).tril().bool()):
                continue
        out[k] = v
    return out


def _load_nanogpt(ckpt: Mapping, *, data_dir, data, eval_examples, seed, data_seed=None) -> tuple:
    from hessnorm.train.gpt import GPT, GPTConfig, lm_loss
    from hessnorm.train.tasks import seeded

    args = dict(ckpt["model_args"])
    notes = check_nanogpt_model_args(args)
    check_model_args_against_weights(args, ckpt["model"])
    known = set(GPTConfig.__dataclass_fields__)
    config = GPTConfig(**{k: v for k, v in args.items() if k in known})
    if eval_examples is not None and int(eval_examples) < 1:
        raise ConfigError(f"eval_examples must be >= 1, got {eval_examples}")
    n = int(eval_examples or DEFAULT_LM_WINDOWS)
    tokens, source, corpus_vocab = nanogpt_tokens(data_dir, data)
    model = seeded(seed, lambda: GPT(config))
    state = _drop_mask_buffers(_strip_prefix(ckpt["model"]), model)
    model = load_state_into(model, state, "nanoGPT checkpoint")
    T = config.block_size

    def batches_for(resample: int | None):
        x, y, rule = nanogpt_eval_windows(tokens, n, T, data_seed=data_seed, resample=resample)
        top = int(max(x.max(), y.max()))
        if top >= config.vocab_size:
            where = (
                "the bundled corpus is byte-level (ids up to 255)"
                if corpus_vocab is not None
                else f"{source['data']} holds token ids up to at least {top}"
            )
            raise CheckpointError(
                f"token id {top} is outside the model's vocabulary of {config.vocab_size}: "
                f"{where}. The evaluation data must be tokenized like the training data: "
                "pass --data-dir with the nanoGPT data folder the model was trained on "
                "(a char-level model needs its own val.bin, not a GPT-2 BPE one)"
            )
        batches = [
            (x[i : i + _EVAL_BATCH], y[i : i + _EVAL_BATCH]) for i in range(0, n, _EVAL_BATCH)
        ]
        return batches, rule

    batches, rule = batches_for(None)
    cfg = ckpt.get("config") if isinstance(ckpt.get("config"), Mapping) else {}
    best = ckpt.get("best_val_loss")
    meta = {
        "kind": "nanogpt",
        "task": "gpt",
        "optimizer": str(cfg.get("optimizer", "adamw")),
        "step": int(ckpt.get("iter_num", 0)),
        "model_args": args,
        **source,
        "eval_windows": n,
        "eval_tokens": T,
        "eval_rule": rule,
        "data_seed": data_seed,
        "rotation": None,
        "notes": notes,
        "resample": lambda k: batches_for(k)[0],
        "best_val_loss": float(best) if isinstance(best, (int, float, torch.Tensor)) else None,
        "nanogpt_eval_windows": int(cfg.get("eval_iters", 200)) * int(cfg.get("batch_size", 12)),
        "nanogpt_config": {
            k: cfg[k] for k in ("dtype", "device", "always_save_checkpoint") if k in cfg
        },
    }
    return model, batches, lm_loss, meta


#: Relative precision allowance of :class:`LossCheck` per training dtype: 2.5 rounding
#: units of the autocast dtype (2^-8 for bfloat16, 2^-11 for float16), none for float32.
PRECISION_ALLOWANCE = {"float32": 0.0, "float16": 2.5 * 2.0**-11, "bfloat16": 2.5 * 2.0**-8}

#: Standard errors in the tolerance (a false alarm below 1e-4 for a normal difference),
#: and the one-sided normal quantile of the 95 % power of the detectable shift.
LOSS_CHECK_Z, LOSS_CHECK_POWER_Z = 4.0, 1.6449


@dataclasses.dataclass(frozen=True)
class LossCheck:
    """The comparison of a nanoGPT checkpoint's recomputed loss with its ``best_val_loss``.

    Attributes:
        recomputed: mean loss over hessnorm's ``windows`` evaluation windows.
        stored: the checkpoint's ``best_val_loss``.
        windows, stored_windows: n (ours) and m (nanoGPT's ``eval_iters × batch_size``).
        sd: standard deviation of the per-window losses.
        dtype: the run's training dtype (``config['dtype']``), None if not recorded.
        allowance: relative precision allowance for that dtype
            (:data:`PRECISION_ALLOWANCE`; 0 for float32 or a CPU run, which nanoGPT
            does not autocast).
        tolerance: ``z · sd · sqrt(1/n + 1/m) + allowance · |stored|`` (z = 4).
        detectable: the smallest true shift of the loss flagged with probability at
            least 95 %: ``tolerance + 1.645 · sd · sqrt(1/n + 1/m)``.
        always_save: nanoGPT's ``always_save_checkpoint``: then ``best_val_loss`` may
            belong to an earlier evaluation than these weights.

    Example:
        >>> c = LossCheck(recomputed=2.80, stored=2.70, windows=64, stored_windows=2400,
        ...               sd=0.1, dtype="float32", allowance=0.0, tolerance=0.05,
        ...               detectable=0.07)
        >>> c.passed, c.columns()["loss_check"], c.warning()[:8]
        (False, 'failed', 'warning:')
    """

    recomputed: float
    stored: float
    windows: int
    stored_windows: int
    sd: float
    dtype: str | None
    allowance: float
    tolerance: float
    detectable: float
    always_save: bool = False

    @property
    def passed(self) -> bool:
        return abs(self.recomputed - self.stored) <= self.tolerance

    def summary(self) -> str:
        """The one line ``analyze`` prints for every nanoGPT checkpoint, pass or fail."""
        prec = (
            f"{100 * self.allowance:.2g}% for {self.dtype} autocast"
            if self.allowance
            else f"no precision allowance ({self.dtype or 'dtype not recorded'})"
        )
        verdict = "≤" if self.passed else ">"
        return (
            f"loss check: recomputed {self.recomputed:.4f} on {self.windows} windows vs "
            f"best_val_loss {self.stored:.4f} (nanoGPT, {self.stored_windows} random windows): "
            f"|difference| {abs(self.recomputed - self.stored):.4f} {verdict} tolerance "
            f"{self.tolerance:.4f} ({LOSS_CHECK_Z:g} standard errors + {prec}); a true "
            f"shift of {self.detectable:.4f} or more is caught with 95% probability"
        )

    def warning(self) -> str | None:
        """None when the check passed, else a warning saying what may be wrong."""
        if self.passed:
            return None
        later = (
            " (always_save_checkpoint was on, so best_val_loss may come from an earlier, "
            "better evaluation than these weights)"
            if self.always_save and self.recomputed > self.stored
            else ""
        )
        return (
            f"warning: the loss recomputed on the evaluation windows ({self.recomputed:.4f}) "
            f"differs from the checkpoint's best_val_loss ({self.stored:.4f}) by more than "
            f"the tolerance {self.tolerance:.4f}: the model_args (e.g. n_head, which no weight "
            f"shape implies), the weights or the data may not be what the run used{later}"
        )

    def columns(self) -> dict:
        """The row columns :data:`hessnorm.results.LOSS_CHECK_COLUMNS`."""
        return {
            "best_val_loss": self.stored,
            "loss_check": "passed" if self.passed else "failed",
            "loss_check_tol": self.tolerance,
            "loss_check_detectable": self.detectable,
        }


def loss_check_columns(check: LossCheck | None) -> dict:
    """Row columns of a loss check; empty values for checkpoints without one.

    Example:
        >>> loss_check_columns(None)["loss_check"]
        ''
    """
    if check is None:
        return {
            "best_val_loss": None,
            "loss_check": "",
            "loss_check_tol": None,
            "loss_check_detectable": None,
        }
    return check.columns()


def precision_allowance(config: Mapping) -> tuple[str | None, float]:
    """``(dtype, relative allowance)`` of a nanoGPT run from its ``config``.

    nanoGPT autocasts to ``config['dtype']`` on CUDA only (``device_type == 'cpu'``
    gets a null context), so a CPU run or a float32 one gets no allowance. A config
    without ``dtype`` is assumed bfloat16, nanoGPT's default where supported.

    Raises:
        CheckpointError: a ``dtype`` nanoGPT does not offer.

    Example:
        >>> precision_allowance({"dtype": "float32"}), precision_allowance({"dtype": "bfloat16"})
        (('float32', 0.0), ('bfloat16', 0.009765625))
        >>> precision_allowance({"dtype": "bfloat16", "device": "cpu"})
        ('bfloat16 (CPU: not autocast)', 0.0)
    """
    dtype = config.get("dtype")
    if dtype is None:
        return None, PRECISION_ALLOWANCE["bfloat16"]
    if str(dtype) not in PRECISION_ALLOWANCE:
        return f"{dtype} (not a nanoGPT dtype: allowed as bfloat16)", PRECISION_ALLOWANCE[
            "bfloat16"
        ]
    if str(config.get("device", "cuda")).startswith("cpu") and dtype != "float32":
        return f"{dtype} (CPU: not autocast)", 0.0
    return str(dtype), PRECISION_ALLOWANCE[str(dtype)]


def per_window_losses(model: nn.Module, batches) -> list[float]:
    """Mean cross-entropy of every evaluation window (one forward pass, no HVP).

    Example:
        >>> model = nn.Embedding(5, 5)
        >>> _ = nn.init.zeros_(model.weight)
        >>> x = torch.zeros(2, 3, dtype=torch.long)
        >>> [round(v, 4) for v in per_window_losses(model, [(x, x)])]
        [1.6094, 1.6094]
    """
    device = next(model.parameters()).device
    out = []
    with torch.no_grad():
        for x, y in batches:
            logits = model(x.to(device))
            if logits.dtype in (torch.float16, torch.bfloat16):
                logits = logits.float()
            ce = F.cross_entropy(logits.transpose(1, 2), y.to(device), reduction="none")
            out += ce.mean(dim=1).double().cpu().tolist()
    return out


def loss_check(model: nn.Module, batches, meta: Mapping) -> LossCheck | None:
    """Compare the loss recomputed on the evaluation windows with nanoGPT's ``best_val_loss``.

    nanoGPT stores ``best_val_loss``, its ``estimate_loss()`` on the val split: the
    mean over ``m = eval_iters × batch_size`` random windows (200 × 12 by default),
    under autocast to ``config['dtype']`` on a GPU. Our mean over ``n`` windows
    estimates the same expectation, so the two differ by sampling error, with standard
    error ``se = s · sqrt(1/n + 1/m)`` (``s`` the sd of our per-window losses), plus
    precision. The tolerance is ``4 · se + a · |best_val_loss|`` with ``a`` from
    :func:`precision_allowance` (0 for float32): a false alarm under 1e-4 for a normal
    difference. A true shift ``δ`` is flagged with probability at least 95 % once
    ``|δ| ≥ tolerance + 1.645 · se`` (the ``detectable`` shift): more windows
    (``--eval-examples``) make the check sharper. A larger gap means the weights, the
    architecture (e.g. an edited ``n_head``, which changes no shape) or the data do not
    match the run. Cost: one forward pass over the evaluation set; no HVP.

    Returns:
        A :class:`LossCheck`, or None when the checkpoint has no finite
        ``best_val_loss`` or the data is not its val split.

    Example:
        >>> import math
        >>> model = nn.Embedding(5, 5)  # token -> logits; zero weights: loss log(5)
        >>> _ = nn.init.zeros_(model.weight)
        >>> batches = [(torch.zeros(2, 3, dtype=torch.long), torch.ones(2, 3, dtype=torch.long))]
        >>> c = loss_check(model, batches, {"best_val_loss": math.log(5), "split": "val",
        ...                                 "nanogpt_config": {"dtype": "float32"}})
        >>> c.passed, c.tolerance < 1e-5, round(c.recomputed, 4)
        (True, True, 1.6094)
    """
    best = meta.get("best_val_loss")
    if best is None or meta.get("split") != "val" or not math.isfinite(best):
        return None
    config = meta.get("nanogpt_config") or {}
    dtype, allowance = precision_allowance(config)
    per_window = per_window_losses(model, batches)
    n = len(per_window)
    mean = sum(per_window) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in per_window) / max(n - 1, 1))
    m = max(int(meta.get("nanogpt_eval_windows") or 2400), 1)
    se = sd * math.sqrt(1 / n + 1 / m)
    # plus 1e-6·|loss|: the float32 rounding of a stored loss (nothing can be finer)
    tol = LOSS_CHECK_Z * se + allowance * abs(best) + 1e-6 * abs(best)
    return LossCheck(
        recomputed=mean,
        stored=float(best),
        windows=n,
        stored_windows=m,
        sd=sd,
        dtype=dtype,
        allowance=allowance,
        tolerance=tol,
        detectable=tol + LOSS_CHECK_POWER_Z * se,
        always_save=bool(config.get("always_save_checkpoint", False)),
    )


def check_best_val_loss(model: nn.Module, batches, meta: Mapping) -> str | None:
    """The warning of :func:`loss_check`, or None (passed, or nothing to check).

    Example:
        >>> model = nn.Embedding(5, 5)
        >>> _ = nn.init.zeros_(model.weight)
        >>> batches = [(torch.zeros(2, 3, dtype=torch.long), torch.ones(2, 3, dtype=torch.long))]
        >>> check_best_val_loss(model, batches, {"best_val_loss": 3.0, "split": "val"})[:64]
        'warning: the loss recomputed on the evaluation windows (1.6094) '
    """
    check = loss_check(model, batches, meta)
    return None if check is None else check.warning()


def load(
    path: str | Path,
    *,
    eval_set: EvalSet | None = None,
    model: str | Callable[[], nn.Module] | None = None,
    data: str | Callable[[], Any] | None = None,
    loss: str | Callable | None = None,
    task: str | None = None,
    data_dir: str | None = None,
    eval_examples: int | None = None,
    seed: int = 0,
    device: str | None = None,
    dtype: torch.dtype | None = None,
    data_seed: int | None = None,
    text: str | Path | None = None,
    block_size: int | None = None,
) -> tuple[nn.Module, list, Callable, CheckpointInfo]:
    """Rebuild ``(model, batches, loss_fn, info)`` from a checkpoint file.

    The evaluation set is ``eval_set`` (:class:`~hessnorm.inputs.EvalSet`), or built from
    its fields given as keywords (``data``, ``data_dir``, ``eval_examples`` = windows,
    ``data_seed``, ``text``, ``block_size``); not both.

    Args:
        eval_set: the evaluation set (one default for every format: 64 windows for
            language models, the task's evaluation split otherwise).
        path: a hessnorm run checkpoint, a nanoGPT ``ckpt.pt``, a state_dict
            ``.pt``/``.pth`` or a ``.safetensors`` file.
        model: for state_dicts, ``"module:factory"`` building the model (no args).
        data: for state_dicts, ``"module:function"`` returning the evaluation
            batches (a list of ``(inputs, targets)``); for nanoGPT checkpoints
            ``"builtin"`` reads the bundled byte-level corpus (only when asked: a
            nanoGPT checkpoint without ``data_dir`` or ``data="builtin"`` is an error).
        loss: ``"module:function"`` for the batch-mean loss (default cross-entropy).
        task: a trainer task name, instead of ``model``/``data`` for state_dicts.
        data_dir: nanoGPT data folder with ``val.bin`` (nanoGPT checkpoints), or the
            task's data folder.
        eval_examples: evaluation examples (sequences for language models; the
            task's default when None: 64 for gpt).
        seed: seeds the model a task builds before the weights are loaded (the
            evaluation set of every task is deterministic and does not depend on it).
        device, dtype: where and in which precision the model is returned.
        data_seed: language models (nanoGPT, hessnorm gpt runs): None (default) keeps
            the deterministic :func:`~hessnorm.train.tasks.lm_windows` rule; an int draws
            random window offsets with it (:func:`nanogpt_eval_windows`).
        text: Hugging Face folders only: the UTF-8 text file the evaluation windows
            are cut from (``eval_examples`` windows, 16 by default, of ``block_size``
            tokens, the model's context length up to 1024 by default, by
            :func:`hessnorm.train.tasks.lm_windows`).
        block_size: Hugging Face folders only: tokens per window.

    ``info`` is a :class:`~hessnorm.inputs.CheckpointInfo`: ``kind``, ``task``,
    ``optimizer``, ``step``, ``rotation``, ``notes``, the evaluation data used
    (``info.eval``: data, split, windows, tokens, rule, data seed), ``resample`` (a
    function ``k -> batches`` of the k-th independent evaluation set for language
    models, else None) and kind-specific ``extra`` facts. A nanoGPT checkpoint's
    recomputed loss is compared with its ``best_val_loss`` (:func:`check_best_val_loss`);
    a warning goes into ``notes``.

    Raises:
        CheckpointError: unreadable, unrecognised or mismatched checkpoints.
        ConfigError: a state_dict without ``model``/``data`` or ``task``.

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "w.safetensors"
        >>> from safetensors.torch import save_file
        >>> save_file(nn.Linear(2, 1).state_dict(), str(p))
        >>> net, batches, loss_fn, info = load(p, model=lambda: nn.Linear(2, 1),
        ...                                    data=lambda: [(torch.ones(1, 2), torch.zeros(1))])
        >>> info.kind, info.eval.rule, type(net).__name__
        ('state_dict', 'as given', 'Linear')
    """
    ev = _eval_set(
        eval_set,
        data=data,
        data_dir=data_dir,
        windows=eval_examples,
        data_seed=data_seed,
        text=text,
        block_size=block_size,
    )
    data, data_dir, eval_examples = ev.data, ev.data_dir, ev.windows
    data_seed, text, block_size = ev.data_seed, ev.text, ev.block_size
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
        return net, batches, loss_fn, CheckpointInfo.from_loader({"checkpoint": str(path), **meta})
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
            state,
            data_dir=data_dir,
            data=data,
            eval_examples=eval_examples,
            seed=seed,
            data_seed=data_seed,
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
    meta = {"checkpoint": str(path), **_data_meta(meta, eval_examples, data_seed, batches)}
    if kind == "nanogpt":
        check = loss_check(net, batches, meta)
        meta["loss_check"] = check
        if check is not None:
            meta["notes"] = [*meta["notes"], check.summary(), *filter(None, [check.warning()])]
    return net, batches, loss_fn, CheckpointInfo.from_loader(meta)


def _eval_set(eval_set: EvalSet | None, **fields: Any) -> EvalSet:
    """``eval_set``, or one built from its fields passed to :func:`load` as keywords."""
    given = {k: v for k, v in fields.items() if v is not None}
    if eval_set is None:
        return EvalSet(**given)
    if given:
        raise ConfigError(
            f"pass the evaluation set either as eval_set= or as keywords ({', '.join(given)}), "
            "not both"
        )
    return eval_set


def _data_meta(meta: dict, eval_examples, data_seed, batches) -> dict:
    """Fill the evaluation-data keys of ``meta`` for kinds whose loader did not."""
    meta = {"notes": [], "resample": None, **meta}
    if "eval_rule" in meta:
        return meta
    if meta.get("kind") == "hessnorm-run" and meta.get("task") == "gpt":
        return _gpt_run_data(meta, eval_examples, data_seed, batches)
    if data_seed is not None:
        raise ConfigError(
            f"data_seed (--data-seed / --eval-resamples) chooses language-model windows; a "
            f"{meta.get('kind')} checkpoint of task {meta.get('task')!r} has a fixed "
            "evaluation set"
        )
    n = sum(len(x) for x, _ in batches) if isinstance(batches, list) else None
    if meta.get("kind") == "hessnorm-run":
        opts = meta.get("task_options") or {}
        data = opts.get("data_dir") or f"built-in data of task {meta.get('task')}"
        rule = f"task {meta.get('task')}'s fixed evaluation split"
    else:
        opts = meta.get("task_options") or {}
        data = (
            "user data (--data)"
            if meta.get("task") == "user"
            else opts.get("data_dir") or f"task {meta.get('task')}"
        )
        rule = "as given" if meta.get("task") == "user" else "the task's fixed evaluation split"
    return {
        **meta,
        "data": str(data),
        "split": "eval",
        "eval_windows": n,
        "eval_tokens": None,
        "eval_rule": rule,
        "data_seed": None,
    }


def _gpt_run_data(meta: dict, eval_examples, data_seed, batches) -> dict:
    """Evaluation data of a hessnorm gpt run, and independent resamples of it."""
    from hessnorm.train.data import load_text

    opts = meta.get("task_options") or {}
    _, val, _ = load_text(opts.get("data_dir"))
    n = sum(len(x) for x, _ in batches)
    T = int(batches[0][0].shape[1])
    device = batches[0][0].device

    def resample(k):
        x, y, _ = nanogpt_eval_windows(val, n, T, data_seed=data_seed, resample=k)
        x, y = x.to(device), y.to(device)
        return [(x[i : i + _EVAL_BATCH], y[i : i + _EVAL_BATCH]) for i in range(0, n, _EVAL_BATCH)]

    rule = "lm_windows: evenly spaced starts (deterministic, offset 0)"
    if data_seed is not None:
        batches[:] = resample(None)
        rule = nanogpt_eval_windows(val, 1, T, data_seed=data_seed)[2]
    data = opts.get("data_dir")
    return {
        **meta,
        "data": str(Path(data) / "val.bin")
        if data
        else "builtin: hessnorm's byte-level stdlib corpus",
        "split": "val" if data else "eval (last 10%)",
        "eval_windows": n,
        "eval_tokens": T,
        "eval_rule": rule,
        "data_seed": data_seed,
        "resample": resample,
    }


def _task_data_options(task: str, data_dir: str | None) -> dict:
    """The task options that make ``task`` read its data from ``data_dir`` (if given)."""
    if data_dir is None:
        return {}
    if task == "gpt":
        return {"data_dir": str(data_dir)}
    if task == "resnet":
        return {"dataset": "cifar10", "data_dir": str(data_dir)}
    raise ConfigError(f"task {task!r} has no data folder; drop --data-dir")


def _user_model(state, *, model, data, loss, task, data_dir, eval_examples, seed):
    if task is not None:
        t = build_task(task, _task_data_options(task, data_dir), seed=seed)
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
            "task_options": _task_data_options(task, data_dir),
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
