"""Unlinked temporary files for estimator state that outgrows memory.

Used by the Lanczos basis spill (:mod:`hessnorm.estimators.lanczos`) and the Cauchy
probe store (:mod:`hessnorm.estimators.cauchy`). The file is unlinked as soon as it
is open, so nothing is left behind if the process dies; the descriptor is closed when
its owner is garbage collected or closed.
"""

from __future__ import annotations

import os
import tempfile
import weakref


def unlinked_file(owner, prefix: str, suffix: str, directory=None):
    """(fd, folder, finalizer) of a new temporary file in ``directory`` (default: TMPDIR).

    Calling the finalizer (or collecting ``owner``) closes the descriptor.

    Example:
        >>> class Owner: pass
        >>> owner = Owner()
        >>> fd, folder, close = unlinked_file(owner, "hessnorm-doc-", ".bin")
        >>> os.pwrite(fd, b"abc", 0), os.pread(fd, 3, 0), close.alive
        (3, b'abc', True)
        >>> close(); close.alive
        False
    """
    folder = os.fspath(directory) if directory is not None else tempfile.gettempdir()
    fd, path = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=folder)
    try:
        os.unlink(path)
        path = None
    except OSError:  # pragma: no cover - platforms that cannot unlink open files
        pass
    return fd, folder, weakref.finalize(owner, _close_file, fd, path)


def tensor_bytes(t) -> memoryview:
    """The bytes of a contiguous CPU tensor as a flat writable memoryview (no copy).

    Example:
        >>> import torch
        >>> len(tensor_bytes(torch.zeros(3, dtype=torch.float32)))
        12
    """
    import torch

    return memoryview(t.view(torch.uint8).numpy()).cast("B")


def write_all(fd: int, data: memoryview, offset: int) -> None:
    """``pwrite`` all of ``data`` at ``offset`` (short writes are continued).

    Example:
        >>> class Owner: pass
        >>> owner = Owner()
        >>> fd, _, close = unlinked_file(owner, "hessnorm-doc-", ".bin")
        >>> write_all(fd, memoryview(b"hello"), 2); os.pread(fd, 7, 0); close()
        b'\\x00\\x00hello'
    """
    done = 0
    while done < len(data):
        done += os.pwrite(fd, data[done:], offset + done)


def read_into(fd: int, out: memoryview, offset: int) -> None:
    """Fill ``out`` from the file at ``offset`` with ``preadv`` (short reads are continued;
    an end of file before ``out`` is full is an OSError).

    Example:
        >>> class Owner: pass
        >>> owner = Owner()
        >>> fd, _, close = unlinked_file(owner, "hessnorm-doc-", ".bin")
        >>> write_all(fd, memoryview(b"hello"), 0)
        >>> buf = bytearray(3); read_into(fd, memoryview(buf), 1); close(); bytes(buf)
        b'ell'
    """
    done = 0
    while done < len(out):
        got = os.preadv(fd, [out[done:]], offset + done)
        if got <= 0:
            raise OSError(f"short read at byte {offset + done}: the file ends early")
        done += got


def _close_file(fd: int, path: str | None) -> None:
    try:
        os.close(fd)
    except OSError:  # pragma: no cover
        pass
    if path is not None:  # pragma: no cover
        try:
            os.unlink(path)
        except OSError:
            pass
