"""Is ‖H‖₂ on the default evaluation windows a typical draw of ``--eval-resamples``?

Trains a small GPT with a nanoGPT-style loop on local text (hessnorm's bundled
byte-level corpus), writes it as nanoGPT does (``out/ckpt.pt`` with ``model_args``,
``best_val_loss``, ``config``; ``data/val.bin``), then estimates ‖H‖₂ by Lanczos

* on the default windows (``lm_windows``: evenly spaced starts, offset 0),
* on K resamples of the same rule at random offsets (what ``--eval-resamples K``
  draws: :func:`hessnorm.checkpoint.nanogpt_eval_windows`),
* on K sets of independent uniform starts (the rule ``--eval-resamples`` used
  before issue 26), for comparison,

and draws the three against each other (``eval_resamples.png``, numbers in
``eval_resamples.csv``). The rank of the default among the offset resamples says
whether it is an ordinary member of its own distribution.

    python examples/eval_resamples_spread.py --out reports/eval-resamples   [--small]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

import hessnorm as hn
from hessnorm._io import atomic_write_bytes
from hessnorm.checkpoint import load
from hessnorm.train.data import load_text
from hessnorm.train.gpt import GPT, GPTConfig

FULL = dict(n_layer=2, n_head=4, n_embd=32, block_size=16, steps=300, windows=16, k=20)
SMALL = dict(n_layer=1, n_head=2, n_embd=16, block_size=16, steps=20, windows=8, k=3)


def train_nanogpt_style(folder: Path, size: dict, seed: int = 0) -> Path:
    """A nanoGPT-format checkpoint of a GPT trained on the bundled corpus (AdamW, random windows)."""
    train, val, vocab = load_text(None)
    train, val = np.asarray(train, dtype=np.int64), np.asarray(val, dtype=np.int64)
    data = folder / "data"
    data.mkdir(parents=True, exist_ok=True)
    val.astype(np.uint16).tofile(data / "val.bin")
    args = dict(
        n_layer=size["n_layer"],
        n_head=size["n_head"],
        n_embd=size["n_embd"],
        block_size=size["block_size"],
        bias=False,
        vocab_size=vocab,
        dropout=0.0,
    )
    torch.manual_seed(seed)
    model = GPT(GPTConfig(**args))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.1, betas=(0.9, 0.95))
    rng = np.random.default_rng(seed)
    T = args["block_size"]

    def batch(tokens, n):
        starts = rng.integers(0, len(tokens) - T - 1, size=n)
        rows = torch.from_numpy(np.stack([tokens[s : s + T + 1] for s in starts]))
        return rows[:, :-1], rows[:, 1:]

    for _ in range(size["steps"]):
        x, y = batch(train, 32)
        loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    model.eval()
    with torch.no_grad():  # nanoGPT's estimate_loss: eval_iters x batch_size random windows
        x, y = batch(val, 200 * 12)
        best = float(F.cross_entropy(model(x).flatten(0, 1), y.flatten()))
    ckpt = {
        "model": {"_orig_mod." + k: v for k, v in model.state_dict().items()},
        "optimizer": opt.state_dict(),
        "model_args": args,
        "iter_num": size["steps"],
        "best_val_loss": torch.tensor(best),
        "config": {"batch_size": 12, "eval_iters": 200, "dtype": "float32", "device": "cpu"},
    }
    path = folder / "out" / "ckpt.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, path)
    return path


def _uniform_starts(tokens, n: int, T: int, k: int):
    """n independent uniform window starts (the pre-issue-26 resample rule)."""
    starts = np.random.default_rng([0, k]).integers(0, len(tokens) - T, size=n)
    rows = torch.from_numpy(np.stack([np.asarray(tokens[s : s + T + 1]) for s in starts]))
    return rows[:, :-1].long(), rows[:, 1:].long()


def spread(ckpt: Path, data: Path, size: dict) -> pd.DataFrame:
    """‖H‖₂ on the default windows, on K offset resamples and on K uniform-start sets."""
    n, k = size["windows"], size["k"]
    net, batches, loss_fn, meta = load(ckpt, data_dir=str(data), eval_examples=n, data_seed=0)
    _, default_batches, _, _ = load(ckpt, data_dir=str(data), eval_examples=n)
    tokens = np.memmap(data / "val.bin", dtype=np.uint16, mode="r")
    T = size["block_size"]

    def norm(batches_):
        op = hn.HessianOperator.from_module(net, loss_fn, batches_)
        est = hn.spectral_norm(op, tol=3e-2, max_iter=40, seed=0, progress=False)
        return est.value, op.loss()

    rows = [("default (offset 0)", 0, *norm(default_batches))]
    for i in range(1, k + 1):
        rows.append(("offset resample", i, *norm(meta["resample"](i))))
    for i in range(1, k + 1):
        x, y = _uniform_starts(tokens, n, T, i)
        chunks = [(x[j : j + 16], y[j : j + 16]) for j in range(0, n, 16)]
        rows.append(("uniform starts", i, *norm(chunks)))
    return pd.DataFrame(rows, columns=["rule", "set", "spectral", "loss"])


def figure(df: pd.DataFrame) -> bytes:
    import io

    from matplotlib.figure import Figure

    from hessnorm.report.figures import texts_outside_canvas

    fig = Figure(figsize=(7.0, 3.8), dpi=120)
    ax = fig.subplots()
    default = df.loc[df["rule"].str.startswith("default"), "spectral"].item()
    for y, (rule, color) in enumerate((("offset resample", "C0"), ("uniform starts", "C1"))):
        v = df.loc[df["rule"] == rule, "spectral"].to_numpy()
        jitter = np.random.default_rng(y).uniform(-0.12, 0.12, len(v))
        ax.scatter(v, y + jitter, s=18, color=color, alpha=0.8)
        ax.plot([np.median(v)] * 2, [y - 0.25, y + 0.25], color=color, lw=2)
    ax.axvline(default, color="k", ls="--", lw=1.2, label=f"default windows: {default:.4g}")
    ax.set_yticks([0, 1], ["same rule,\nrandom offset", "independent\nuniform starts"])
    ax.set_ylim(-0.6, 1.6)
    ax.set_xlabel("‖H‖₂ (Lanczos, tol 3e-2) on one evaluation set")
    k = int((df["rule"] == "offset resample").sum())
    ax.set_title(f"‖H‖₂ over {k} evaluation sets of each rule (bar: median)", fontsize=10)
    ax.legend(fontsize=8, loc="upper right")
    ax.grid(True, axis="x", alpha=0.3)
    fig.tight_layout()
    assert not texts_outside_canvas(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def summary(df: pd.DataFrame) -> dict:
    default = df.loc[df["rule"].str.startswith("default"), "spectral"].item()
    out = {"default": default}
    for rule in ("offset resample", "uniform starts"):
        v = df.loc[df["rule"] == rule, "spectral"].to_numpy()
        out[rule] = {
            "n": len(v),
            "mean": float(v.mean()),
            "sd": float(v.std(ddof=1)),
            "min": float(v.min()),
            "max": float(v.max()),
            # 0 .. n: how many sets of the rule lie below the default
            "sets_below_default": int((v < default).sum()),
        }
    return out


def main(out: str | Path, small: bool = False) -> dict:
    out = Path(out)
    size = SMALL if small else FULL
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:  # the checkpoint is rebuilt, not kept
        work = Path(tmp)
        ckpt = train_nanogpt_style(work, size)
        t1 = time.time()
        df = spread(ckpt, work / "data", size)
    s = summary(df) | {"train_seconds": t1 - t0, "spread_seconds": time.time() - t1, "size": size}
    atomic_write_bytes(out / "eval_resamples.csv", df.to_csv(index=False).encode())
    atomic_write_bytes(out / "eval_resamples.json", json.dumps(s, indent=2).encode())
    atomic_write_bytes(out / "eval_resamples.png", figure(df))
    print(f"wrote {out / 'eval_resamples.png'}")
    print(json.dumps(s, indent=2))
    return s


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="reports/eval-resamples")
    p.add_argument("--small", action="store_true")
    a = p.parse_args()
    main(a.out, small=a.small)
