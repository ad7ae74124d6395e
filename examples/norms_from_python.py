"""Spectral norm and (1,1)-norm of a model you define, from Python.

Builds a small convolutional classifier on scikit-learn's digits, then asks
hessnorm for ‖H‖₂ (Lanczos) and ‖H‖₁,₁ (Cauchy medians), each with its interval,
and, because the model is small, checks both against the exact dense Hessian.

    python examples/norms_from_python.py          # about half a minute on a laptop CPU
    python examples/norms_from_python.py --small  # a few seconds (used by the tests)
"""

import argparse

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import nn

import hessnorm as hn
from hessnorm.estimators import exact


def main(small: bool = False) -> dict:
    X, y = load_digits(return_X_y=True)
    n = 128 if small else 512
    x = torch.tensor(X[:n], dtype=torch.float32).view(-1, 1, 8, 8) / 16
    t = torch.tensor(y[:n])

    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.Tanh(),
        nn.AvgPool2d(2),
        nn.Flatten(),
        nn.Linear(4 * 16, 10),
    )
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(50 if small else 300):
        opt.zero_grad()
        F.cross_entropy(model(x), t).backward()
        opt.step()

    # The Hessian of the mean loss over these examples, given in two batches.
    half = n // 2
    op = hn.HessianOperator.from_module(
        model, F.cross_entropy, [(x[:half], t[:half]), (x[half:], t[half:])], dtype=torch.float64
    )
    spec = hn.spectral_norm(op, seed=0, progress=False)
    l11 = hn.l11_norm(op, n=50, seed=0, progress=False)
    print(op)
    print(spec)
    print(l11)

    H = exact.hessian(op)  # d = 690: the dense Hessian is cheap here
    truth = {"spectral": exact.spectral_norm(H), "l11": exact.l11_norm(H)}
    print(f"exact: ‖H‖₂ = {truth['spectral']:.6g}, ‖H‖₁,₁ = {truth['l11']:.6g}")
    print(
        f"‖H‖₁,₁/d = {l11.value_per_dim:.4g} vs ‖H‖₂ = {spec.value:.4g}: "
        f"{'Adam' if l11.value_per_dim < spec.value else 'AdaSGD'}'s geometry is the better fit here"
    )
    return {"spectral": spec, "l11": l11, "exact": truth}


if __name__ == "__main__":
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--small", action="store_true")
    main(ap.parse_args().small)
