"""Paper experiments of the trainer, called by ``hessnorm reproduce table1|gpt``.

``reproduce_table1`` re-runs paper 000 Table 1 (loss columns) on the quadratic
of Section 4.1; ``reproduce_gpt`` compares Adam, AdaSGD, rotated Adam and SGD on
the tiny GPT (the ordering of paper 000 Fig. 1).
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch

from hessnorm._io import atomic_write, atomic_write_bytes
from hessnorm.train.tasks import quadratic_sigma

__all__ = ["reproduce_table1", "reproduce_gpt", "quadratic_runs", "TABLE1_PAPER"]

# Paper 000 Table 1: (1,1)-norm/d, loss (β=(0,0)) mean, std, loss (β=(0.9,0.99)) mean, std.
TABLE1_PAPER = {
    "AdaSGD": (0.01164, 0.00887, 0.00119, 0.00405, 0.00021),
    "Adam": (0.01164, 0.00022, 0.00007, 0.00002, 0.00001),
    "Adam (R1)": (0.08324, 0.00314, 0.00031, 0.00066, 0.00008),
    "Adam (R2)": (0.50729, 0.00567, 0.00053, 0.00134, 0.00007),
    "Adam (R3)": (1.23731, 0.00751, 0.00086, 0.00183, 0.00009),
    "Adam (R4)": (2.59919, 0.00978, 0.00132, 0.00254, 0.00008),
}
TABLE1_T = {"Adam (R1)": 0.002, "Adam (R2)": 0.008, "Adam (R3)": 0.015, "Adam (R4)": 0.1}


def quadratic_runs(
    H: torch.Tensor,
    X0: torch.Tensor,
    lrs: torch.Tensor,
    *,
    method: str,
    betas: tuple[float, float],
    steps: int = 100,
    eps: float = 1e-8,
    bias_correction: bool = False,
    eps_inside: bool = True,
) -> torch.Tensor:
    """Final losses ½ xᵀHx of Adam or AdaSGD, for every (start, lr) pair at once.

    Rows of ``X0`` (n, d) are starting points and ``lrs`` (n,) their learning rates;
    all n runs advance together, so one step costs one (n, d) @ (d, d) product.
    The updates are paper 000 Algorithms 1 and 2 (``method`` "adam" / "adasgd") with
    the same switches as :class:`hessnorm.optim.BlockwiseAdam`; the tests check the
    two agree. Returns the losses after ``steps`` steps, shape (n,).
    """
    b1, b2 = betas
    x = X0.clone()
    m = torch.zeros_like(x)
    v = torch.zeros_like(x) if method == "adam" else torch.zeros(len(x), 1, dtype=x.dtype)
    lr = lrs.view(-1, 1)
    for t in range(1, steps + 1):
        g = x @ H
        m.mul_(b1).add_(g, alpha=1 - b1)
        sq = g * g if method == "adam" else (g * g).mean(1, keepdim=True)
        v.mul_(b2).add_(sq, alpha=1 - b2)
        bc1 = 1 - b1**t if bias_correction else 1.0
        bc2 = 1 - b2**t if bias_correction else 1.0
        denom = (v / bc2 + eps).sqrt() if eps_inside else v.sqrt() / math.sqrt(bc2) + eps
        x = x - (lr / bc1) * m / denom
    return 0.5 * ((x @ H) * x).sum(1)


def _best_lr(H, X0, method, betas, lrs, **kw):
    """Mean and std over starts of the final loss at the lr with the lowest mean."""
    S, L = len(X0), len(lrs)
    f = quadratic_runs(
        H, X0.repeat_interleave(L, 0), lrs.repeat(S), method=method, betas=betas, **kw
    ).view(S, L)
    mean = torch.nan_to_num(f.mean(0), nan=math.inf)
    i = int(mean.argmin())
    return float(mean[i]), float(f[:, i].std()), float(lrs[i])


def _tuned(H, X0, method, betas, **kw):
    """Two-stage grid search: half-decades 1e-4..1, then 1/16-decade steps around the best."""
    coarse = torch.logspace(-4, 0, 9, dtype=torch.float64)
    _, _, lr = _best_lr(H, X0, method, betas, coarse, **kw)
    fine = lr * torch.logspace(-0.5, 0.5, 17, dtype=torch.float64)
    return _best_lr(H, X0, method, betas, fine, **kw)


def reproduce_table1(out_dir: Path, quick: bool, seed: int, progress: bool) -> None:
    """Paper 000 Table 1 (loss columns): AdaSGD, Adam and Adam on ExpSkew-rotated quadratics.

    L_i(x) = ½ xᵀ R_iᵀ Σ R_i x, d = 1000, R_i = exp(t_i A) (App. D.1, t ∈ {0.002,
    0.008, 0.015, 0.1}, one A from ``seed``), 100 steps from R_iᵀ x₀, x₀ ~ U[0, 1]^d
    drawn with seeds ``seed .. seed+9``; for each setting the learning rate with the
    lowest mean final loss over the 10 starts (two-stage log grid), reported as
    mean ± std. Optimizers use torch's conventions (bias correction, sqrt(v) + ε,
    ε = 1e-8): with ε inside the root the Adam (β = 0) row is 5x worse than the
    paper's, with it outside all rows land near the paper's values.
    ``quick``: d = 200, 3 starts, 30 steps (a smoke test, not the table).
    Writes ``table.csv`` and ``table.md`` under ``out_dir``.
    """
    import pandas as pd

    from hessnorm.rotation import ExpSkew

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    d, n_seeds, steps = (200, 3, 30) if quick else (1000, 10, 100)
    kw = dict(steps=steps, eps=1e-8, bias_correction=True, eps_inside=False)
    t0 = time.perf_counter()
    sigma = quadratic_sigma(d)
    X0 = torch.stack(
        [
            torch.rand(d, dtype=torch.float64, generator=torch.Generator().manual_seed(seed + s))
            for s in range(n_seeds)
        ]
    )
    settings = [("AdaSGD", "adasgd", 0.0), ("Adam", "adam", 0.0)]
    settings += [(name, "adam", t) for name, t in TABLE1_T.items()]
    rows = []
    iterator = settings
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(settings, desc="table1", unit="setting")
    for name, method, t in iterator:
        if t:
            R = ExpSkew(d, t, seed=seed).matrix()
            H, X = R.T @ (sigma.view(-1, 1) * R), X0 @ R  # rows of X: Rᵀ x₀
        else:
            H, X = torch.diag(sigma), X0
        l11 = float(H.abs().sum()) / d
        row = {"optimizer": name, "t": t, "l11_per_d": l11}
        for tag, betas in (("b0", (0.0, 0.0)), ("b9", (0.9, 0.99))):
            mean, std, lr = _tuned(H, X, method, betas, **kw)
            row |= {f"loss_{tag}_mean": mean, f"loss_{tag}_std": std, f"lr_{tag}": lr}
        paper = TABLE1_PAPER[name]
        row |= {"paper_l11_per_d": paper[0], "paper_loss_b0": paper[1], "paper_loss_b9": paper[3]}
        rows.append(row)
    df = pd.DataFrame(rows)
    atomic_write(out_dir / "table.csv", lambda tmp: df.to_csv(tmp, index=False))
    seconds = time.perf_counter() - t0
    _write_table1_md(out_dir / "table.md", df, d, n_seeds, steps, seed, seconds, quick)


def _orderings_hold(col: pd.Series) -> bool:  # noqa: F821 - pandas imported lazily
    """Paper 000's orderings: Adam < Adam(R1) < ... < Adam(R4), and Adam < AdaSGD."""
    v = dict(zip(col.index, col.values))
    chain = [v["Adam"], v["Adam (R1)"], v["Adam (R2)"], v["Adam (R3)"], v["Adam (R4)"]]
    return all(a < b for a, b in zip(chain, chain[1:])) and v["Adam"] < v["AdaSGD"]


