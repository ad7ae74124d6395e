"""Datasets of the reference trainer, all available offline.

* Text: byte-level tokens (vocabulary 256) of the Python standard library's
  top-level ``*.py`` files, sorted by name (``sysconfig.get_paths()["stdlib"]``;
  about 4-5 MB). The corpus changes slightly with the Python version, so runs are
  comparable only on the same interpreter; ``corpus_info()`` records which. A
  nanoGPT data folder (``train.bin``/``val.bin``, uint16 tokens) loads through the
  same path with ``data_dir``.
* Images: scikit-learn's bundled 8x8 digits, or CIFAR-10 from a local folder in
  either the raw binary layout (``cifar-10-batches-bin``) or the Python layout
  (``cifar-10-batches-py``), the latter read with an unpickler that only accepts
  numpy's array-reconstruction globals, never arbitrary objects.
"""

from __future__ import annotations

import functools
import glob
import io
import os
import pickle
import sys
import sysconfig
from pathlib import Path

import numpy as np
import torch

from hessnorm.errors import CheckpointError, ConfigError

__all__ = [
    "stdlib_corpus",
    "corpus_info",
    "load_text",
    "load_digits_split",
    "load_cifar10",
    "safe_unpickle",
]

VAL_FRACTION = 0.1


def _stdlib_files() -> list[str]:
    root = sysconfig.get_paths()["stdlib"]
    return sorted(glob.glob(os.path.join(root, "*.py")))


@functools.lru_cache(maxsize=1)
def stdlib_corpus() -> np.ndarray:
    """Bytes of the sorted top-level stdlib ``*.py`` files, joined by a blank line (uint8).

    Example:
        >>> data = stdlib_corpus()
        >>> data.dtype, data.size == corpus_info()["n_bytes"], data.size > 10**6
        (dtype('uint8'), True, True)
    """
    files = _stdlib_files()
    if not files:
        raise ConfigError(
            "no Python standard-library source found under sysconfig's stdlib path; "
            "pass data_dir with nanoGPT train.bin/val.bin instead."
        )
    parts = []
    for f in files:
        with open(f, "rb") as fh:
            parts.append(fh.read())
    return np.frombuffer(b"\n\n".join(parts), dtype=np.uint8)


def corpus_info() -> dict:
    """Which interpreter's stdlib the text corpus came from, and its size.

    Example:
        >>> info = corpus_info()
        >>> info["python"] == sys.version.split()[0], info["n_files"] > 100
        (True, True)
    """
    return {
        "python": sys.version.split()[0],
        "n_files": len(_stdlib_files()),
        "n_bytes": int(stdlib_corpus().size),
    }


def load_text(data_dir: str | None) -> tuple[np.ndarray, np.ndarray, int | None]:
    """(train tokens, val tokens, vocab size) of the stdlib corpus or a nanoGPT folder.

    The stdlib corpus is split 90/10 at a fixed byte offset (the last 10% is the
    eval split). A nanoGPT folder must hold ``train.bin`` and ``val.bin`` (uint16
    token ids, read with ``np.memmap``); the vocabulary size is then None and comes
    from the model config (nanoGPT's ``meta.pkl`` is a pickle and is not read).

    Example:
        >>> import tempfile
        >>> train, val, vocab = load_text(None)
        >>> vocab, len(train) + len(val) == stdlib_corpus().size, len(val) < len(train) / 8
        (256, True, True)
        >>> folder = Path(tempfile.mkdtemp())
        >>> for split in ("train", "val"):
        ...     np.arange(100, dtype=np.uint16).tofile(folder / f"{split}.bin")
        >>> train, val, vocab = load_text(str(folder))
        >>> val[:3].tolist(), vocab
        ([0, 1, 2], None)
    """
    if data_dir is None:
        data = stdlib_corpus()
        cut = int(len(data) * (1 - VAL_FRACTION))
        return data[:cut], data[cut:], 256
    folder = Path(data_dir)
    paths = [folder / "train.bin", folder / "val.bin"]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise ConfigError(
            f"data_dir {folder} lacks {', '.join(missing)}; it must be a nanoGPT data "
            "folder (prepare.py output) with uint16 train.bin and val.bin."
        )
    train, val = (np.memmap(p, dtype=np.uint16, mode="r") for p in paths)
    return train, val, None


def load_digits_split(eval_size: int = 297) -> tuple:
    """scikit-learn's 8x8 digits as float images in [0, 1]: (x_tr, y_tr, x_ev, y_ev).

    The split is a fixed permutation (numpy seed 0): the last ``eval_size`` images
    are the evaluation set.

    Example:
        >>> x_tr, y_tr, x_ev, y_ev = load_digits_split()
        >>> tuple(x_tr.shape), tuple(x_ev.shape), float(x_tr.max()), len(set(y_ev.tolist()))
        ((1500, 1, 8, 8), (297, 1, 8, 8), 1.0, 10)
    """
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.from_numpy(bunch.images.astype(np.float32) / 16.0).unsqueeze(1)
    y = torch.from_numpy(bunch.target.astype(np.int64))
    order = torch.from_numpy(np.random.default_rng(0).permutation(len(y)))
    x, y = x[order], y[order]
    return x[:-eval_size], y[:-eval_size], x[-eval_size:], y[-eval_size:]


