"""Say what is wrong with a checkpoint file that a loader could not read.

``torch.load`` and safetensors report damage in their own terms ("[Errno 22] Invalid
argument", "failed finding central directory", "HeaderTooLarge"), which do not say
that the file is incomplete, nor which file. :func:`diagnose_file` looks at the bytes
themselves (the first few and the last 64 KiB; never the whole file) and returns one
sentence naming the file, what is wrong with it and the likely cause. Loaders call it
only after a read failed, so a healthy file costs nothing.

Formats recognised: a ``torch.save`` zip archive (magic ``PK\\x03\\x04``; complete
only with its end-of-central-directory record ``PK\\x05\\x06`` near the end), a
legacy ``torch.save`` pickle (``\\x80`` protocol byte), a safetensors file (an 8-byte
little-endian header length, a JSON header, then the tensor bytes the header's
``data_offsets`` address), and the usual impostors: a Git LFS pointer, an HTML page
or other text saved in place of the weights.
"""

from __future__ import annotations

import json
import os
import struct
import zipfile
from pathlib import Path

__all__ = ["diagnose_file", "is_torch_save", "SAFETENSORS_MAX_HEADER"]

#: The safetensors format refuses headers above 100 MB; a larger length field is damage.
SAFETENSORS_MAX_HEADER = 100_000_000

_ZIP_MAGIC = b"PK\x03\x04"
_ZIP_END = b"PK\x05\x06"
# the end record is 22 bytes plus a comment of at most 65535 bytes
_ZIP_TAIL = 22 + 65_535

_INCOMPLETE = (
    "the copy or download was interrupted, the disk filled up, or the trainer is still "
    "writing it (or was killed while writing); copy it again, or wait for the run to save"
)


def _size(n: int) -> str:
    return f"{n:,} bytes"


