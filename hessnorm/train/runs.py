"""The run-folder format of the reference trainer: list, save, load, rebuild.

A run folder holds ``config.json``, ``metrics.csv`` and ``ckpt_XXXXXX.pt`` files.

A checkpoint is a plain dict of tensors, dicts, lists and primitives, so it loads
with ``torch.load(weights_only=True)``. Keys: ``format``, ``task``,
``task_options`` (model config and data options), ``config`` (the TrainConfig as
a dict: optimizer, rotation spec, hyper-parameters), ``step``, ``model``
(state_dict), ``optimizer`` (state_dict), ``rng`` (data generator and torch
states), ``elapsed``, ``d``, ``param_names``, ``dtype``, ``corpus``.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from hessnorm._io import atomic_write, read_state
from hessnorm.errors import CheckpointError, ConfigError
from hessnorm.train.tasks import build_task

__all__ = [
    "FORMAT",
    "DTYPES",
    "checkpoint_name",
    "save_checkpoint",
    "load_checkpoint",
    "list_checkpoints",
    "rebuild",
]

DTYPES = {"float32": torch.float32, "float64": torch.float64}

FORMAT = "hessnorm-run/1"
_CKPT_RE = re.compile(r"^ckpt_(\d+)\.pt$")


def checkpoint_name(step: int) -> str:
    """File name of the checkpoint at ``step``.

    Example:
        >>> checkpoint_name(42)
        'ckpt_000042.pt'
    """
    return f"ckpt_{step:06d}.pt"


def save_checkpoint(path: str | Path, payload: dict) -> None:
    """Write ``payload`` (with ``format`` set) to ``path`` atomically.

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / checkpoint_name(1)
        >>> save_checkpoint(p, {"step": 1}); load_checkpoint(p)["step"]
        1
    """
    payload = {"format": FORMAT, **payload}
    atomic_write(path, lambda tmp: torch.save(payload, tmp))


def load_checkpoint(path_or_dict) -> dict:
    """A trainer checkpoint as a dict (read by :func:`hessnorm._io.read_state`, weights only).

    Raises:
        CheckpointError: no such file, an unreadable file, or not a trainer checkpoint.

    Example:
        >>> load_checkpoint({"format": FORMAT, "step": 3})["step"]
        3
    """
    ckpt = path_or_dict if isinstance(path_or_dict, dict) else read_state(path_or_dict)
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(
            f"not a hessnorm trainer checkpoint (format {FORMAT!r} expected); for nanoGPT "
            "or plain state_dicts use hessnorm.checkpoint instead."
        )
    return ckpt


def list_checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    """(step, path) of every complete ``ckpt_XXXXXX.pt`` in ``run_dir``, by step.

    A missing folder has none. Example:
        >>> list_checkpoints("/nonexistent")
        []
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in run_dir.iterdir() if (m := _CKPT_RE.match(p.name))]
    return sorted(found)


def rebuild(ckpt_path_or_dict, *, eval_examples=None, device=None, dtype=None):
    """Model, evaluation batches, loss and metadata of a trainer checkpoint.

    Returns ``(model, batches, loss_fn, meta)``: the model in eval mode with the
    checkpoint's weights; ``batches`` a fixed deterministic list of
    ``(inputs, targets)`` from the evaluation split (``eval_examples`` examples; None:
    the task's default); ``loss_fn(outputs, targets)`` the batch-mean loss; ``meta``
    with ``task``, ``task_options``, ``optimizer``, ``rotation``, ``step``, ``d``,
    ``param_names``, ``config``, ``dtype``. Ready for
    ``HessianOperator.from_module(model, loss_fn, batches)``. For the quadratic task
    the model holds x and returns R x per row (see :mod:`hessnorm.train.tasks`).

    Args:
        ckpt_path_or_dict: path of a ``ckpt_XXXXXX.pt`` or its loaded dict.
        eval_examples: size of the evaluation set.
        device: where to build (default: CPU).
        dtype: ``torch.float32``/``torch.float64`` or their names (default: the run's).

    Raises:
        CheckpointError: not a trainer checkpoint, or weights that do not fit.
        ConfigError: an unknown dtype.

    Example:
        >>> import tempfile
        >>> from hessnorm.train.loop import TrainConfig, train
        >>> out = train(TrainConfig(task="quadratic", steps=1, out=tempfile.mkdtemp(),
        ...                         progress=False, task_options={"d": 20}))
        >>> model, batches, loss_fn, meta = rebuild(out["checkpoint"])
        >>> meta["task"], meta["step"], meta["d"]
        ('quadratic', 1, 20)
    """
    ckpt = load_checkpoint(ckpt_path_or_dict)
    if isinstance(dtype, str):
        if dtype not in DTYPES:
            raise ConfigError(f"unknown dtype {dtype!r}; use float32 or float64.")
        dtype = DTYPES[dtype]
    dtype = dtype or DTYPES[ckpt["dtype"]]
    device = torch.device(device or "cpu")
    cfg = ckpt["config"]
    task = build_task(
        ckpt["task"], ckpt["task_options"], seed=cfg["seed"], dtype=dtype, device=device
    )
    try:
        task.model.load_state_dict(ckpt["model"])
    except RuntimeError as exc:
        raise CheckpointError(f"checkpoint weights do not fit the rebuilt model: {exc}") from exc
    task.model.to(dtype=dtype)
    task.model.eval()
    if eval_examples is None:
        eval_examples = task.defaults["eval_examples"]
    meta = dict(
        task=ckpt["task"],
        task_options=ckpt["task_options"],
        optimizer=cfg["optimizer"],
        rotation=cfg["rotation"] if cfg["optimizer"] == "rotated-adam" else None,
        step=int(ckpt["step"]),
        d=int(ckpt["d"]),
        param_names=list(ckpt["param_names"]),
        config=cfg,
        dtype=str(dtype).replace("torch.", ""),
        lr=ckpt.get("lr"),
        corpus=ckpt.get("corpus"),
    )
    return task.model, task.eval_batches(eval_examples), task.loss_fn, meta
