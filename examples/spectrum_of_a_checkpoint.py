"""The whole spectrum of a small transformer's Hessian, and where its (1,1)-mass sits.

Trains hessnorm's tiny reference transformer for a few Adam steps on character
tokens, saves the weights as a checkpoint, reloads them, and reports, each with
its interval:

* tr(H) by Hutch++,
* the eigenvalue density by stochastic Lanczos quadrature (drawn to a PNG, log scale),
* the share of ‖H‖₁,₁ on the diagonal, for the loss and for the rotated loss L∘R
  (paper 000: a rotation moves the mass off the diagonal),
* the per-tensor block spectra and their heterogeneity (Zhang et al. 2024).

    python examples/spectrum_of_a_checkpoint.py --out spectrum/          # about a minute on a CPU
    python examples/spectrum_of_a_checkpoint.py --out spectrum/ --small  # seconds (used by the tests)
"""

import argparse
import pathlib

import torch

import hessnorm as hn
from hessnorm.estimators.density import block_heterogeneity, block_spectra, spectral_density
from hessnorm.estimators.diagonal import diagonal_share
from hessnorm.estimators.trace import trace
from hessnorm.testing import TinyTransformer, char_tokens, lm_loss


def main(out_dir, small: bool = False) -> dict:
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    x, y = char_tokens(8 if small else 64, seed=0)
    torch.manual_seed(0)
    model = TinyTransformer()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(20 if small else 200):
        opt.zero_grad()
        lm_loss(model(x), y).backward()
        opt.step()
    ckpt = out_dir / "tiny_transformer.pt"
    torch.save(model.state_dict(), ckpt)

    # A checkpoint is data: reload the weights into a fresh model, then analyse.
    model = TinyTransformer()
    model.load_state_dict(torch.load(ckpt, weights_only=True))
    op = hn.HessianOperator.from_module(model.double(), lm_loss, (x, y), dtype=torch.float64)
    print(f"tiny transformer, d = {op.d}, loss = {op.loss():.4f}")

    progress = not small  # the test suite runs --small: no bars there
    tr = trace(op, n=15 if small else 90, seed=0, progress=progress)
    print(tr)
    sd = spectral_density(
        op, n_probes=2 if small else 8, steps=12 if small else 64, seed=0, progress=progress
    )
    print(
        f"SLQ: largest node {sd.lambda_max:.5g}, smallest {sd.lambda_min:.5g}; {sd.trace_power(2)}"
    )
    from matplotlib.figure import Figure  # no pyplot, no backend switch

    fig = Figure(figsize=(5, 3.5))
    sd.plot(fig.add_subplot())
    fig.tight_layout()
    png = out_dir / "density.png"
    fig.savefig(png, dpi=120)
    print(f"density plot: {png}")

    n_diag, n_l11 = (20, 10) if small else (200, 50)
    share = diagonal_share(op, n_diag=n_diag, n_l11=n_l11, seed=0, progress=progress)
    rotated = diagonal_share(
        op.rotated(hn.RandPerm(op.d, seed=0)),
        n_diag=n_diag,
        n_l11=n_l11,
        seed=0,
        progress=progress,
    )
    print(share)
    print(f"rotated: {rotated}")
    top = sorted(share.details["per_tensor"].items(), key=lambda kv: -kv[1])[:3]
    print("most diagonal tensors: " + ", ".join(f"{k} {v:.3f}" for k, v in top))

    spectra = block_spectra(
        op, "by_tensor", n_probes=2 if small else 4, steps=4 if small else 24, progress=progress
    )
    het = block_heterogeneity(spectra, n_boot=50 if small else 200)
    print(het)
    return {
        "trace": tr,
        "density": sd,
        "plot": png,
        "share": share,
        "rotated_share": rotated,
        "heterogeneity": het,
        "op": op,
    }


if __name__ == "__main__":
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--out", default="spectrum_example")
    ap.add_argument("--small", action="store_true", help="a few seconds; used by the test suite")
    args = ap.parse_args()
    main(args.out, small=args.small)