def _write_table1_md(path, df, d, n_seeds, steps, seed, seconds, quick) -> None:
    idx = df.set_index("optimizer")
    lines = [
        "# Paper 000 Table 1 (loss columns), reproduced",
        "",
        f"Quadratic of Section 4.1, d = {d}, {steps} steps, mean ± std over {n_seeds} starts "
        f"x₀ ~ U[0,1]^d (seeds {seed}..{seed + n_seeds - 1}), best learning rate per cell "
        "(two-stage log grid 1e-4..1). Optimizers with torch conventions (bias correction, "
        "sqrt(v) + ε, ε = 1e-8). Generated by `hessnorm reproduce table1`"
        + (" --quick (NOT the table: smaller problem)" if quick else "")
        + f" in {seconds:.0f} s.",
        "",
        "| optimizer | (1,1)-norm/d (paper) | loss β=(0,0) | paper | lr | "
        "loss β=(0.9,0.99) | paper | lr |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in idx.iterrows():
        p = TABLE1_PAPER[name]
        lines.append(
            f"| {name} | {r.l11_per_d:.5f} ({p[0]:.5f}) | {r.loss_b0_mean:.5f} ± {r.loss_b0_std:.5f}"
            f" | {p[1]:.5f} ± {p[2]:.5f} | {r.lr_b0:.3g} | {r.loss_b9_mean:.5f} ± "
            f"{r.loss_b9_std:.5f} | {p[3]:.5f} ± {p[4]:.5f} | {r.lr_b9:.3g} |"
        )
    lines.append("")
    for tag, pcol in (("b0", 1), ("b9", 3)):
        ratio = idx[f"loss_{tag}_mean"] / [TABLE1_PAPER[n][pcol] for n in idx.index]
        lines.append(
            f"- β = {'(0, 0)' if tag == 'b0' else '(0.9, 0.99)'}: orderings of the paper "
            f"(Adam < Adam(R1) < … < Adam(R4), Adam < AdaSGD) "
            f"{'hold' if _orderings_hold(idx[f'loss_{tag}_mean']) else 'DO NOT hold'}; "
            f"ours/paper ratio {ratio.min():.2f} … {ratio.max():.2f}."
        )
    atomic_write_bytes(path, ("\n".join(lines) + "\n").encode())


GPT_OPTIMIZERS = ("adam", "adasgd", "rotated-adam", "sgd")
GPT_LR_GRID = (3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1)


def reproduce_gpt(out_dir: Path, quick: bool, seed: int, progress: bool) -> None:
    """Adam vs AdaSGD vs rotated Adam vs SGD on the tiny GPT (paper 000 Fig. 1 ordering).

    Every optimizer is trained on the same learning-rate grid (``GPT_LR_GRID``, cosine
    schedule with warmup, (β1, β2) = (0.9, 0.95), SGD momentum 0.9) for the same
    number of steps from the same initialization and batches; the best lr per
    optimizer is the one with the lowest final eval loss (diverged runs count as
    +inf). Nobody is tuned more than anyone else. Writes ``curves.csv`` (every run's
    metrics), ``final.csv`` (final losses per run), ``curves.png`` and ``table.md``.
    ``quick``: a 1-layer model, 15 steps, two learning rates (a smoke test).
    """
    import tempfile

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    from hessnorm.errors import NonFiniteError
    from hessnorm.train.loop import TrainConfig, train

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if quick:
        steps, grid, opts = 15, (1e-3, 1e-2), {"n_layer": 1, "n_embd": 32, "n_head": 2}
    else:
        steps, grid, opts = 300, GPT_LR_GRID, {}
    t0 = time.perf_counter()
    curves, finals = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for name in GPT_OPTIMIZERS:
            for lr in grid:
                run = Path(tmp) / f"{name}_{lr:g}"
                cfg = TrainConfig(
                    task="gpt",
                    optimizer=name,
                    steps=steps,
                    lr=lr,
                    out=str(run),
                    seed=seed,
                    device="cpu",
                    progress=progress,
                    eval_every=max(1, steps // 15),
                    task_options=opts,
                )
                status = "ok"
                try:
                    train(cfg)
                except NonFiniteError:
                    status = "diverged"
                m = pd.read_csv(run / "metrics.csv") if (run / "metrics.csv").exists() else None
                if m is not None and len(m):
                    m.insert(0, "peak_lr", lr)
                    m.insert(0, "optimizer", name)
                    curves.append(m)
                done = status == "ok" and m is not None and len(m) == steps
                finals.append(
                    {
                        "optimizer": name,
                        "lr": lr,
                        "status": status,
                        "final_train_loss": float(m.train_loss.iloc[-1]) if done else math.inf,
                        "final_eval_loss": float(m.eval_loss.iloc[-1]) if done else math.inf,
                    }
                )
    curves_df = pd.concat(curves, ignore_index=True)
    final = pd.DataFrame(finals)
    atomic_write(out_dir / "curves.csv", lambda tmp: curves_df.to_csv(tmp, index=False))
    atomic_write(out_dir / "final.csv", lambda tmp: final.to_csv(tmp, index=False))
    best = final.loc[final.groupby("optimizer", sort=False).final_eval_loss.idxmin()]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for _, b in best.iterrows():
        c = curves_df[(curves_df.optimizer == b.optimizer) & (curves_df.peak_lr == b.lr)]
        axes[0].plot(
            c.step,
            c.train_loss.rolling(10, min_periods=1).mean(),
            label=f"{b.optimizer} (lr {b.lr:g})",
        )
        ev = c.dropna(subset=["eval_loss"])
        axes[1].plot(ev.step, ev.eval_loss, marker="o", ms=3, label=f"{b.optimizer}")
    axes[0].set(
        title="train loss (10-step moving mean)", xlabel="training step", ylabel="loss (nats/token)"
    )
    axes[1].set(title="eval loss (held-out split)", xlabel="training step")
    axes[0].legend()
    fig.tight_layout()
    atomic_write(out_dir / "curves.png", lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    plt.close(fig)
    seconds = time.perf_counter() - t0
    v = dict(zip(best.optimizer, best.final_eval_loss))
    holds = v["adam"] < v["adasgd"] < v["rotated-adam"]
    lines = [
        "# Tiny GPT: Adam vs AdaSGD vs rotated Adam vs SGD",
        "",
        f"Task `gpt` (default tiny config{' (quick: 1 layer)' if quick else ''}, byte-level "
        f"Python stdlib corpus), {steps} steps, seed {seed}, cosine schedule with warmup, "
        f"(β1, β2) = (0.9, 0.95); every optimizer on the same lr grid {list(grid)}; best lr = "
        f"lowest final eval loss. CPU, {seconds:.0f} s. Generated by `hessnorm reproduce gpt`"
        f"{' --quick' if quick else ''}.",
        "",
        "| optimizer | best lr | final train loss | final eval loss |",
        "|---|---|---|---|",
    ]
    for _, b in best.iterrows():
        lines.append(
            f"| {b.optimizer} | {b.lr:g} | {b.final_train_loss:.4f} | {b.final_eval_loss:.4f} |"
        )
    lines += [
        "",
        f"Paper 000 Fig. 1 ordering of final loss, Adam < AdaSGD < rotated Adam: "
        f"**{'holds' if holds else 'does not hold'}** at this scale "
        f"(eval: adam {v['adam']:.4f}, adasgd {v['adasgd']:.4f}, rotated-adam "
        f"{v['rotated-adam']:.4f}, sgd {v['sgd']:.4f}).",
        "",
        "All runs (final eval loss; inf = diverged):",
        "",
        "| optimizer | " + " | ".join(f"{lr:g}" for lr in grid) + " |",
        "|---|" + "---|" * len(grid),
    ]
    for name in GPT_OPTIMIZERS:
        vals = final[final.optimizer == name].final_eval_loss
        lines.append(f"| {name} | " + " | ".join(f"{x:.4f}" for x in vals) + " |")
    atomic_write_bytes(out_dir / "table.md", ("\n".join(lines) + "\n").encode())
