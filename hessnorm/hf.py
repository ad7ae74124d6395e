"""Hugging Face causal language models: load a ``save_pretrained`` folder, cut a text into
evaluation windows with the folder's tokenizer, and build the :class:`HessianOperator`.

Everything here needs the optional extra ``pip install "hessnorm[hf]"`` (``transformers``);
it is imported lazily, so ``import hessnorm`` never needs it. Nothing is ever downloaded:
every ``from_pretrained`` call is made with ``local_files_only=True``.

The Hessian is that of the mean next-token cross-entropy (:func:`causal_lm_loss`) over
``n`` windows of ``block_size`` tokens chosen by one deterministic rule
(:func:`hessnorm.train.tasks.lm_windows`), in eval mode (dropout off), with attention through PyTorch's math
kernel (the fused kernels have no double backward). Example::

    from hessnorm import spectral_norm
    from hessnorm.hf import hf_operator

    op, info = hf_operator("gpt2-folder", "val.txt", n=16, block_size=256)
    print(info["data"], info["attn_implementation"])
    print(spectral_norm(op))
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hessnorm.errors import CheckpointError, ConfigError, HessnormError, MissingDependencyError
from hessnorm.inputs import DEFAULT_LM_WINDOWS
from hessnorm.operator import HessianOperator
from hessnorm.train.tasks import lm_windows

__all__ = [
    "MissingDependencyError",
    "load_causal_lm",
    "load_tokenizer",
    "text_windows",
    "causal_lm_loss",
    "LogitsOnly",
    "hf_operator",
    "causal_lm_batches",
    "WINDOW_RULE",
    "SUPPORTED_ATTENTION",
]

#: Attention implementations whose HVPs hessnorm can compute (both end in plain ops).
SUPPORTED_ATTENTION = ("sdpa", "eager")

#: The evaluation-window rule, in words (also in :func:`hessnorm.train.tasks.lm_windows`).
WINDOW_RULE = (
    "n windows of block_size+1 consecutive tokens whose starts are spread evenly over the "
    "token array: start_i = floor(i * (N - block_size - 1) / (n - 1)) for i = 0..n-1 "
    "(start_0 = 0 when n = 1), inputs = window[:-1], targets = window[1:]"
)

_WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt")
_DEFAULT_MAX_BLOCK = 1024


def transformers_module():
    """Import ``transformers`` or say how to install it.

    Raises:
        MissingDependencyError: ``transformers`` is not installed.

    Example:
        >>> try:
        ...     print(transformers_module().__name__)
        ... except MissingDependencyError as exc:  # without the extra
        ...     print("transformers" if "hessnorm[hf]" in str(exc) else exc)
        transformers
    """
    try:
        return importlib.import_module("transformers")
    except ImportError as exc:
        raise MissingDependencyError(
            "Hugging Face support needs the `transformers` package, which is not installed. "
            'Install the extra with: pip install "hessnorm[hf]"'
        ) from exc


def _folder(model_dir: str | os.PathLike) -> Path:
    path = Path(model_dir)
    if not path.is_dir():
        raise CheckpointError(
            f"{str(path)!r} is not a folder; a Hugging Face model is a folder written by "
            "model.save_pretrained(...) holding config.json and the weights"
        )
    if not (path / "config.json").is_file():
        raise CheckpointError(
            f"{str(path)!r} has no config.json, so it is not a save_pretrained folder "
            f"(it holds: {sorted(p.name for p in path.iterdir())[:20]})"
        )
    return path


def _read_config(path: Path) -> dict[str, Any]:
    try:
        with open(path / "config.json", encoding="utf-8") as f:
            raw = json.load(f)
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"cannot read {path / 'config.json'}: {exc}") from exc
    if not isinstance(raw, dict):
        raise CheckpointError(f"{path / 'config.json'} does not hold a JSON object")
    return raw


def _causal_lm_classes(tf) -> dict[str, set[str]]:
    """model_type -> names of the AutoModelForCausalLM classes for it."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    out: dict[str, set[str]] = {}
    for model_type, names in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.items():
        out[model_type] = {names} if isinstance(names, str) else set(names)
    return out


