"""Make tests/data/nanogpt_copy/: a tiny nanoGPT ckpt.pt that needs its attention heads.

A copy task: the token stream is made of random 5-token phrases, each said four times
in a row, so the next token is the one five positions back except at a phrase start.
Only attention can do that, so the model's loss depends on how its query/key features
are grouped into heads: editing ``n_head`` in ``model_args`` (no shape changes) moves
the loss far beyond sampling error. The checkpoint is written the way nanoGPT's
train.py writes it (``model``, ``model_args``, ``iter_num``, ``best_val_loss``
estimated on random val windows, ``config``), in float32 on the CPU.

Run from the repository root (about a minute on two cores):

    python tests/data/make_nanogpt_copy.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from hessnorm.train.gpt import GPT, GPTConfig

OUT = Path(__file__).resolve().parent / "nanogpt_copy"
ARGS = dict(n_layer=1, n_head=4, n_embd=32, block_size=16, bias=False, vocab_size=16, dropout=0.0)
BATCH, EVAL_ITERS, STEPS = 12, 200, 400


def stream(n_phrases: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    phrases = rng.integers(0, ARGS["vocab_size"], size=(n_phrases, 5))
    return np.repeat(phrases[:, None, :], 4, axis=1).reshape(-1).astype(np.uint16)


def windows(tokens: np.ndarray, rng, n: int):
    T = ARGS["block_size"]
    starts = rng.integers(0, len(tokens) - T, size=n)
    rows = np.stack([tokens[s : s + T + 1].astype(np.int64) for s in starts])
    return torch.from_numpy(rows[:, :-1]), torch.from_numpy(rows[:, 1:])


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    train, val = stream(2000, seed=0), stream(600, seed=1)
    val.tofile(OUT / "val.bin")
    torch.manual_seed(0)
    model = GPT(GPTConfig(**ARGS))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)
    rng = np.random.default_rng(2)
    for _ in range(STEPS):
        x, y = windows(train, rng, 32)
        loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():  # nanoGPT's estimate_loss: eval_iters batches of random windows
        x, y = windows(val, np.random.default_rng(3), EVAL_ITERS * BATCH)
        best = float(F.cross_entropy(model(x).flatten(0, 1), y.flatten()))
    print(f"train loss {loss.item():.4f}, val loss (nanoGPT-style) {best:.4f}")
    ckpt = {
        "model": {"_orig_mod." + k: v for k, v in model.state_dict().items()},
        "optimizer": {},
        "model_args": ARGS,
        "iter_num": STEPS,
        "best_val_loss": torch.tensor(best),
        "config": {
            "batch_size": BATCH,
            "eval_iters": EVAL_ITERS,
            "dtype": "float32",
            "device": "cpu",
            "dataset": "copy5",
            "always_save_checkpoint": True,
        },
    }
    torch.save(ckpt, OUT / "ckpt.pt")


if __name__ == "__main__":
    main()