def diagnose_file(path: str | os.PathLike) -> str | None:
    """One sentence saying what is wrong with a checkpoint file, or None if nothing is seen.

    Checks, from the bytes only: zero length; a safetensors file whose header length
    field is impossible, whose header is not JSON, or whose tensors reach past the end
    of the file; a ``torch.save`` zip archive without its end record (truncated) or
    that :mod:`zipfile` cannot open; a Git LFS pointer, HTML or other text; anything
    that is none of the known formats. A file that passes every check gets None (the
    loader's own error then stands).

    Args:
        path: the file.

    Returns:
        A message that names ``path``, what is wrong and the likely cause, or None.

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "ckpt.pt"
        >>> _ = p.write_bytes(b"")
        >>> diagnose_file(p).endswith("the trainer is still writing it (or was killed while writing)")
        True
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(64)
            fh.seek(max(0, size - _ZIP_TAIL))
            tail = fh.read()
    except OSError as exc:
        return f"cannot read {path}: {exc.strerror or exc}"
    if size == 0:
        return (
            f"{path} is an empty file (0 bytes), so it holds no checkpoint: an empty file is what "
            "is left when the copy or download failed before any data arrived, the disk "
            "was full, or the trainer is still writing it (or was killed while writing)"
        )
    if head.startswith(_ZIP_MAGIC):
        return _diagnose_zip(path, size, tail)
    if path.suffix == ".safetensors" or _looks_like_safetensors(head):
        return _diagnose_safetensors(path, size)
    if head[:1] == b"\x80" and head[1:2] in _PROTOCOLS:
        return (
            f"{path} is a legacy (pre-zip) torch.save pickle of {_size(size)} that could not "
            f"be read: it is most likely truncated or damaged ({_INCOMPLETE})"
        )
    return _diagnose_impostor(path, size, head)


def is_torch_save(path: str | os.PathLike) -> bool:
    """True when the file starts like a ``torch.save`` file (zip archive or legacy pickle).

    Example:
        >>> import tempfile, pathlib, torch
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "w.pt"
        >>> torch.save({"w": torch.ones(1)}, p)
        >>> is_torch_save(p)
        True
    """
    with open(path, "rb") as fh:
        head = fh.read(2)
    return head.startswith(_ZIP_MAGIC[:2]) or (head[:1] == b"\x80" and head[1:2] in _PROTOCOLS)


_PROTOCOLS = (b"\x02", b"\x03", b"\x04", b"\x05")


def _diagnose_zip(path: Path, size: int, tail: bytes) -> str | None:
    if _ZIP_END not in tail:
        return (
            f"{path} is an incomplete torch.save file: it starts as a zip archive but its "
            f"end record (the zip's table of contents) is missing after {_size(size)}, so "
            f"the file was cut short: {_INCOMPLETE}"
        )
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        return (
            f"{path} is a damaged torch.save zip archive ({exc}): bytes were changed or "
            f"lost in transfer (e.g. a copy in text mode or a failing disk); copy it again"
        )
    # a member whose bytes lie beyond the end of the file: the middle went missing
    for info in infos:
        if info.header_offset + info.compress_size > size:
            return (
                f"{path} is an incomplete torch.save file: its member {info.filename} "
                f"ends past the file's {_size(size)} ({_INCOMPLETE})"
            )
    if not any(i.filename.endswith("data.pkl") for i in infos):
        return (
            f"{path} is a zip archive but not a torch.save checkpoint (no data.pkl among "
            f"{[i.filename for i in infos[:5]]}): pass the checkpoint file itself"
        )
    return None


def _looks_like_safetensors(head: bytes) -> bool:
    return len(head) >= 9 and head[8:9] == b"{"


def _diagnose_safetensors(path: Path, size: int) -> str | None:
    if size < 8:
        return (
            f"{path} is an incomplete safetensors file: {_size(size)}, fewer than the 8 "
            f"bytes of its header-length field ({_INCOMPLETE})"
        )
    with open(path, "rb") as fh:
        (n,) = struct.unpack("<Q", fh.read(8))
        if n > SAFETENSORS_MAX_HEADER:
            return (
                f"{path} has a damaged safetensors header: its length field says "
                f"{_size(n)}, above the format's limit of {_size(SAFETENSORS_MAX_HEADER)}, "
                "so the first 8 bytes were overwritten or the file is not safetensors at "
                "all; copy it again or re-save it with safetensors.torch.save_file"
            )
        if 8 + n > size:
            return (
                f"{path} is an incomplete safetensors file: its header alone needs "
                f"{_size(8 + n)} but the file has {_size(size)} ({_INCOMPLETE})"
            )
        raw = fh.read(n)
    try:
        header = json.loads(raw)
        ends = [
            int(v["data_offsets"][1])
            for k, v in header.items()
            if k != "__metadata__" and isinstance(v, dict)
        ]
    except (ValueError, KeyError, TypeError, IndexError):
        return (
            f"{path} has a damaged safetensors header: the {_size(n)} after the length "
            "field are not the JSON table of tensors (bytes changed in transfer, or the "
            "length field is wrong); copy it again or re-save it"
        )
    need = 8 + n + max(ends, default=0)
    if need > size:
        return (
            f"{path} is an incomplete safetensors file: its tensors need {_size(need)} but "
            f"the file has {_size(size)} ({_INCOMPLETE})"
        )
    return None


def _diagnose_impostor(path: Path, size: int, head: bytes) -> str:
    text = head.lstrip()
    if text.startswith(b"version https://git-lfs"):
        return (
            f"{path} is a Git LFS pointer ({_size(size)}), not the weights: the repository "
            "was cloned without LFS; run `git lfs pull` (or download the file itself)"
        )
    if text[:15].lower().startswith((b"<!doctype html", b"<html")):
        return (
            f"{path} is an HTML page, not a checkpoint: a download saved an error or login "
            "page instead of the file; download it again from a direct link"
        )
    try:
        head.decode("utf-8")
        kind = "text"
    except UnicodeDecodeError:
        kind = "binary data"
    return (
        f"{path} is not a checkpoint: its {_size(size)} of {kind} are neither a torch.save "
        f"file (zip or pickle) nor safetensors (first bytes {head[:8]!r}); pass the file "
        "torch.save or safetensors wrote"
    )