def _check_architecture(tf, raw: Mapping[str, Any], path: Path) -> str:
    """Return the class name to load, or raise naming what is supported."""
    classes = _causal_lm_classes(tf)
    model_type = raw.get("model_type")
    archs = raw.get("architectures") or []
    examples = "GPT2LMHeadModel, LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM, ..."
    supported = (
        "hessnorm supports causal language models, the classes AutoModelForCausalLM loads "
        f"({examples}); other heads (sequence classification, masked LM, seq2seq, "
        "vision) are not supported yet"
    )
    if model_type not in classes and model_type is not None:
        from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

        known = model_type in CONFIG_MAPPING_NAMES
        what = (
            f"model_type {model_type!r} has no causal-LM class in transformers {tf.__version__}"
            if known
            else f"model_type {model_type!r} is not an architecture transformers "
            f"{tf.__version__} knows (a newer transformers or a custom-code model?)"
        )
        raise CheckpointError(f"{path}: {what}. {supported}.")
    if model_type is None:
        raise CheckpointError(f"{path}/config.json has no model_type. {supported}.")
    if archs:
        arch = archs[0]
        if arch not in classes[model_type]:
            raise CheckpointError(
                f"{path} holds a {arch} (config.json 'architectures'), which is not a causal "
                f"language model: for model_type {model_type!r} the causal-LM class is "
                f"{sorted(classes[model_type])}. {supported}."
            )
        return arch
    return sorted(classes[model_type])[0]


def _attention(raw: Mapping[str, Any], requested: str | None) -> str | None:
    """The attention implementation to ask for, refusing the ones without HVPs."""
    configured = raw.get("attn_implementation") or raw.get("_attn_implementation")
    chosen = requested if requested is not None else configured
    if chosen is None or chosen in SUPPORTED_ATTENTION:
        return chosen
    source = "requested" if requested is not None else "set in config.json"
    flash = "flash" in str(chosen)
    why = (
        "FlashAttention kernels define neither double backward nor forward-mode AD, so "
        "no Hessian-vector product can pass through them"
        if flash
        else "hessnorm computes HVPs only through attention built from plain differentiable ops"
    )
    raise ConfigError(
        f"attention implementation {chosen!r} ({source}) is not supported: {why}. "
        'Load with attn_implementation="sdpa" (routed to the math kernel) or '
        'attn_implementation="eager"; the weights are the same.'
    )


def _dropout_note(raw: Mapping[str, Any]) -> str | None:
    rates = {
        k: v
        for k, v in raw.items()
        if ("dropout" in k or "pdrop" in k)
        and isinstance(v, (int, float))
        and not isinstance(v, bool)
        and v > 0
    }
    if not rates:
        return None
    listed = ", ".join(f"{k}={v}" for k, v in sorted(rates.items()))
    return (
        f"config.json sets dropout ({listed}); the model is evaluated in eval mode, so "
        "dropout is off and the Hessian is that of the deterministic loss"
    )


def _weight_files(path: Path, weights: list[str]) -> list[Path]:
    """The weight files themselves: single files, and the shards an index names."""
    files = [path / w for w in weights if not w.endswith(".json")]
    for index in (w for w in weights if w.endswith(".json")):
        try:
            shards = json.loads((path / index).read_text()).get("weight_map", {}).values()
        except (OSError, ValueError, AttributeError):
            continue
        files += [path / s for s in sorted(set(shards)) if (path / s).is_file()]
    return files


