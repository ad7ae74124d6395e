"""Self-describing, atomically written checkpoints of the reference trainer.

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

from hessnorm._io import atomic_write
from hessnorm.errors import CheckpointError

__all__ = ["FORMAT", "save_checkpoint", "load_checkpoint", "list_checkpoints", "atomic_write"]

FORMAT = "hessnorm-run/1"
_CKPT_RE = re.compile(r"^ckpt_(\d+)\.pt$")


def checkpoint_name(step: int) -> str:
    return f"ckpt_{step:06d}.pt"


def save_checkpoint(path: str | Path, payload: dict) -> None:
    """Write ``payload`` (with ``format`` set) to ``path`` atomically."""
    payload = {"format": FORMAT, **payload}
    atomic_write(path, lambda tmp: torch.save(payload, tmp))


def load_checkpoint(path_or_dict, map_location="cpu") -> dict:
    """A trainer checkpoint as a dict, read with ``weights_only=True``."""
    if isinstance(path_or_dict, dict):
        ckpt = path_or_dict
    else:
        path = Path(path_or_dict)
        if not path.is_file():
            raise CheckpointError(f"checkpoint {path} does not exist.")
        try:
            ckpt = torch.load(path, map_location=map_location, weights_only=True)
        except Exception as exc:  # noqa: BLE001 - re-raised with the file name
            raise CheckpointError(
                f"cannot read {path} as a hessnorm checkpoint with weights_only=True: {exc}"
            ) from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(
            f"not a hessnorm trainer checkpoint (format {FORMAT!r} expected); for nanoGPT "
            "or plain state_dicts use hessnorm.checkpoint instead."
        )
    return ckpt


def list_checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    """(step, path) of every complete ``ckpt_XXXXXX.pt`` in ``run_dir``, by step."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in run_dir.iterdir() if (m := _CKPT_RE.match(p.name))]
    return sorted(found)
