"""``hessnorm report``: tables and figures from training runs and analysis results.

Inputs, in any mix:

* **run folders** of the reference trainer (:mod:`hessnorm.train.loop`): ``config.json``
  (the ``TrainConfig``) and ``metrics.csv`` (``step, train_loss, eval_loss, lr,
  grad_norm, update_norm, seconds`` and, when the run recorded it,
  ``local_smoothness, smooth_grad_norm``);
* **results files** of ``hessnorm analyze --out results.csv|.json``: one row per
  (checkpoint, estimator) with ``value, low, high, value_per_dim, bound_per_dim, d,
  details``, ... (``value`` is the estimated quantity, e.g. ‖H‖₂; ``bound_per_dim`` is
  the bound H(L, Φ) it gives divided by d, e.g. d‖H‖₂ / d = ‖H‖₂).

Output folder (every file written atomically; ``report.md`` and ``report.html`` last):

* ``report.md`` and a self-contained ``report.html`` (figures inlined as base64 PNG);
* ``loss_curves_<task>.png`` — train / eval loss against the step, one line per run
  (paper 000, Figs. 1–2);
* ``norms.csv`` — the smoothness table of paper 000, Tables 2–3: for the last
  checkpoint of every run, each estimated ``H(L, Φ)`` with its bound, interval and
  value / d;
* ``trajectories.png`` — estimates against the training step with their intervals;
* ``l11_per_tensor.png`` / ``l11_per_tensor.csv`` — which tensors carry the (1,1)-norm;
* ``spectrum.csv`` — trace, SLQ density, diagonal share and block heterogeneity rows
  (``hessnorm analyze --estimators trace,density,diagonal-share,block-spectra:by_tensor``);
  ``esd.png`` — the eigenvalue density (log scale) per run; ``block_spectra_<run>.png`` —
  the per-tensor block densities as small multiples; ``diagonal_share.png`` /
  ``diagonal_share_per_tensor.csv`` — the share of ‖H‖₁,₁ on the diagonal per run and
  per tensor (the densities come from the ``<results>.spectra.json`` sidecar);
* ``l0l1.png`` / ``l0l1.csv`` — gradient norm against local smoothness with the fitted
  (L0, L1) bound of paper 003, Assumption 1 (:func:`hessnorm.l0l1.fit_l0l1`).

A section appears only when its data exist. From the shell::

    hessnorm report runs/adam runs/adasgd results.csv --out reports/gpt --title "GPT"

From Python: ``make_report(["runs/adam", "results.csv"], "reports/gpt")``.
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from hessnorm._io import atomic_write_bytes
from hessnorm.errors import ConfigError
from hessnorm.report.document import Doc
from hessnorm.report.figures import (
    block_spectra_figure,
    diagonal_share_figure,
    esd_figure,
    l0l1_figure,
    loss_figure,
    per_tensor_figure,
    per_tensor_shares,
    plot_l0l1,
    trajectory_figure,
)
from hessnorm.report.inputs import (
    TOP_TENSORS,
    RunData,
    dedupe_checkpoints,
    estimator_rank,
    label_runs,
    load_input,
    optimizer_rank,
    run_colors,
    run_keys,
)
from hessnorm.report.tables import (
    format_number,
    last_checkpoint,
    norms_display,
    norms_table,
    runs_table,
    spectrum_display,
    spectrum_table,
)
from hessnorm.results import COLUMNS, columns, family, read_spectra

__all__ = [
    "make_report",
    "load_input",
    "RunData",
    "norms_table",
    "spectrum_table",
    "plot_l0l1",
    "configure_parser",
    "run",
]

# ---------------------------------------------------------------------------- report


def make_report(
    inputs: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    *,
    title: str | None = None,
    progress: bool = True,
) -> Path:
    """Write tables, figures, ``report.md`` and ``report.html`` for runs and results.

    Reads every input with :func:`load_input` (run folders of ``hessnorm train``,
    result files of ``hessnorm analyze``, in any mix), then writes into ``out_dir``:
    loss curves per task (paper 000, Figs. 1–2), the norms table of paper 000,
    Tables 2–3 (:func:`norms_table`, every checkpoint of each run), estimates against
    the step for runs analysed at ≥ 2 steps, the per-tensor share of ‖H‖₁,₁, and the
    (L0, L1) fit of paper 003 (Assumption 1, Fig. 1b) for runs that recorded local
    smoothness. Sections without data are left out. No HVPs: this only reads files.

    Args:
        inputs: run folders and/or results files (``.csv`` / ``.json``).
        out_dir: output folder (created if needed).
        title: report title (default: "hessnorm report").
        progress: show a tqdm bar over the inputs.

    Returns:
        Path of ``report.md``.

    Raises:
        ConfigError: no inputs, or an input that is neither a run folder nor a results file.

    Example:
        >>> import tempfile
        >>> from hessnorm.train.loop import TrainConfig, train
        >>> run_dir = tempfile.mkdtemp()
        >>> _ = train(TrainConfig(task="quadratic", steps=2, out=run_dir, device="cpu",
        ...                       progress=False, task_options={"d": 20}))
        >>> out = Path(tempfile.mkdtemp()) / "report"
        >>> md = make_report([run_dir], out, progress=False)
        >>> md.name, sorted(p.name for p in out.glob("*.png"))
        ('report.md', ['loss_curves_quadratic.png'])
        >>> md.read_text(encoding="utf-8").startswith("# hessnorm report")
        True
    """
    from tqdm.auto import tqdm

    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    if not inputs:
        raise ConfigError("hessnorm report needs at least one run folder or results file.")
    runs: list[RunData] = []
    frames: list[pd.DataFrame] = []
    read: list[str] = []
    for path in tqdm(list(inputs), desc="report: reading inputs", disable=not progress):
        item = load_input(path)
        if isinstance(item, RunData):
            runs.append(item)
            m = item.metrics
            extra = ", with local smoothness" if item.has_smoothness() else ""
            read.append(
                f"run folder `{item.path}`: task {item.task}, optimizer {item.optimizer}, "
                f"{len(m)} logged steps (last {int(m['step'].max()) if len(m) else 0}){extra}"
            )
        else:
            frames.append(item)
            est = ", ".join(sorted(set(item["estimator"]), key=estimator_rank))
            read.append(
                f"results file `{path}`: {len(item)} rows, {item['checkpoint'].nunique()} "
                f"checkpoints, estimators {est or '—'}"
            )
    label_runs(runs)
    results = pd.concat(frames, ignore_index=True) if frames else None
    if results is not None:
        results = run_keys(dedupe_checkpoints(results), runs)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    title = title or "hessnorm report"
    doc = Doc(out)
    doc.h(1, title)
    doc.p(
        "Generated by `hessnorm report` from the inputs below. Every table is also written "
        "as CSV next to this file."
    )
    doc.h(2, "Inputs")
    doc.ul(read)

    labels = [r.label for r in runs]
    if results is not None:
        labels += list(results["label"])
    colors = run_colors(labels)

    if runs:
        _section_runs(doc, runs, colors)
    if results is not None and len(results):
        families = results["estimator"].map(family)
        if families.eq("smoothness").any():
            _section_norms(doc, results, colors)
        if families.eq("spectrum").any():
            _section_spectrum(doc, results, colors)
        other = ~families.isin(["smoothness", "spectrum"])
        if other.any():
            _section_other(doc, results[other.to_numpy()])
    smooth = [r for r in runs if r.has_smoothness()]
    if smooth:
        _section_l0l1(doc, smooth)

    md = out / "report.md"
    atomic_write_bytes(out / "report.html", doc.html(title).encode("utf-8"))
    atomic_write_bytes(md, doc.markdown().encode("utf-8"))
    return md


def _section_other(doc: Doc, results: pd.DataFrame) -> None:
    """Rows of estimators outside the two built-in families (plug-ins, or names this
    installation does not know): one table of their estimates and intervals."""
    cols = ["label", "step", "checkpoint", "estimator", "metric", "value", "low", "high"]
    cols += ["confidence", "n_hvp", "seconds", "d"]
    df = results.drop_duplicates(subset=["checkpoint", "estimator", "rotation"])
    df = df.sort_values(["estimator", "label", "step"], kind="stable")
    extra = [c for c in columns() if c not in COLUMNS and c in df.columns]
    table = df[[c for c in cols + extra if c in df.columns]].reset_index(drop=True)
    if "threshold" in table.columns:  # a stability threshold: how close to the edge
        table["threshold"] = pd.to_numeric(table["threshold"], errors="coerce")
        table["value / threshold"] = table["value"] / table["threshold"]
    doc.h(2, "Other estimates")
    doc.p(
        "Estimators registered outside hessnorm's smoothness and spectrum families (or not "
        "registered where this report was made): each row is one checkpoint's estimate with "
        "its interval, conditional on that checkpoint's evaluation set."
    )
    doc.table(table, "other.csv", table)


def _section_runs(doc: Doc, runs: list[RunData], colors: dict) -> None:
    doc.h(2, "Training and evaluation loss")
    doc.p(
        "One line per run (paper 000, Figs. 1–2 style). Final train loss is the mean over the "
        "last 10% of logged steps; eval loss is on the task's fixed held-out set."
    )
    table = runs_table(runs)
    doc.table(table, "runs.csv", table)
    tasks = sorted({r.task for r in runs})
    for task in tasks:
        group = [r for r in runs if r.task == task]
        group.sort(key=lambda r: (optimizer_rank(r.optimizer), r.label))
        doc.image(
            f"loss_curves_{re.sub(r'[^A-Za-z0-9_-]+', '_', task)}.png",
            loss_figure(task, group, colors),
            f"loss curves, task {task}",
        )


def _section_norms(doc: Doc, results: pd.DataFrame, colors: dict) -> None:
    table = norms_table(results)
    doc.h(2, "Smoothness under each optimizer's geometry")
    doc.p(
        "Paper 000, Tables 2–3: for every analysed checkpoint of each run (in step order), "
        "the smoothness "
        "H(L, Φ) that governs the optimizer with partition Φ, the surrogate the table reports "
        "for it (`bound`: ‖H‖₁,₁ for Adam, d‖H‖₂ for AdaSGD, the blockwise surrogate S(H, Φ) "
        "otherwise: each is the trace of a diagonal A with −A ⪯ H ⪯ A, paper 000 Lemma C.3, "
        "not necessarily the smallest such bound), its estimate with the "
        "estimator's interval, and the estimate divided by the dimension d. A `rotation` "
        "means the Hessian was taken in rotated coordinates (RᵀHR): rotated-adam runs are "
        "analysed in their own coordinates, as in paper 000, Table 2."
    )
    doc.table(norms_display(table), "norms.csv", table)
    _evaluation_data(doc, table)

    traj = trajectory_figure(results, colors)
    if traj is not None:
        png, data = traj
        doc.h(2, "Estimates along training")
        doc.p(
            "Each bound H(L, Φ) divided by d (the `estimate / d` column above) against the "
            "step of the checkpoint it was computed at, one line per run; error bars are the "
            "estimator's interval (conditional on the evaluation set) and, where the results "
            "have `--eval-resamples`, a wider light bar of ± one standard deviation across "
            "independent evaluation sets."
        )
        doc.image("trajectories.png", png, "Hessian-norm estimates against training step")
        atomic_write_bytes(doc.out_dir / "trajectories.csv", data.to_csv(index=False).encode())

    # the per-tensor shares stay at each run's last checkpoint: one panel per run
    rows = last_checkpoint(results).merge(
        table[["checkpoint", "estimator", "rotation"]].drop_duplicates(),
        on=["checkpoint", "estimator", "rotation"],
    )
    shares = per_tensor_shares(rows)
    if len(shares):
        doc.h(2, "Which tensors carry the (1,1)-norm")
        doc.p(
            "Share of ‖H‖₁,₁ = Σᵢⱼ|Hᵢⱼ| summed over the rows i of each tensor (the `per_tensor` "
            f"details of the `l11` estimator) at the last analysed checkpoint of each run (one "
            f"panel per checkpoint file, its path in the title); top {TOP_TENSORS} tensors "
            "shown, with their parameter counts. Error bars: the estimator's interval for each "
            "share (`per_tensor_share_interval`: the influence of every Cauchy probe on the "
            "tensor's sum and on the total, combined by the delta method for the ratio, at the "
            "estimate's confidence); results written before that existed get a conservative "
            "95% bound (each row's median has standard error π/(2√n) times its value, and a "
            "sum's standard error is at most the sum of its rows'), marked in the CSV's "
            "`interval` column. Rotated estimates are left out: their coordinates are not "
            "tensors."
        )
        doc.image("l11_per_tensor.png", per_tensor_figure(shares, colors), "per-tensor share")
        top = shares.groupby("checkpoint", sort=False).head(5)
        pct = lambda c: (100 * top[c]).map(lambda v: f"{v:.1f}%")  # noqa: E731
        display = top.assign(
            share=pct("share"), share_low=pct("share_low"), share_high=pct("share_high")
        )
        doc.table(display, "l11_per_tensor.csv", shares)


def _evaluation_data(doc: Doc, table: pd.DataFrame) -> None:
    """List the evaluation set and loss of every checkpoint in the norms table."""
    if "data" not in table.columns or not table["data"].astype(str).str.len().gt(0).any():
        return
    items = []
    for ckpt, g in table.groupby("checkpoint", sort=False):
        r = g.iloc[0]
        size = f"{format_number(r['eval_windows'])} examples"
        if not pd.isna(r["eval_tokens"]):
            size = f"{format_number(r['eval_windows'])} windows × {format_number(r['eval_tokens'])} tokens"
        seed = "" if pd.isna(r["data_seed"]) else f", data seed {format_number(r['data_seed'])}"
        loss = "" if pd.isna(r["loss"]) else f"; loss {format_number(r['loss'])}"
        grad = "" if pd.isna(r["grad_norm"]) else f", ‖∇L‖₂ {format_number(r['grad_norm'])}"
        items.append(
            f"`{ckpt}` (run `{r['run'] or '—'}`, step {format_number(r['step'])}): `{r['data']}` "
            f"(split {r['split']}), {size}, {r['eval_rule']}{seed}{loss}{grad}"
        )
    doc.p(
        "Evaluation data of each checkpoint above. Every interval is conditional on this "
        "evaluation set: it covers the Hessian of the mean loss over these examples, not the "
        "variation from drawing other examples (the `± eval sets` column, where present, "
        "shows that: one standard deviation of the bound over independent evaluation sets)."
    )
    doc.ul(items)


def _section_spectrum(doc: Doc, results: pd.DataFrame, colors: dict) -> None:
    table = spectrum_table(results)
    doc.h(2, "The whole spectrum: trace, eigenvalue density, diagonal share")
    doc.p(
        "For the last analysed checkpoint of each run: tr(H) by Hutch++ (`trace`) and by "
        "stochastic Lanczos quadrature (`density`; mean eigenvalue = tr(H)/d, with the "
        "extreme Ritz values λ_max, λ_min and tr(H²)/d), the share of ‖H‖₁,₁ on the "
        "diagonal Σᵢ|Hᵢᵢ| / ‖H‖₁,₁ (`diagonal-share`; for the rotated Hessian RᵀHR in "
        "`rotated-diagonal-share`: paper 000 argues a rotation moves the mass off the "
        "diagonal), and the block heterogeneity of Zhang et al. 2024, the mean pairwise "
        "Jensen–Shannon distance between the per-tensor SLQ densities "
        "(`block-spectra:by_tensor`; 0 = identical spectra, √ln 2 ≈ 0.833 = disjoint). "
        "Intervals are each estimator's own (see its docstring)."
    )
    doc.table(spectrum_display(table), "spectrum.csv", table)
    keys = ["checkpoint", "estimator", "rotation"]
    rows = results.merge(table[keys].drop_duplicates(), on=keys)
    rows = rows.drop_duplicates(subset=keys + ["label"])
    cache: dict = {}
    esd, block_figs, missing = [], [], []
    for r in rows.itertuples(index=False):
        if r.estimator != "density" and not r.estimator.startswith("block-spectra"):
            continue
        entry = read_spectra(r._asdict(), cache)
        if entry is None:
            missing.append(f"{r.label} ({r.estimator})")
            continue
        blocks = entry.get("blocks") or {}
        if r.estimator == "density" and blocks:
            esd.append((r.label, r.step, next(iter(blocks.values()))))
        elif len(blocks) > 1:
            block_figs.append((r.label, r.step, blocks))
    if esd:
        doc.h(3, "Eigenvalue density")
        doc.p(
            "The SLQ measure broadened by Gaussians of width σ (1% of the Ritz-value range), "
            "on a log scale as in Ghorbani et al. 2019 and PyHessian; the dotted line marks "
            "the largest Ritz value, a Lanczos estimate of λ_max from below. The per-probe "
            "nodes and weights are in the analyze sidecar `*.spectra.json`."
        )
        doc.image("esd.png", esd_figure(esd, colors), "eigenvalue density per run")
    if block_figs:
        doc.h(3, "Per-tensor block spectra")
        doc.p(
            "SLQ density of each diagonal block H_bb (one block per parameter tensor), each on "
            "its own eigenvalue axis: how different the blocks' spectra are is what the "
            "heterogeneity above measures (Zhang et al. 2024)."
        )
        for label, step, blocks in block_figs:
            name = re.sub(r"[^A-Za-z0-9_-]+", "_", label).strip("_") or "run"
            doc.image(
                f"block_spectra_{name}.png",
                block_spectra_figure(label, step, blocks, colors.get(label, "C0")),
                f"per-tensor block spectra, {label}",
            )
    if missing:
        doc.p(
            "No spectra sidecar found for: "
            + ", ".join(missing)
            + " (write results with `hessnorm analyze --out`, which puts "
            "`<out>.spectra.json` next to them)."
        )
    share = rows[rows["estimator"].isin(["diagonal-share", "rotated-diagonal-share"])]
    if len(share):
        png, per_tensor = diagonal_share_figure(share, colors)
        doc.h(3, "Where the (1,1)-mass sits")
        doc.p(
            "Left: Σᵢ|Hᵢᵢ| / ‖H‖₁,₁ per run with its interval (hatched: the rotated Hessian "
            "RᵀHR). Right: the same share within each tensor's rows, "
            "Σ_{i∈t}|Hᵢᵢ| / Σ_{i∈t}Σⱼ|Hᵢⱼ| (point estimates, from the `per_tensor` details)."
        )
        doc.image("diagonal_share.png", png, "diagonal share per run and per tensor")
        if len(per_tensor):
            atomic_write_bytes(
                doc.out_dir / "diagonal_share_per_tensor.csv",
                per_tensor.to_csv(index=False).encode(),
            )


def _section_l0l1(doc: Doc, runs: list[RunData]) -> None:
    png, fits = l0l1_figure(runs)
    doc.h(2, "Gradient norm vs local smoothness: the (L0, L1) fit")
    doc.p(
        "Paper 003, Assumption 1 bounds the local smoothness by L0 + L1‖∇f(w)‖. Points are "
        "(`smooth_grad_norm`, `local_smoothness`) from metrics.csv (local smoothness along "
        "each recorded step, paper 003 App. E); the red line is the tightest such bound above "
        "all points (`hessnorm.l0l1.fit_l0l1`), the dashed line the log-log bound "
        "log s ≤ log ‖∇f‖ + c of paper 003, Fig. 1b."
    )
    doc.ul(
        [
            f"**{f.run}**: L0 = {f.L0:.4g}, L1 = {f.L1:.4g}, log-log c = {f.loglog_c:.3g} "
            f"({f.n_points} points)"
            for f in fits.itertuples(index=False)
        ]
    )
    doc.image("l0l1.png", png, "gradient norm vs local smoothness with the (L0, L1) fit")
    atomic_write_bytes(doc.out_dir / "l0l1.csv", fits.to_csv(index=False).encode())


# ---------------------------------------------------------------------------- CLI


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``hessnorm report``.

    Example:
        >>> p = argparse.ArgumentParser()
        >>> configure_parser(p)
        >>> args = p.parse_args(["runs/adam", "results.csv", "--out", "reports/gpt"])
        >>> args.inputs, args.out, args.title, args.quiet
        (['runs/adam', 'results.csv'], 'reports/gpt', None, False)
    """
    parser.description = (
        "Tables and figures (report.md, self-contained report.html, PNGs, CSVs) from run "
        "folders of `hessnorm train` and results files of `hessnorm analyze`."
    )
    parser.add_argument(
        "inputs",
        nargs="+",
        metavar="RUN_OR_RESULTS",
        help="run folders (config.json + metrics.csv) and/or results .csv/.json files",
    )
    parser.add_argument("--out", required=True, help="output folder, e.g. reports/gpt")
    parser.add_argument("--title", default=None, help="report title")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """Entry point of ``hessnorm report``; returns the exit status.

    Example:
        >>> import tempfile
        >>> from hessnorm.train.loop import TrainConfig, train
        >>> run_dir = tempfile.mkdtemp()
        >>> _ = train(TrainConfig(task="quadratic", steps=2, out=run_dir, device="cpu",
        ...                       progress=False, task_options={"d": 20}))
        >>> p = argparse.ArgumentParser()
        >>> configure_parser(p)
        >>> out = Path(tempfile.mkdtemp()) / "report"
        >>> run(p.parse_args([run_dir, "--out", str(out), "--quiet"]))
        0
        >>> (out / "report.md").is_file(), (out / "report.html").is_file()
        (True, True)
    """
    md = make_report(args.inputs, args.out, title=args.title, progress=not args.quiet)
    if not args.quiet:
        print(f"wrote {md} and {md.with_suffix('.html')}")
    return 0