def load_causal_lm(
    model_dir: str | os.PathLike,
    *,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    attn_implementation: str | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """Load a Hugging Face causal language model from a ``save_pretrained`` folder.

    The folder holds ``config.json`` and the weights: ``model.safetensors``, sharded
    safetensors with ``model.safetensors.index.json``, or ``pytorch_model.bin`` (read
    with ``torch.load(weights_only=True)`` only, so a pickle can run no code). The
    class is the one ``AutoModelForCausalLM`` maps the config to; it must match the
    saved ``architectures`` entry, so a classifier folder is refused rather than
    silently given a random LM head. Every weight of the model must be in the files.

    Weights are cast to ``dtype`` (float32 by default, also for bf16 checkpoints; the
    stored dtype is reported). The model is returned in eval mode, which switches off
    the dropout the config may set, with ``config.use_cache = False`` (no KV cache).

    Attention: ``"sdpa"`` (transformers' default) and ``"eager"`` both work; hessnorm's
    operator runs sdpa through PyTorch's math kernel. ``"flash_attention_2"`` (in the
    config or requested) is refused. Note that transformers computes a few parts in
    float32 on purpose even in a float64 model (Llama-style RMSNorm, the eager softmax
    of some models, rotary tables), so float64 HVPs of such models carry float32
    rounding (about 1e-7 relative).

    Args:
        model_dir: the folder.
        dtype: floating dtype of the returned weights.
        device: where to put the model.
        attn_implementation: ``"sdpa"`` or ``"eager"``; None keeps the config's choice
            (or transformers' default).

    Returns:
        ``(model, info)``: the model, and a dict with ``architecture``, ``model_type``,
        ``weights`` (file names), ``stored_dtype``, ``dtype``, ``attn_implementation``,
        ``n_params`` (tied tensors counted once) and ``notes`` (sentences to show the
        user: dropout switched off, dtype cast, float32 internals).

    Raises:
        MissingDependencyError: transformers is not installed.
        CheckpointError: not a folder, no weights, unknown architecture or a
            non-causal-LM head, missing weights, unsafe ``.bin``.
        ConfigError: an unsupported attention implementation.

    Example:
        >>> import tempfile, pathlib
        >>> from hessnorm.testing import tiny_hf_folder
        >>> folder = tiny_hf_folder(pathlib.Path(tempfile.mkdtemp()) / "gpt2")
        >>> model, info = load_causal_lm(folder, dtype=torch.float64)
        >>> info["architecture"], info["n_params"], info["dtype"], model.training
        ('GPT2LMHeadModel', 3064, 'float64', False)
        >>> [note[:34] for note in info["notes"]]  # GPT-2 configs set dropout; eval mode drops it
        ['config.json sets dropout (attn_pdr', 'weights stored in float32 are eval']
    """
    tf = transformers_module()
    path = _folder(model_dir)
    raw = _read_config(path)
    arch = _check_architecture(tf, raw, path)
    attn = _attention(raw, attn_implementation)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ConfigError(f"dtype must be a floating torch.dtype, got {dtype!r}")
    weights = [f for f in _WEIGHT_FILES if (path / f).is_file()]
    if not weights:
        raise CheckpointError(
            f"{path} has config.json but no weights: expected one of {list(_WEIGHT_FILES)} "
            "as model.save_pretrained writes them"
        )
    safetensors = any(w.startswith("model.safetensors") for w in weights)
    load = tf.AutoModelForCausalLM.from_pretrained
    params = inspect.signature(tf.PreTrainedModel.from_pretrained).parameters
    kwargs: dict[str, Any] = {"local_files_only": True, "output_loading_info": True}
    if not safetensors:
        if "weights_only" not in params:
            raise CheckpointError(
                f"{path} holds only pytorch_model.bin, and transformers {tf.__version__} "
                "cannot promise to read it with torch.load(weights_only=True); upgrade "
                "transformers or convert the weights to safetensors"
            )
    if "weights_only" in params:
        kwargs["weights_only"] = True
    # transformers 4.56 renamed torch_dtype to dtype (and warns on the old name)
    major, minor = (int(p) for p in tf.__version__.split(".")[:2])
    kwargs["dtype" if (major, minor) >= (4, 56) else "torch_dtype"] = dtype
    if attn is not None:
        kwargs["attn_implementation"] = attn
    try:
        model, loading = load(str(path), **kwargs)
    except HessnormError:
        raise
    except Exception as exc:  # transformers raises OSError, ValueError, pickle errors...
        from hessnorm._files import diagnose_file

        damaged = [m for m in (diagnose_file(f) for f in _weight_files(path, weights)) if m]
        if damaged:
            raise CheckpointError("; ".join(damaged)) from exc
        raise CheckpointError(
            f"transformers could not load {path} as {arch}: {type(exc).__name__}: {exc}"
        ) from exc
    # shape mismatches already raise inside transformers (ignore_mismatched_sizes=False)
    missing = sorted(loading.get("missing_keys") or [])
    if missing:
        raise CheckpointError(
            f"{path}: the weight files do not hold every tensor of {arch} (missing: "
            f"{missing[:8]}{' ...' if len(missing) > 8 else ''}); transformers would "
            "initialise them at random, so the Hessian would not be that of the saved model"
        )
    model.config.use_cache = False
    model = model.to(device=device)
    model.eval()
    stored = raw.get("dtype") or raw.get("torch_dtype")
    used_attn = getattr(model.config, "_attn_implementation", None) or attn or "eager"
    notes = []
    drop = _dropout_note(raw)
    if drop:
        notes.append(drop)
    if stored and str(stored) != str(dtype).removeprefix("torch."):
        notes.append(f"weights stored in {stored} are evaluated in {dtype}")
    if dtype == torch.float64 and any("RMSNorm" in type(m).__name__ for m in model.modules()):
        notes.append(
            "transformers computes RMSNorm (and some softmaxes and rotary tables) in float32 "
            "even in a float64 model; float64 results carry float32 rounding in those parts"
        )
    info = {
        "model_dir": str(path),
        "architecture": type(model).__name__,
        "model_type": raw.get("model_type"),
        "weights": weights,
        "stored_dtype": stored,
        "dtype": str(dtype).removeprefix("torch."),
        "attn_implementation": used_attn,
        "n_params": sum(p.numel() for p in model.parameters()),
        "notes": notes,
    }
    return model, info


def load_tokenizer(model_dir: str | os.PathLike):
    """The tokenizer saved in a ``save_pretrained`` folder (never downloaded).

    Args:
        model_dir: the folder; it must hold ``tokenizer.json`` (fast tokenizers),
            ``tokenizer.model`` (sentencepiece), ``vocab.json`` + ``merges.txt`` (BPE)
            or ``vocab.txt`` (WordPiece), as ``tokenizer.save_pretrained`` writes them.

    Returns:
        A transformers tokenizer.

    Raises:
        MissingDependencyError, CheckpointError (no tokenizer files, or unreadable).

    Example:
        >>> import tempfile, pathlib
        >>> from hessnorm.testing import tiny_hf_folder
        >>> folder = tiny_hf_folder(pathlib.Path(tempfile.mkdtemp()) / "gpt2")
        >>> tok = load_tokenizer(folder)  # byte-level, no merges: ids are the UTF-8 bytes
        >>> tok("héllo", add_special_tokens=False)["input_ids"] == list("héllo".encode())
        True
    """
    tf = transformers_module()
    path = Path(model_dir)
    if not path.is_dir():
        raise CheckpointError(f"{str(path)!r} is not a folder")
    present = [f for f in _TOKENIZER_FILES if (path / f).is_file()]
    if not present:
        raise CheckpointError(
            f"{path} holds no tokenizer (none of {list(_TOKENIZER_FILES)}), and hessnorm "
            "downloads nothing. Save it next to the model with "
            "tokenizer.save_pretrained(MODEL_DIR)."
        )
    try:
        return tf.AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except Exception as exc:
        raise CheckpointError(
            f"transformers could not load the tokenizer in {path} (files {present}): "
            f"{type(exc).__name__}: {exc}"
        ) from exc


def _check_window_args(n: Any, block_size: Any) -> None:
    for name, value in (("the number of windows n", n), ("block_size", block_size)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ConfigError(f"{name} must be a positive integer, got {value!r}")


def _tokenize(tokenizer, text: str) -> list[int]:
    # the file is one stream of text, as nanoGPT's val.bin: no BOS/EOS added
    return list(tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])


def text_windows(
    model_dir: str | os.PathLike,
    text_path: str | os.PathLike,
    *,
    n: int,
    block_size: int,
    tokenizer=None,
) -> tuple[Tensor, Tensor, int]:
    """Tokenize a text file with the folder's tokenizer and cut evaluation windows.

    The whole file is tokenized as one stream (``add_special_tokens=False``), then
    :func:`hessnorm.train.tasks.lm_windows` picks ``n`` non-overlapping windows (rule: ``WINDOW_RULE``).

    Args:
        model_dir: ``save_pretrained`` folder holding the tokenizer.
        text_path: UTF-8 text file.
        n: number of windows.
        block_size: input tokens per window T.
        tokenizer: an already loaded tokenizer (default: :func:`load_tokenizer`).

    Returns:
        ``(inputs, targets, n_tokens)``: int64 (n, T) tensors and the token count of
        the file.

    Raises:
        CheckpointError: no tokenizer. ConfigError: unreadable text, or fewer than
        ``n (block_size + 1)`` tokens (the message says how many there are).

    Example:
        26 one-byte tokens, 2 windows of 4 + 1 tokens starting at 0 and 26 − 5 = 21:

        >>> import tempfile, pathlib
        >>> from hessnorm.testing import tiny_hf_folder
        >>> folder = tiny_hf_folder(pathlib.Path(tempfile.mkdtemp()) / "gpt2")
        >>> text = folder.parent / "val.txt"
        >>> _ = text.write_text("abcdefghijklmnopqrstuvwxyz", encoding="utf-8")
        >>> x, y, n_tokens = text_windows(folder, text, n=2, block_size=4)
        >>> n_tokens, [bytes(r) for r in x.tolist()], bytes(y[1].tolist())
        (26, [b'abcd', b'vwxy'], b'wxyz')
    """
    _check_window_args(n, block_size)
    tok = tokenizer if tokenizer is not None else load_tokenizer(model_dir)
    try:
        text = Path(text_path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the text file {str(text_path)!r}: {exc}") from exc
    ids = _tokenize(tok, text)
    need = int(n) * (int(block_size) + 1)
    if len(ids) < need:
        fit_n = len(ids) // (block_size + 1)
        fit_t = len(ids) // n - 1
        fixes = [f"at most {fit_n} windows (--eval-examples)"] if fit_n >= 1 else []
        if fit_t >= 1:
            fixes.append(f"a block size of at most {fit_t} (--block-size)")
        fixes.append("a longer text")
        raise ConfigError(
            f"{text_path} has {len(ids)} tokens, too few for {n} windows of "
            f"block_size+1 = {block_size + 1} tokens ({need} needed). Use "
            + ", or ".join(fixes)
            + "."
        )
    x, y = lm_windows(ids, n, block_size)
    return x, y, len(ids)


def causal_lm_loss(outputs: Any, targets: Tensor, *, ignore_index: int = -100) -> Tensor:
    """Mean next-token cross-entropy of a causal LM over every target position.

    ``L = (1/|P|) sum_{(b,t) in P} -log softmax(logits[b, t])[targets[b, t]]`` where
    ``P`` holds every position of the (B, T) targets except those equal to
    ``ignore_index`` (transformers' padding convention, -100). The targets are already
    shifted (``targets[b, t]`` is the token after ``inputs[b, t]``, as
    :func:`~hessnorm.train.tasks.lm_windows` builds them), so no shift happens here, unlike
    ``model(input_ids, labels=...)`` which shifts labels itself. Windows from
    :func:`~hessnorm.train.tasks.lm_windows` ignore nothing, so batch means weighted by window count (what
    :class:`HessianOperator` does) give the mean over all tokens. The logits are used
    in their own dtype (transformers' labels path casts them to float32).

    Args:
        outputs: a Hugging Face ``ModelOutput`` (its ``.logits`` is used) or a logits
            tensor of shape (B, T, V).
        targets: int64 tensor (B, T).
        ignore_index: target value to leave out.

    Returns:
        A scalar tensor.

    Example:
        >>> logits = torch.zeros(1, 2, 4)
        >>> round(float(causal_lm_loss(logits, torch.tensor([[1, 3]]))), 6) == round(float(torch.log(torch.tensor(4.0))), 6)
        True
    """
    logits = outputs if isinstance(outputs, Tensor) else getattr(outputs, "logits", None)
    if not isinstance(logits, Tensor):
        raise ConfigError(
            "causal_lm_loss needs logits: a tensor (B, T, V) or a model output with "
            f".logits, got {type(outputs).__name__}"
        )
    if logits.shape[:-1] != targets.shape:
        raise ConfigError(
            f"logits of shape {tuple(logits.shape)} do not match targets of shape "
            f"{tuple(targets.shape)}: expected (B, T, V) and (B, T)"
        )
    return F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=ignore_index
    )


class LogitsOnly(nn.Module):
    """A Hugging Face model whose ``forward(input_ids)`` returns the logits tensor.

    For losses that want a tensor (e.g. ``F.cross_entropy`` on reshaped logits). The
    wrapped model's submodules are registered directly on the adapter, so parameter
    names stay exactly those of the Hugging Face ``state_dict`` (``transformer.wte.weight``,
    not ``model.transformer.wte.weight``) and per-tensor breakdowns read naturally;
    tied tensors (GPT-2's ``lm_head.weight`` is ``transformer.wte.weight``) are still
    one parameter.

    Args:
        model: a transformers causal LM.

    Example:
        >>> import tempfile, pathlib
        >>> from hessnorm.testing import tiny_hf_folder
        >>> folder = tiny_hf_folder(pathlib.Path(tempfile.mkdtemp()) / "gpt2")
        >>> model, _ = load_causal_lm(folder)
        >>> wrapped = LogitsOnly(model)
        >>> wrapped(torch.zeros(2, 5, dtype=torch.long)).shape  # (B, T, vocabulary)
        torch.Size([2, 5, 256])
        >>> [n for n, _ in wrapped.named_parameters()] == [n for n, _ in model.named_parameters()]
        True
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        if any(True for _ in model.named_parameters(recurse=False)) or any(
            True for _ in model.named_buffers(recurse=False)
        ):
            raise ConfigError(
                f"{type(model).__name__} holds tensors on its root module; LogitsOnly "
                "keeps names only for models whose tensors all live in submodules"
            )
        object.__setattr__(self, "_hf", model)  # not a submodule: no name prefix
        for name, child in model.named_children():
            self.add_module(name, child)
        self.training = model.training

    def train(self, mode: bool = True) -> LogitsOnly:
        super().train(mode)
        self._hf.training = mode
        return self

    def forward(self, input_ids: Tensor) -> Tensor:
        return self._hf(input_ids).logits


def causal_lm_batches(
    model_dir: str | os.PathLike,
    text_path: str | os.PathLike,
    *,
    n: int = DEFAULT_LM_WINDOWS,
    block_size: int | None = None,
    dtype: torch.dtype = torch.float32,
    batch_size: int = 8,
    device: str | torch.device = "cpu",
    attn_implementation: str | None = None,
) -> tuple[nn.Module, list[tuple[Tensor, Tensor]], dict[str, Any]]:
    """A Hugging Face causal LM and its evaluation batches from a text file.

    What :func:`hf_operator` and ``hessnorm analyze MODEL_DIR --text FILE`` build the
    operator from: the model (:func:`load_causal_lm`), ``n`` windows of
    ``block_size`` tokens of ``text_path`` (:func:`text_windows`, rule
    ``WINDOW_RULE``) in batches of ``batch_size``; the loss is :func:`causal_lm_loss`.
    Arguments as in :func:`hf_operator`.

    Returns:
        ``(model, batches, info)``; ``info`` as :func:`hf_operator` describes it.

    Example:
        >>> import tempfile, pathlib
        >>> from hessnorm.testing import tiny_hf_folder
        >>> folder = tiny_hf_folder(pathlib.Path(tempfile.mkdtemp()) / "gpt2")
        >>> text = folder.parent / "val.txt"
        >>> _ = text.write_text("abcdefghijklmnopqrstuvwxyz", encoding="utf-8")
        >>> model, batches, info = causal_lm_batches(folder, text, n=3, block_size=4, batch_size=2)
        >>> [tuple(x.shape) for x, _ in batches], info["n_tokens_text"], info["block_size"]
        ([(2, 4), (1, 4)], 26, 4)
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
    model, info = load_causal_lm(
        model_dir, dtype=dtype, device=device, attn_implementation=attn_implementation
    )
    context = getattr(model.config, "max_position_embeddings", None)
    if block_size is None:
        block_size = min(context or _DEFAULT_MAX_BLOCK, _DEFAULT_MAX_BLOCK)
    elif context is not None and block_size > context:
        raise ConfigError(
            f"block_size {block_size} exceeds the model's context length {context} "
            "(max_position_embeddings); use a block size of at most that"
        )
    tok = load_tokenizer(model_dir)
    x, y, n_text = text_windows(model_dir, text_path, n=n, block_size=block_size, tokenizer=tok)
    vocab = model.get_input_embeddings().weight.shape[0]
    top = int(torch.maximum(x.max(), y.max()))
    if top >= vocab:
        raise CheckpointError(
            f"the tokenizer in {model_dir} produced token id {top}, outside the model's "
            f"vocabulary of {vocab}: tokenizer and weights do not belong together"
        )
    batches = [(x[i : i + batch_size], y[i : i + batch_size]) for i in range(0, n, batch_size)]
    data = f"{text_path}: {n} windows x {block_size} tokens ({n * block_size} predicted tokens)"
    info = dict(info)
    info.update(
        text=str(text_path),
        n_windows=int(n),
        block_size=int(block_size),
        n_tokens_text=n_text,
        window_rule=WINDOW_RULE,
        data=data,
    )
    return model, batches, info


def hf_operator(
    model_dir: str | os.PathLike,
    text_path: str | os.PathLike,
    *,
    n: int = DEFAULT_LM_WINDOWS,
    block_size: int | None = None,
    dtype: torch.dtype = torch.float32,
    batch_size: int = 8,
    device: str | torch.device = "cpu",
    attn_implementation: str | None = None,
    params=None,
    mode: str = "auto",
) -> tuple[HessianOperator, dict[str, Any]]:
    """The Hessian operator of a Hugging Face causal LM on windows of a text file.

    Loads the model (:func:`load_causal_lm`) and the tokenizer of ``model_dir``, cuts
    ``n`` windows of ``block_size`` tokens from ``text_path`` (:func:`text_windows`,
    rule ``WINDOW_RULE``) and returns the Hessian of the mean token cross-entropy
    (:func:`causal_lm_loss`) over all ``n * block_size`` predicted tokens. Parameter
    names are those of the model's ``state_dict``; tied weights are one tensor. One
    HVP costs about two forward-backward passes over the ``n`` windows.

    Args:
        model_dir: ``save_pretrained`` folder with config, weights and tokenizer.
        text_path: evaluation text (UTF-8).
        n: number of windows.
        block_size: tokens per window; None uses the model's context length, at most 1024.
        dtype: compute dtype (float32 default; float64 for reference numbers).
        batch_size: windows per forward pass.
        device: compute device.
        attn_implementation: ``"sdpa"``/``"eager"``, or None for the folder's choice.
        params: parameter selection, as in :meth:`HessianOperator.from_module`.
        mode: HVP strategy, as in :meth:`HessianOperator.from_module`.

    Returns:
        ``(op, info)``; ``info`` has the keys of :func:`load_causal_lm`'s info plus
        ``text``, ``n_windows``, ``block_size``, ``n_tokens_text``, ``window_rule``
        and ``data`` (one line naming the evaluation set).

    Example:
        The operator's loss is :func:`causal_lm_loss` on the windows:

        >>> import tempfile, pathlib
        >>> from hessnorm.testing import tiny_hf_folder
        >>> folder = tiny_hf_folder(pathlib.Path(tempfile.mkdtemp()) / "gpt2")
        >>> text = folder.parent / "val.txt"
        >>> _ = text.write_text("abcdefghijklmnopqrstuvwxyz", encoding="utf-8")
        >>> op, info = hf_operator(folder, text, n=2, block_size=4, dtype=torch.float64)
        >>> op.d, info["data"].endswith("2 windows x 4 tokens (8 predicted tokens)")
        (3064, True)
        >>> model, [(x, y)], _ = causal_lm_batches(folder, text, n=2, block_size=4, dtype=torch.float64)
        >>> with torch.no_grad():
        ...     ref = causal_lm_loss(model(x), y)
        >>> abs(float(op.loss()) - float(ref)) < 1e-12
        True
    """
    model, batches, info = causal_lm_batches(
        model_dir,
        text_path,
        n=n,
        block_size=block_size,
        dtype=dtype,
        batch_size=batch_size,
        device=device,
        attn_implementation=attn_implementation,
    )
    op = HessianOperator.from_module(
        model, causal_lm_loss, batches, params=params, dtype=dtype, device=device, mode=mode
    )
    op.description = (
        f"{info['architecture']} ({info['attn_implementation']} attention) on {info['data']}"
    )
    return op, info