_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("_codecs", "encode"),
}


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise CheckpointError(
            f"refusing to unpickle {module}.{name}: only numpy arrays are allowed in a "
            "CIFAR-10 python batch file; use the binary version (cifar-10-batches-bin) "
            "if the file is not the official one."
        )


def safe_unpickle(data: bytes):
    """Unpickle bytes that may only hold builtins and numpy arrays (CIFAR batch files).

    Example:
        >>> batch = {b"labels": [3, 7], b"data": np.zeros((2, 3072), dtype=np.uint8)}
        >>> safe_unpickle(pickle.dumps(batch))[b"data"].shape
        (2, 3072)
        >>> safe_unpickle(pickle.dumps(print))  # a global that could run code
        Traceback (most recent call last):
        ...
        hessnorm.errors.CheckpointError: refusing to unpickle builtins.print: only numpy arrays are allowed in a CIFAR-10 python batch file; use the binary version (cifar-10-batches-bin) if the file is not the official one.
    """
    return _RestrictedUnpickler(io.BytesIO(data), encoding="bytes").load()


def _cifar_bin(folder: Path):
    def read(names):
        raw = np.concatenate([np.fromfile(folder / n, dtype=np.uint8) for n in names])
        rec = raw.reshape(-1, 1 + 3072)
        return rec[:, 1:].reshape(-1, 3, 32, 32), rec[:, 0].astype(np.int64)

    return read([f"data_batch_{i}.bin" for i in range(1, 6)]) + read(["test_batch.bin"])


def _cifar_py(folder: Path):
    def read(names):
        xs, ys = [], []
        for n in names:
            d = safe_unpickle((folder / n).read_bytes())
            xs.append(np.asarray(d[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            ys.append(np.asarray(d[b"labels"], dtype=np.int64))
        return np.concatenate(xs), np.concatenate(ys)

    return read([f"data_batch_{i}" for i in range(1, 6)]) + read(["test_batch"])


CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)


def load_cifar10(data_dir: str) -> tuple:
    """CIFAR-10 from a local folder: normalized float images (x_tr, y_tr, x_ev, y_ev).

    ``data_dir`` is (or contains) ``cifar-10-batches-bin`` (data_batch_1.bin ...,
    test_batch.bin) or ``cifar-10-batches-py`` (data_batch_1 ..., test_batch).

    Example:
        A fake binary folder with two records (label byte + 3072 pixel bytes) per file:

        >>> import tempfile
        >>> root = Path(tempfile.mkdtemp())
        >>> folder = root / "cifar-10-batches-bin"
        >>> folder.mkdir()
        >>> record = np.concatenate([[5], np.full(3072, 255)]).astype(np.uint8)
        >>> for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        ...     np.tile(record, 2).tofile(folder / name)
        >>> x_tr, y_tr, x_ev, y_ev = load_cifar10(str(root))
        >>> tuple(x_tr.shape), tuple(x_ev.shape), y_tr.unique().tolist()
        ((10, 3, 32, 32), (2, 3, 32, 32), [5])
        >>> round(float(x_tr[0, 0, 0, 0]), 4)  # (1 - mean) / std of the red channel
        2.0591
    """
    root = Path(data_dir)
    for folder in (root, root / "cifar-10-batches-bin", root / "cifar-10-batches-py"):
        if (folder / "test_batch.bin").is_file():
            arrays = _cifar_bin(folder)
            break
        if (folder / "test_batch").is_file():
            arrays = _cifar_py(folder)
            break
    else:
        raise ConfigError(
            f"no CIFAR-10 batches under {root}: expected cifar-10-batches-bin "
            "(test_batch.bin, data_batch_1.bin, ...) or cifar-10-batches-py (test_batch, ...)."
        )
    x_tr, y_tr, x_ev, y_ev = arrays
    mean = torch.tensor(CIFAR_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR_STD).view(1, 3, 1, 1)

    def norm(x):
        return (torch.from_numpy(np.ascontiguousarray(x)).float() / 255.0 - mean) / std

    return norm(x_tr), torch.from_numpy(y_tr), norm(x_ev), torch.from_numpy(y_ev)


def random_crop_flip(x: torch.Tensor, gen: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Random crop after zero padding, and random horizontal flip (per image).

    Example:
        Without padding every image comes back as itself or mirrored:

        >>> x = torch.arange(24.0).view(4, 1, 2, 3)
        >>> out = random_crop_flip(x, torch.Generator().manual_seed(0), pad=0)
        >>> out.shape, all(torch.equal(o, i) or torch.equal(o, i.flip(-1)) for o, i in zip(out, x))
        (torch.Size([4, 1, 2, 3]), True)
    """
    n, _, h, w = x.shape
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    flip = torch.rand(n, generator=gen) < 0.5
    rows = (dy.view(n, 1) + torch.arange(h).view(1, h)).view(n, 1, h, 1)
    cols = (dx.view(n, 1) + torch.arange(w).view(1, w)).view(n, 1, 1, w)
    cols = torch.where(flip.view(n, 1, 1, 1), cols.flip(-1), cols)
    idx_n = torch.arange(n).view(n, 1, 1, 1)
    idx_c = torch.arange(x.shape[1]).view(1, -1, 1, 1)
    return padded[idx_n, idx_c, rows, cols]
