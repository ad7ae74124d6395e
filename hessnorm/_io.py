"""File I/O shared by every layer: atomic writes, and the one safe ``torch.load``.

Atomic writes: readers see the old file or the new one, never half of one.
:func:`read_state` is the only place hessnorm calls ``torch.load`` (always with
``weights_only=True``); it lives here, at the bottom of the import graph, so that
both :mod:`hessnorm.checkpoint` and :mod:`hessnorm.train.runs` use it without
importing each other.
"""

from __future__ import annotations

import os
import pickle
import re
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hessnorm._files import diagnose_file, is_torch_save
from hessnorm.errors import CheckpointError

__all__ = ["atomic_write", "atomic_write_bytes", "read_state"]


def atomic_write(path: str | Path, write: Callable[[str], object]) -> None:
    """Call ``write(tmp_path)``, flush it to disk, then rename it onto ``path``.

    The temporary file lives in the target folder (so the rename is atomic) and gets
    the usual file mode (mkstemp's 0600 would surprise users). On any error, the
    temporary file is removed and ``path`` is left untouched.

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "a.txt"
        >>> atomic_write(p, lambda tmp: pathlib.Path(tmp).write_text("hi"))
        >>> p.read_text()
        'hi'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # created with mode 0o666 so that the kernel applies the umask (no os.umask call,
    # which would set the process-wide umask and race with other threads)
    tmp = str(path.parent / f".{path.name}.{uuid.uuid4().hex}.tmp")
    os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
    try:
        write(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically.

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "b.bin"
        >>> atomic_write_bytes(p, b"xy"); p.read_bytes()
        b'xy'
    """
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def read_state(path: str | Path) -> Any:
    """Read a ``.pt``/``.pth``/``.safetensors`` file without executing any code.

    ``.pt`` files go through ``torch.load(weights_only=True)`` on the CPU; one that
    needs arbitrary unpickling is refused (never executed) with a message saying
    how to re-save it.

    Raises:
        CheckpointError: no such file, one that needs unpickling, or an unreadable
            file: a damaged one (truncated, empty, not a checkpoint, a broken
            safetensors header) is described by :func:`hessnorm._files.diagnose_file`.

    Example:
        >>> import tempfile, pathlib, torch
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "w.pt"
        >>> torch.save({"w": torch.ones(2)}, p)
        >>> read_state(p)["w"].tolist()
        [1.0, 1.0]
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as exc:
            raise CheckpointError(
                diagnose_file(path) or f"{path} is not a readable safetensors file: {exc}"
            ) from exc
    if path.stat().st_size == 0:
        raise CheckpointError(diagnose_file(path))
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if not is_torch_save(path):  # random bytes also fail as "unpickling"
            raise CheckpointError(diagnose_file(path)) from exc
        raise CheckpointError(
            f"refused to load {path}: it needs arbitrary unpickling (weights_only=True "
            f"rejected it: {_first_sentence(exc)}). Unpickling can run any code, "
            "so hessnorm never does it. If you trust the file, re-save only its tensors: "
            "torch.save(model.state_dict(), 'weights.pt') or safetensors.torch.save_file."
        ) from exc
    except Exception as exc:
        reason = f"{_first_sentence(exc) or type(exc).__name__}"
        found = diagnose_file(path)
        raise CheckpointError(
            f"{found} (torch.load said: {reason})"
            if found
            else f"cannot read {path} with torch.load(weights_only=True): {reason}"
        ) from exc


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _first_sentence(exc: BaseException) -> str:
    r"""The reason in an exception message: ANSI codes removed, one whole sentence.

    torch's refusal is a page of advice; its reason follows "WeightsUnpickler error:".

    Example:
        >>> _first_sentence(ValueError("\x1b[1mBad.\x1b[0m\n WeightsUnpickler error: Unsupported "
        ...                            "global: GLOBAL a.B was not allowed. Please use x."))
        'Unsupported global: GLOBAL a.B was not allowed.'
    """
    text = " ".join(_ANSI.sub("", str(exc)).split())
    marker = "WeightsUnpickler error:"
    if marker in text:
        text = text.split(marker, 1)[1].strip()
        text = text.split(" Check the documentation of torch.load")[0]
    end = text.find(". ")
    return text if end < 0 else text[: end + 1]
