"""Analyze a checkpoint saved by your own training script (plain state_dict + factory).

Your script saves ``model.state_dict()``; hessnorm needs to know how to build the
model and the evaluation batches, so you point it at two functions of yours:

    hessnorm analyze my_weights.pt --model examples/analyze_own_checkpoint.py:make_model \\
        --data examples/analyze_own_checkpoint.py:eval_batches --estimators spectral,l11,blockwise:by_tensor

This file is such a script: it trains an MLP on scikit-learn's digits, saves the
weights (as .pt and .safetensors), and runs the same analysis from Python.

    python examples/analyze_own_checkpoint.py --out /tmp/own   [--small]
"""

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from sklearn.datasets import load_digits
from torch import nn

import hessnorm as hn


def make_model() -> nn.Module:
    """The factory hessnorm calls (no arguments) to get an empty model."""
    return nn.Sequential(nn.Linear(64, 24), nn.Tanh(), nn.Linear(24, 10))


def _digits():
    X, y = load_digits(return_X_y=True)
    return torch.tensor(X, dtype=torch.float32) / 16, torch.tensor(y)


def eval_batches():
    """The evaluation set the Hessian is averaged over: the last 256 digits, 4 batches."""
    x, y = _digits()
    x, y = x[-256:], y[-256:]
    return [(x[i : i + 64], y[i : i + 64]) for i in range(0, 256, 64)]


def main(out: Path, small: bool = False):
    out.mkdir(parents=True, exist_ok=True)
    x, y = _digits()
    torch.manual_seed(0)
    model = make_model()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(40 if small else 400):
        opt.zero_grad()
        F.cross_entropy(model(x[:-256]), y[:-256]).backward()
        opt.step()
    torch.save(model.state_dict(), out / "weights.pt")
    save_file(model.state_dict(), str(out / "weights.safetensors"))

    here = Path(__file__).resolve()
    df = hn.analyze(
        [out / "weights.pt", out / "weights.safetensors"],
        estimators=["spectral", "l11", "blockwise:by_tensor"],
        model=f"{here}:make_model",
        data=f"{here}:eval_batches",
        dtype="float64",
        n_cauchy=20 if small else 50,
        progress=False,
    )
    print(df[["checkpoint", "estimator", "value", "low", "high", "n_hvp"]].to_string(index=False))
    return df


if __name__ == "__main__":
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--out", type=Path, default=Path("runs/own_checkpoint"))
    ap.add_argument("--small", action="store_true")
    a = ap.parse_args()
    main(a.out, a.small)
