"""Adam vs AdaSGD vs rotated Adam on the tiny GPT: train, analyze, report.

Paper 000's Fig. 1 / Table 2 experiment at laptop scale: the same tiny GPT (byte-level
tokens from the Python standard library's sources, no download) is trained with three
optimizers at the same learning rate; each run is analyzed at mid-training and at
the end (‖H‖₂, ‖H‖₁,₁, and for rotated Adam the Hessian of the loss it optimized,
L∘R); and a report with loss curves, the norms table, estimates along training, per-tensor
(1,1)-mass and Adam's (gradient norm, local smoothness) points with their (L0, L1)
fit (paper 003) is written.

    python examples/gpt_optimizers_report.py --out runs/gpt_example        # a few minutes
    python examples/gpt_optimizers_report.py --out /tmp/gpt_small --small  # ~30 s

Open ``<out>/report/report.html``.
"""

import argparse
from pathlib import Path

import hessnorm as hn
from hessnorm.analyze import write_results
from hessnorm.report import make_report
from hessnorm.train import TrainConfig, train

OPTIMIZERS = ("adam", "adasgd", "rotated-adam")


def main(out: Path, small: bool = False) -> Path:
    steps = 20 if small else 300
    runs = []
    for opt in OPTIMIZERS:
        run = out / opt
        cfg = TrainConfig(
            task="gpt",
            optimizer=opt,
            steps=steps,
            lr=3e-3,
            out=str(run),
            seed=0,
            ckpt_every=steps // 2,
            eval_every=max(1, steps // 10),
            progress=not small,
            # Adam also records (‖∇f‖, local smoothness) pairs for the (L0, L1) view
            record_smoothness_every=(2 if small else 5) if opt == "adam" else 0,
            task_options={"n_layer": 1, "n_embd": 32, "n_head": 2, "block_size": 32}
            if small
            else {},
        )
        train(cfg)
        runs.append(run)
    df = hn.analyze(
        runs,
        estimators=["spectral", "l11"],
        n_cauchy=20 if small else 50,
        eval_examples=16 if small else 64,
        tol=1e-3,
        progress=not small,
    )
    results = write_results(df, out / "results.csv")
    print(
        df[
            ["run", "estimator", "value", "value_per_dim", "low", "high", "n_hvp", "seconds"]
        ].to_string(index=False)
    )
    report = make_report(
        [*runs, results],
        out / "report",
        title="Tiny GPT: Adam vs AdaSGD vs rotated Adam",
        progress=not small,
    )
    print(f"report: {report}")
    return report


if __name__ == "__main__":
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--out", type=Path, default=Path("runs/gpt_example"))
    ap.add_argument("--small", action="store_true")
    a = ap.parse_args()
    main(a.out, a.small)
