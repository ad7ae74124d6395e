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


class DiskRows:
    """Rows of length d in an unlinked temporary file: the one on-disk row store.

    Used for the Lanczos basis spill (rows appended one at a time, read back in order
    through one reused buffer of at most max(one row, ``buffer_bytes``)) and the
    Cauchy probe results (``n`` rows reserved up front, written in chunks, read back as
    column slices). Blocks are reserved with ``posix_fallocate`` before they are
    written, so a full disk is a clear :class:`~hessnorm.errors.TooLargeError` (with
    the caller's ``advice``), not a SIGBUS as with a memory map; the process's resident
    memory does not grow with the file (the kernel's page cache may hold it).

    Args:
        d: row length.
        dtype: torch dtype of the stored rows.
        directory: folder of the file (None: TMPDIR).
        prefix, suffix: the file name's (it is unlinked at once; they show in ``lsof``).
        reserve: rows to reserve before the first write (0: reserve as rows come).
        advice: what the user can do when the disk is full (appended to the error).
        buffer_bytes: the read buffer of :meth:`chunks`.

    Example:
        >>> import torch
        >>> rows = DiskRows(3, torch.float64, reserve=2, advice="")
        >>> rows.write(0, torch.arange(6.0, dtype=torch.float64).reshape(2, 3))
        >>> rows.columns(1, 3).tolist(), [c.tolist() for c in rows.chunks()]
        ([[1.0, 2.0], [4.0, 5.0]], [[[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]])
        >>> rows.close()
    """

    def __init__(
        self,
        d: int,
        dtype,
        directory=None,
        *,
        prefix: str = "hessnorm-",
        suffix: str = ".rows",
        reserve: int = 0,
        advice: str = "",
        buffer_bytes: int = 256 << 20,
    ) -> None:
        import torch

        self.d, self.dtype, self.device = int(d), dtype, torch.device("cpu")
        self.item = torch.empty((), dtype=dtype).element_size()
        self.row_bytes = self.d * self.item
        self.buf_rows = max(1, buffer_bytes // max(1, self.row_bytes))
        self.advice = advice
        self.fd, self.directory, self._finalizer = unlinked_file(self, prefix, suffix, directory)
        self.n = int(reserve)  # rows written or reserved
        self.shape = (self.n, self.d)
        self.bytes_written = 0
        self.bytes_read = 0
        self._buf = None
        if reserve:
            self._reserve(0, reserve, f"the {reserve} × {self.d:,} rows")

    def _reserve(self, row: int, count: int, what: str) -> None:
        from hessnorm.errors import TooLargeError

        total = count * self.row_bytes
        try:
            if hasattr(os, "posix_fallocate") and total > 0:
                os.posix_fallocate(self.fd, row * self.row_bytes, total)
        except OSError as exc:
            self.close()
            raise TooLargeError(
                f"cannot reserve {total / 1e9:.2f} GB on disk in {self.directory} for {what}: "
                f"{exc}. {self.advice}"
            ) from exc

    def write(self, start: int, rows) -> None:
        """Write (k, d) ``rows`` at row ``start`` (within the reserved rows)."""
        from hessnorm.errors import TooLargeError

        data = rows.detach().to(device="cpu", dtype=self.dtype).contiguous()
        try:
            write_all(self.fd, tensor_bytes(data), start * self.row_bytes)
        except OSError as exc:
            raise TooLargeError(
                f"writing rows to {self.directory} failed: {exc}. {self.advice}"
            ) from exc
        self.bytes_written += data.numel() * self.item

    def append(self, v) -> None:
        """Append one row (reserving its blocks first)."""
        self._reserve(self.n, 1, f"row {self.n + 1} ({self.row_bytes / 2**20:.0f} MiB)")
        self.write(self.n, v.reshape(1, -1))
        self.n += 1
        self.shape = (self.n, self.d)

    def chunks(self):
        """Yield the rows in order as (r, d) views of one reused buffer."""
        import torch

        if self.n == 0:
            return
        if self._buf is None:
            self._buf = torch.empty(self.buf_rows, self.d, dtype=self.dtype)
        for s in range(0, self.n, self.buf_rows):
            r = min(self.buf_rows, self.n - s)
            view = self._buf[:r]
            read_into(self.fd, tensor_bytes(view), s * self.row_bytes)
            self.bytes_read += r * self.row_bytes
            yield view

    def columns(self, c0: int, c1: int):
        """The column slice [c0, c1) of every row, as a fresh (n, c1 − c0) tensor."""
        import torch

        out = torch.empty(self.n, c1 - c0, dtype=self.dtype)
        for i in range(self.n):
            read_into(self.fd, tensor_bytes(out[i]), i * self.row_bytes + c0 * self.item)
        self.bytes_read += out.numel() * self.item
        return out

    def close(self) -> None:
        self._buf = None
        self._finalizer()
