"""Report figures: matplotlib only through the object API (``Figure``), never
``matplotlib.use``; pyplot only when :func:`plot_l0l1` is called without an ``ax`` (for
notebooks).
"""

from __future__ import annotations

import io
import math
from typing import Any

import numpy as np
import pandas as pd

from hessnorm.l0l1 import L0L1Fit, fit_l0l1, l0l1_points
from hessnorm.report.inputs import (
    DPI,
    LOSS_UNITS,
    RESULT_COLUMNS,
    SMOOTH_COLUMNS,
    TOP_TENSORS,
    RunData,
    estimator_rank,
)
from hessnorm.results import per_dim_label

__all__ = ["plot_l0l1", "texts_outside_canvas"]


def plot_l0l1(
    grad_norms,
    smoothness,
    fit: L0L1Fit | None = None,
    ax=None,
    title: str = "Local smoothness vs gradient norm",
    color_by=None,
    color_label: str = "step",
):
    """Scatter ``(‖∇f‖, local smoothness)`` on log-log axes with the fitted bounds.

    Draws the points, the (L0, L1) line ``L0 + L1 g`` and the slope-1 line ``e^c g``
    of paper 003, Fig. 1b (``fit`` is computed with :func:`fit_l0l1` when omitted).

    Args:
        grad_norms, smoothness: the points (as for :func:`fit_l0l1`).
        fit: a precomputed :class:`L0L1Fit`.
        ax: matplotlib Axes to draw on (a new figure when None).
        title: axes title.
        color_by: optional per-point values (e.g. the step) for the colour map.
        color_label: colour-bar label when ``color_by`` is given.

    Returns:
        The matplotlib Axes.

    Example:
        Drawing on a ``Figure`` of the object API (no pyplot state to close):

        >>> from matplotlib.figure import Figure
        >>> ax = Figure().subplots()
        >>> plot_l0l1([1.0, 2.0, 4.0], [2.0, 3.0, 5.0], ax=ax) is ax  # on s = 1 + g
        True
        >>> [line.get_label() for line in ax.lines], ax.get_xscale()
        (['L0 + L1·‖∇f‖ (L0=1, L1=1)', 'log s = log ‖∇f‖ + 0.69'], 'log')
    """
    import matplotlib.pyplot as plt

    g, s = l0l1_points(grad_norms, smoothness)
    fit = fit if fit is not None else fit_l0l1(g, s)
    if ax is None:
        _, ax = plt.subplots(figsize=(5.5, 4.2))
    pos = g > 0
    sc = ax.scatter(
        g[pos],
        s[pos],
        s=12,
        c=None if color_by is None else np.asarray(color_by)[pos],
        cmap=None if color_by is None else "viridis",
        alpha=0.8,
        label="trajectory points",
    )
    if color_by is not None:
        ax.figure.colorbar(sc, ax=ax, label=color_label)
    if pos.any():
        lo, hi = float(g[pos].min()), float(g[pos].max())
        grid = np.geomspace(lo / 1.5, hi * 1.5, 200)
        ax.plot(
            grid,
            fit.bound(grid),
            "r-",
            label=f"L0 + L1·‖∇f‖ (L0={fit.L0:.3g}, L1={fit.L1:.3g})",
        )
        if math.isfinite(fit.loglog_c):
            ax.plot(
                grid,
                fit.loglog_L1 * grid,
                "b--",
                label=f"log s = log ‖∇f‖ + {fit.loglog_c:.2f}",
            )
    ax.set_xscale("log")
    ax.set_yscale("log")
    if pos.any():
        # Keep the view on the data: the slope-1 line can run far above it.
        top = max(float(s[pos].max()), float(fit.bound(hi)))
        ax.set_ylim(float(s[pos].min()) / 2, top * 3)
    ax.set_xlabel("gradient norm ‖∇f(w)‖")
    ax.set_ylabel("local smoothness")
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    return ax


# ---------------------------------------------------------------------------- figures


def _new_figure(w: float, h: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(w, h), dpi=DPI)


def _finish(fig, rect=None) -> bytes:
    """Lay out, wrap any title or label wider than the canvas, and render to PNG bytes."""

    def layout():
        if rect is None:
            fig.tight_layout()
        else:
            fig.tight_layout(rect=rect)

    layout()
    for _ in range(4):  # wrapping one line can push another; a few rounds settle it
        if not _wrap_wide_texts(fig):
            break
        layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()


def _shown_texts(fig) -> list:
    """The figure's visible, non-empty titles, axis labels, annotations and legend texts."""
    out = list(fig.texts)
    for leg in fig.legends:
        out += leg.get_texts()
    for ax in fig.axes:
        if not ax.get_visible():
            continue
        out += [ax.title, ax._left_title, ax._right_title, ax.xaxis.label, ax.yaxis.label]
        out += ax.texts
        if ax.get_legend() is not None:
            out += ax.get_legend().get_texts()
    return [t for t in out if t.get_visible() and t.get_text().strip()]


def _renderer(fig):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    if fig.canvas is None or not hasattr(fig.canvas, "get_renderer"):
        FigureCanvasAgg(fig)
    fig.draw_without_rendering()
    return fig.canvas.get_renderer()


def texts_outside_canvas(fig, tol_px: float = 0.5) -> list[str]:
    """The texts of ``fig`` whose rendered extent leaves the canvas (would be clipped).

    Renders the figure at its own dpi (as ``savefig`` with that dpi does) and compares
    with the canvas the window extent of every visible title, suptitle, axis label,
    annotation and legend text, and of every visible axes with its decorations (tick
    labels included; reported as ``"axes '<title>'"``).

    Example:
        >>> from matplotlib.figure import Figure
        >>> fig = Figure(figsize=(2, 2), dpi=50)
        >>> _ = fig.suptitle("a title far too long for a figure two inches wide, surely")
        >>> [t[:7] for t in texts_outside_canvas(fig)]
        ['a title']
    """
    renderer = _renderer(fig)
    w, h = fig.bbox.width, fig.bbox.height

    def outside(box) -> bool:
        return box.x0 < -tol_px or box.y0 < -tol_px or box.x1 > w + tol_px or box.y1 > h + tol_px

    bad = [t.get_text() for t in _shown_texts(fig) if outside(t.get_window_extent(renderer))]
    for ax in fig.axes:
        if ax.get_visible() and outside(ax.get_tightbbox(renderer)):
            bad.append(f"axes {ax.get_title()!r}")
    return bad


def _wrap_wide_texts(fig) -> bool:
    """Re-wrap every text wider than the canvas onto more lines; True if any changed."""
    import textwrap

    renderer = _renderer(fig)
    width = fig.bbox.width
    changed = False
    for t in _shown_texts(fig):
        box = t.get_window_extent(renderer)
        if box.width <= 0.98 * width:
            continue
        text = t.get_text()
        longest = max(len(line) for line in text.splitlines())
        chars = max(8, int(longest * 0.95 * width / box.width))
        wrapped = "\n".join(textwrap.fill(line, chars) for line in text.splitlines())
        if wrapped != text:
            t.set_text(wrapped)
            changed = True
    return changed


def _plain_log_ticks(ax, which: str = "y") -> None:
    """Plain tick labels ("0.5", "20") on a log axis; they read faster than "5×10⁻¹".

    When the axis spans less than ~2 decades, 2 and 5 are labelled (and gridded) too,
    since powers of ten alone leave it nearly bare.
    """
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    axis = ax.yaxis if which == "y" else ax.xaxis
    lo, hi = ax.get_ylim() if which == "y" else ax.get_xlim()
    plain = FuncFormatter(lambda v, _: f"{v:g}")
    axis.set_major_formatter(plain)
    if lo > 0 and math.log10(hi / lo) < 2:
        axis.set_minor_locator(LogLocator(base=10, subs=(2.0, 5.0)))
        axis.set_minor_formatter(plain)
        ax.grid(True, which="minor", axis=which, alpha=0.15)
    else:
        axis.set_minor_formatter(NullFormatter())


def _maybe_log(ax, values: np.ndarray, ratio: float = 20.0) -> None:
    """Log-scale the y axis when the positive values span more than ``ratio``."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if v.size and (v > 0).all() and v.max() / v.min() > ratio:
        ax.set_yscale("log")
        ax.set_ylim(v.min() / 1.3, v.max() * 1.3)
        _plain_log_ticks(ax, "y")


def loss_figure(task: str, runs: list[RunData], colors: dict) -> bytes:
    """PNG of the training loss per run (and the evaluation loss beside it, when logged).

    Example:
        >>> from pathlib import Path
        >>> run = RunData(Path("runs/adam"), {"task": "quadratic"},
        ...               pd.DataFrame({"step": [1, 2, 3], "train_loss": [3.0, 2.0, 1.5]}), "adam")
        >>> loss_figure("quadratic", [run], {"adam": "C0"})[:4]
        b'\\x89PNG'
    """
    has_eval = any(
        "eval_loss" in r.metrics.columns and r.metrics["eval_loss"].notna().any() for r in runs
    )
    fig = _new_figure(11 if has_eval else 6.5, 4.3)
    axes = fig.subplots(1, 2 if has_eval else 1, squeeze=False)[0]
    ylabel = LOSS_UNITS.get(task, "loss")
    all_train, all_eval = [], []
    window = 1
    for r in runs:
        m = r.metrics.dropna(subset=["train_loss"])
        c = colors[r.label]
        n = len(m)
        w = max(1, n // 50) if n > 100 else 1
        window = max(window, w)
        if w > 1:
            axes[0].plot(m["step"], m["train_loss"], color=c, alpha=0.2, lw=0.8)
            smooth = m["train_loss"].rolling(w, min_periods=1).mean()
            axes[0].plot(m["step"], smooth, color=c, lw=1.6, label=r.label)
        else:
            axes[0].plot(m["step"], m["train_loss"], color=c, lw=1.4, label=r.label)
        all_train.append(m["train_loss"].to_numpy())
        if has_eval and "eval_loss" in r.metrics.columns:
            e = r.metrics.dropna(subset=["eval_loss"])
            if len(e):
                axes[1].plot(
                    e["step"], e["eval_loss"], "--o", color=c, ms=3.5, lw=1.4, label=r.label
                )
                all_eval.append(e["eval_loss"].to_numpy())
    title = f"{task}: training loss"
    if window > 1:
        title += f"\n(faint: per step; solid: moving average over ≤{window} steps)"
    axes[0].set_title(title, fontsize=10)
    _maybe_log(axes[0], np.concatenate(all_train) if all_train else [])
    if has_eval:
        axes[1].set_title(f"{task}: evaluation loss (held-out set)", fontsize=10)
        _maybe_log(axes[1], np.concatenate(all_eval) if all_eval else [])
    for ax in axes:
        ax.set_xlabel("training step")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=8, title="optimizer", title_fontsize=8)
    return _finish(fig)


def trajectory_figure(results: pd.DataFrame, colors: dict) -> tuple[bytes, pd.DataFrame] | None:
    """PNG of each estimate (bound / d) along training, one panel per estimator, and its data.

    Only runs with at least two analysed steps are drawn; None when there are none.
    ``results``: normalized results rows with ``run_key`` and ``label``.

    Example:
        >>> from pathlib import Path
        >>> from hessnorm.report.inputs import normalize_results, run_keys
        >>> rows = pd.DataFrame({"checkpoint": ["r/c1.pt", "r/c2.pt"], "run": ["r", "r"],
        ...                      "step": [1, 2], "estimator": ["l11"] * 2, "value": [4.0, 6.0],
        ...                      "low": [3.0, 5.0], "high": [5.0, 7.0], "d": [2, 2]})
        >>> res = run_keys(normalize_results(rows, Path("<DataFrame>")), [])
        >>> png, data = trajectory_figure(res, {"r": "C0"})
        >>> png[:4], data[["step", "bound_per_dim"]].values.tolist()
        (b'\\x89PNG', [[1.0, 2.0], [2.0, 3.0]])
        >>> trajectory_figure(res.iloc[:1], {"r": "C0"}) is None  # one step: no trajectory
        True
    """
    df = results.drop_duplicates(subset=[c for c in RESULT_COLUMNS if c != "details"])
    df = df[df["step"].notna()]
    n_steps = df.groupby("run_key")["step"].nunique()
    df = df[df["run_key"].isin(n_steps[n_steps >= 2].index)].copy()
    if df.empty:
        return None
    # One panel per estimator; a run's rotation is already in its label.
    df["panel"] = df["estimator"]
    panels = sorted(df["panel"].unique(), key=estimator_rank)
    ncol = min(3, len(panels))
    nrow = math.ceil(len(panels) / ncol)
    fig = _new_figure(5.0 * ncol, 3.9 * nrow)
    axes = fig.subplots(nrow, ncol, squeeze=False).ravel()
    for ax, panel in zip(axes, panels):
        sub = df[df["panel"] == panel]
        bound = sub["bound"].iloc[0]
        for label, g in sub.groupby("label", sort=False):
            g = g.sort_values("step")
            d = g["d"].where(g["d"] > 0)
            y = g["bound_per_dim"]
            lo = (g["bound_low"] / d).fillna(y)
            hi = (g["bound_high"] / d).fillna(y)
            yerr = np.vstack([(y - lo).clip(lower=0), (hi - y).clip(lower=0)])
            _eval_spread_bars(ax, g, y, colors[label])
            ax.errorbar(
                g["step"],
                y,
                yerr=yerr,
                fmt="-o",
                ms=3.5,
                capsize=3,
                color=colors[label],
                label=label,
            )
        _maybe_log(ax, sub["bound_per_dim"].to_numpy(), ratio=10.0)
        steps = np.sort(sub["step"].unique())
        if len(steps) <= 8:  # few checkpoints: tick exactly at them
            ax.set_xticks(steps, [str(int(x)) for x in steps])
        metric = sub["metric"].iloc[0]
        ax.set_title(f"{panel}" + (f": {metric}" if metric else ""), fontsize=10)
        ax.set_xlabel("training step")
        ax.set_ylabel(per_dim_label(bound))
        ax.grid(True, which="major", alpha=0.3)
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    spread = "eval_sd" in df.columns and df["eval_sd"].notna().any()
    fig.suptitle(
        "Hessian-norm estimates along training (error bars: estimator interval"
        + ("; light bars: ± 1 sd over independent evaluation sets)" if spread else ")"),
        fontsize=11,
    )
    # One legend for all panels: the runs are the same in each.
    handles, names = {}, []
    for ax in axes[: len(panels)]:
        for h, n in zip(*ax.get_legend_handles_labels()):
            if n not in handles:
                handles[n] = h
                names.append(n)
    ncol_leg = min(4, len(names))
    fig.legend([handles[n] for n in names], names, loc="lower center", ncol=ncol_leg, fontsize=9)
    legend_h = 0.35 * math.ceil(len(names) / ncol_leg) / fig.get_figheight()
    data = df[
        [
            "label",
            "run_key",
            "step",
            "estimator",
            "rotation",
            "bound",
            "bound_per_dim",
            "bound_low",
            "bound_high",
            "value",
            "low",
            "high",
            "d",
        ]
    ].sort_values(["label", "estimator", "step"])
    return _finish(fig, rect=(0, legend_h + 0.01, 1, 1)), data


def _eval_spread_bars(ax, g: pd.DataFrame, y: pd.Series, color) -> None:
    """Light wide bars: ± one sd of the bound / d over independent evaluation sets."""
    if "eval_sd" not in g.columns or not g["eval_sd"].notna().any():
        return
    factor = g["bound_per_dim"] / g["value"].where(g["value"] != 0)
    sd = (g["eval_sd"] * factor).fillna(0.0)
    ax.errorbar(g["step"], y, yerr=sd, fmt="none", elinewidth=7, alpha=0.25, color=color, capsize=0)


#: Two-sided 95% normal quantile for the per-tensor share bars.
_Z95 = 1.959963984540054


def per_tensor_shares(table_rows: pd.DataFrame) -> pd.DataFrame:
    """Rows ``label, step, tensor, share`` from the ``per_tensor`` details of l11 rows.

    ``share_low``/``share_high`` come from the estimate's ``per_tensor_share_interval``
    (``interval`` = "estimator"); results written before it existed get the
    conservative bound of :func:`_per_tensor_rel_se` ("conservative").

    Only unrotated rows count: in rotated coordinates (including a rotated-adam run
    analysed in its own coordinates) a "tensor's rows" are not that tensor's.

    Example:
        >>> rows = pd.DataFrame({"label": ["r"], "checkpoint": ["r/c.pt"], "step": [2],
        ...                      "estimator": ["l11"], "rotation": ["none"],
        ...                      "details": [{"per_tensor": {"w": 3.0, "b": 1.0}, "n": 100}]})
        >>> shares = per_tensor_shares(rows)
        >>> shares[["tensor", "share", "interval"]].values.tolist()
        [['w', 0.75, 'conservative'], ['b', 0.25, 'conservative']]
        >>> shares["share_low"].round(3).tolist()  # share · (1 − 1.96 · π / (2√100))
        [0.519, 0.173]
    """
    out = []
    rows = table_rows.drop_duplicates(subset=["label", "checkpoint", "estimator", "rotation"])
    for r in rows.itertuples(index=False):
        if r.estimator != "l11" or r.rotation != "none" or not r.details:
            continue
        details = _details_dict(r.details)
        shares = details.get("per_tensor")
        if not isinstance(shares, dict) or not shares:
            continue
        vals = {k: float(v) for k, v in shares.items() if v is not None}
        total = sum(vals.values())
        if not total > 0:
            continue
        rel = _per_tensor_rel_se(details)
        sizes = details.get("tensor_sizes") or {}
        measured = details.get("per_tensor_share_interval") or {}
        for k, v in vals.items():
            # The contract says "share"; normalize anyway so absolute sums also read right.
            share = v / total
            if k in measured:  # the estimator's own interval for this share
                low, high = (float(x) for x in measured[k])
            else:  # older results: the conservative bound
                low, high = max(0.0, share * (1 - _Z95 * rel)), share * (1 + _Z95 * rel)
            out.append(
                {
                    "label": r.label,
                    "checkpoint": r.checkpoint,
                    "step": r.step,
                    "tensor": k,
                    "size": sizes.get(k),
                    "share": share,
                    "share_low": low,
                    "share_high": high,
                    "interval": "estimator" if k in measured else "conservative",
                }
            )
    cols = [
        "label",
        "checkpoint",
        "step",
        "tensor",
        "size",
        "share",
        "share_low",
        "share_high",
        "interval",
    ]
    if not out:
        return pd.DataFrame(columns=cols)
    df = pd.DataFrame(out, columns=cols)
    df = df.sort_values(["label", "checkpoint", "share"], ascending=[True, True, False])
    return df.reset_index(drop=True)


def _per_tensor_rel_se(details: dict) -> float:
    """A conservative relative standard error of every per-tensor sum of an l11 estimate.

    Each row's Cauchy median m_i = median_k |(H z_k)_i| of n probes has asymptotic
    standard error π m_i / (2√n) (|X| for X ~ Cauchy(0, γ) has median γ and density
    1/(πγ) there). The standard error of a sum is at most the sum of the standard
    errors, whatever the correlation between rows (Cauchy-Schwarz), so a tensor's
    sum S has relative standard error at most π/(2√n). NaN when the details lack n or
    the method is not ``median`` (no such bound is derived for the others).

    Example:
        >>> round(_per_tensor_rel_se({"n": 100, "method": "median"}), 4)
        0.1571
    """
    n = details.get("n")
    if not isinstance(n, (int, float)) or n < 1 or details.get("method", "median") != "median":
        return math.nan
    return math.pi / (2 * math.sqrt(n))


def per_tensor_figure(shares: pd.DataFrame, colors: dict) -> bytes:
    """PNG of the per-tensor shares of ‖H‖₁,₁, one panel per checkpoint file.

    Panels are never merged by label or file name.

    ``shares``: rows of :func:`per_tensor_shares`.

    Example:
        >>> shares = pd.DataFrame({"label": ["r", "r"], "checkpoint": ["r/c.pt"] * 2,
        ...                        "step": [2, 2], "tensor": ["w", "b"], "size": [6, 2],
        ...                        "share": [0.75, 0.25], "share_low": [0.6, 0.2],
        ...                        "share_high": [0.9, 0.3]})
        >>> per_tensor_figure(shares, {"r": "C0"})[:4]
        b'\\x89PNG'
    """
    keys = list(dict.fromkeys(zip(shares["label"], shares["checkpoint"])))
    ncol = 1 if len(keys) == 1 else 2
    nrow = math.ceil(len(keys) / ncol)
    n_bars = min(TOP_TENSORS, int(shares.groupby("checkpoint").size().max()))
    fig = _new_figure(8.0 * ncol, (0.3 * n_bars + 1.6) * nrow)
    axes = fig.subplots(nrow, ncol, squeeze=False).ravel()
    for ax, (label, ckpt) in zip(axes, keys):
        g = shares[(shares["label"] == label) & (shares["checkpoint"] == ckpt)]
        g = g.sort_values("share", ascending=False)
        top = g.head(TOP_TENSORS)
        rest = max(0.0, 1.0 - float(top["share"].sum()))
        y = np.arange(len(top))[::-1]
        err = np.vstack(
            [
                (top["share"] - top["share_low"]).fillna(0).clip(lower=0),
                (top["share_high"] - top["share"]).fillna(0).clip(lower=0),
            ]
        )
        ax.barh(
            y,
            100 * top["share"],
            xerr=100 * err,
            color=colors.get(label, "C0"),
            error_kw=dict(ecolor="0.25", capsize=2, lw=0.8),
        )
        names = [
            f"{t} ({int(n):,})" if n is not None and not pd.isna(n) else str(t)
            for t, n in zip(top["tensor"], top["size"])
        ]
        ax.set_yticks(y, names, fontsize=7.5)
        for yi, v, hi in zip(y, top["share"], top["share_high"].fillna(top["share"])):
            ax.text(100 * hi, yi, f" {100 * v:.1f}%", va="center", fontsize=7)
        ax.set_xlim(0, 100 * float(top["share_high"].fillna(top["share"]).max()) * 1.22)
        step = g["step"].iloc[0]
        title = f"{label}" + ("" if pd.isna(step) else f", step {int(step)}") + f"\n{ckpt}"
        if len(g) > len(top):
            title += f"\n(top {len(top)} of {len(g)} tensors; the rest: {100 * rest:.1f}%)"
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("share of ‖H‖₁,₁ (%), summed over the tensor's rows (parameters)")
        ax.grid(True, axis="x", alpha=0.3)
    for ax in axes[len(keys) :]:
        ax.set_visible(False)
    fig.suptitle(
        "Which tensors carry the (1,1)-norm at the last analysed checkpoint of each run "
        "(error bars: conservative 95%)",
        fontsize=10,
    )
    return _finish(fig)


def l0l1_figure(runs: list[RunData]) -> tuple[bytes, pd.DataFrame]:
    """PNG of local smoothness vs gradient norm per run, and one (L0, L1) fit row per run.

    Example:
        >>> from pathlib import Path
        >>> metrics = pd.DataFrame({"step": [1, 2, 3], "smooth_grad_norm": [1.0, 2.0, 4.0],
        ...                         "local_smoothness": [2.0, 3.0, 5.0]})  # s = 1 + g
        >>> run = RunData(Path("runs/adam"), {"task": "quadratic"}, metrics, "adam")
        >>> png, fits = l0l1_figure([run])
        >>> png[:4], fits[["run", "L0", "L1"]].round(3).values.tolist()
        (b'\\x89PNG', [['adam', 1.0, 1.0]])
    """
    ncol = min(2, len(runs))
    nrow = math.ceil(len(runs) / ncol)
    fig = _new_figure(6.2 * ncol, 4.6 * nrow)
    axes = fig.subplots(nrow, ncol, squeeze=False).ravel()
    rows = []
    for ax, r in zip(axes, runs):
        m = r.metrics.dropna(subset=list(SMOOTH_COLUMNS))
        m = m[(m["smooth_grad_norm"] >= 0) & (m["local_smoothness"] >= 0)]
        g, s = m["smooth_grad_norm"].to_numpy(), m["local_smoothness"].to_numpy()
        fit = fit_l0l1(g, s)
        plot_l0l1(
            g,
            s,
            fit=fit,
            ax=ax,
            title=f"{r.label} ({r.task})",
            color_by=m["step"].to_numpy(),
            color_label="training step",
        )
        ax.set_xlabel("gradient norm ‖∇f(w_k)‖ (training batch)")
        ax.set_ylabel("local smoothness L_loc(w_k)")
        # Keep the frame on the data: the slope-1 line may shoot far above the points.
        pos = (g > 0) & (s > 0)
        if pos.any():
            ax.set_ylim(s[pos].min() / 1.5, max(s[pos].max(), fit.bound(g[pos]).max()) * 1.5)
        ax.grid(False, which="minor")
        _plain_log_ticks(ax, "x")
        _plain_log_ticks(ax, "y")
        rows.append({"run": r.label, "folder": str(r.path), **fit.to_dict()})
    for ax in axes[len(runs) :]:
        ax.set_visible(False)
    return _finish(fig), pd.DataFrame(rows)


# ---------------------------------------------------------------------------- spectrum

_MAX_BLOCK_PANELS = 30


def _esd_axes(ax, block: dict, color, label: str | None = None) -> None:
    """Draw one broadened SLQ density (sidecar block) on a log y-axis, λ_max marked."""
    x = np.asarray(block["grid"], dtype=float)
    y = np.asarray(block["density"], dtype=float)
    top = float(y.max()) if y.size else 0.0
    floor = 1e-7 * top if top > 0 else 1e-300  # PyHessian draws density + 1e-7
    ax.plot(x, np.maximum(y, floor), color=color, lw=1.3, label=label)
    ax.axvline(float(block["lambda_max"]), color=color, ls=":", lw=0.9)
    ax.set_yscale("log")
    ax.set_ylim(floor, top * 3 if top > 0 else 1.0)


def esd_figure(entries: list[tuple[str, Any, dict]], colors: dict) -> bytes:
    """PNG of the ESD per run: ``entries`` are (label, step, sidecar block of the full Hessian).

    Example:
        >>> block = {"grid": [0.0, 1.0, 2.0], "density": [0.2, 0.5, 0.3], "lambda_max": 2.0,
        ...          "lambda_min": 0.0, "n_probes": 2, "steps": 5, "d": 10, "sigma": 0.1}
        >>> esd_figure([("adam", 2, block)], {"adam": "C0"})[:4]
        b'\\x89PNG'
    """
    ncol = min(2, len(entries))
    nrow = math.ceil(len(entries) / ncol)
    fig = _new_figure(6.0 * ncol, 3.9 * nrow)
    axes = fig.subplots(nrow, ncol, squeeze=False).ravel()
    for ax, (label, step, block) in zip(axes, entries):
        _esd_axes(ax, block, colors.get(label, "C0"))
        where = "" if step is None or pd.isna(step) else f", step {int(step)}"
        ax.set_title(
            f"{label}{where}\nSLQ: {block['n_probes']} probes × {block['steps']} steps, "
            f"d = {block['d']}, σ = {block['sigma']:.3g}",
            fontsize=9,
        )
        ax.set_xlabel("eigenvalue λ")
        ax.set_ylabel("density (log scale)")
        ax.text(
            0.98,
            0.95,
            f"λ_max ≈ {block['lambda_max']:.4g}\nλ_min ≈ {block['lambda_min']:.4g}",
            transform=ax.transAxes,
            ha="right",
            va="top",
            fontsize=8,
            bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "none"},
        )
        ax.grid(True, which="major", alpha=0.3)
    for ax in axes[len(entries) :]:
        ax.set_visible(False)
    fig.suptitle("Eigenvalue density of the Hessian (Gaussian-broadened SLQ)", fontsize=11)
    return _finish(fig)


def block_spectra_figure(label: str, step: Any, blocks: dict, color) -> bytes:
    """PNG of per-block SLQ densities as small multiples (one panel per block, own x-range).

    Example:
        >>> block = {"grid": [0.0, 1.0, 2.0], "density": [0.2, 0.5, 0.3], "lambda_max": 2.0,
        ...          "lambda_min": 0.0, "n_probes": 2, "steps": 5, "d": 10, "sigma": 0.1}
        >>> block_spectra_figure("adam", 2, {"layer.weight": block}, "C0")[:4]
        b'\\x89PNG'
    """
    names = list(blocks)
    shown = names[:_MAX_BLOCK_PANELS]
    ncol = min(5, len(shown))
    nrow = math.ceil(len(shown) / ncol)
    fig = _new_figure(3.0 * ncol, 2.3 * nrow + 0.6)
    axes = fig.subplots(nrow, ncol, squeeze=False).ravel()
    for ax, name in zip(axes, shown):
        b = blocks[name]
        _esd_axes(ax, b, color)
        short = name if len(name) <= 28 else "…" + name[-27:]
        ax.set_title(f"{short} (d={b['d']})", fontsize=7.5)
        ax.tick_params(labelsize=6.5)
        ax.grid(True, which="major", alpha=0.3)
    for ax in axes[len(shown) :]:
        ax.set_visible(False)
    for ax in axes[(nrow - 1) * ncol : len(shown)]:
        ax.set_xlabel("eigenvalue λ", fontsize=7.5)
    for ax in axes[::ncol]:
        ax.set_ylabel("density", fontsize=7.5)
    where = "" if step is None or pd.isna(step) else f", step {int(step)}"
    more = "" if len(shown) == len(names) else f" (first {len(shown)} of {len(names)} blocks)"
    fig.suptitle(
        f"Spectra of the diagonal blocks H_bb, one per tensor: {label}{where}{more}\n"
        "(log-scale density; dotted line: largest Ritz value)",
        fontsize=10,
    )
    return _finish(fig)


def diagonal_share_figure(rows: pd.DataFrame, colors: dict) -> tuple[bytes, pd.DataFrame]:
    """Share of ‖H‖₁,₁ on the diagonal: per run (with its interval), and per tensor.

    ``rows``: the diagonal-share / rotated-diagonal-share rows of the spectrum table,
    with their ``details``. Returns the PNG and the per-tensor data (label, tensor, share).

    Example:
        >>> rows = pd.DataFrame({"label": ["r"], "estimator": ["diagonal-share"],
        ...                      "rotation": ["none"], "value": [0.4], "low": [0.3],
        ...                      "high": [0.5], "details": [{"per_tensor": {"w": 0.5, "b": 0.25}}]})
        >>> png, per_tensor = diagonal_share_figure(rows, {"r": "C0"})
        >>> png[:4], per_tensor.values.tolist()
        (b'\\x89PNG', [['r', 'w', 0.5], ['r', 'b', 0.25]])
    """
    per_tensor = []
    for r in rows.itertuples(index=False):
        if r.estimator != "diagonal-share" or r.rotation != "none":
            continue
        shares = _details_dict(r.details).get("per_tensor") or {}
        for k, v in shares.items():
            if v is not None and math.isfinite(float(v)):
                per_tensor.append({"label": r.label, "tensor": k, "share": float(v)})
    pt = pd.DataFrame(per_tensor, columns=["label", "tensor", "share"])
    has_pt = len(pt) > 0
    tensors = list(dict.fromkeys(pt["tensor"]))[:TOP_TENSORS] if has_pt else []
    fig = _new_figure(12.5 if has_pt else 6.0, max(3.8, 0.32 * len(tensors) + 1.6))
    axes = fig.subplots(
        1, 2 if has_pt else 1, squeeze=False, width_ratios=[1, 1.5] if has_pt else None
    )[0]
    ax = axes[0]
    labels, vals, lo, hi, cols, hatches = [], [], [], [], [], []
    for r in rows.itertuples(index=False):
        rot = r.estimator.startswith("rotated") or r.rotation != "none"
        labels.append(f"{r.label}" + ("\n(rotated RᵀHR)" if rot else ""))
        vals.append(r.value)
        lo.append(max(0.0, r.value - r.low))
        hi.append(max(0.0, r.high - r.value))
        cols.append(colors.get(r.label, "C0"))
        hatches.append("//" if rot else "")
    y = np.arange(len(vals))[::-1]
    bars = ax.barh(y, vals, xerr=[lo, hi], color=cols, capsize=4, alpha=0.85)
    for b, h in zip(bars, hatches):
        b.set_hatch(h)
    for yi, v in zip(y, vals):
        ax.text(v, yi + 0.3, f" {v:.3g}", va="bottom", fontsize=7.5)
    ax.set_yticks(y, labels, fontsize=8)
    ax.set_xlim(0, min(1.05, 1.25 * max([v + h for v, h in zip(vals, hi)] + [1e-3])))
    ax.set_xlabel("Σᵢ|Hᵢᵢ| / ‖H‖₁,₁ (error bars: interval)")
    ax.set_title("share of the (1,1)-mass on the diagonal", fontsize=10)
    ax.grid(True, axis="x", alpha=0.3)
    if has_pt:
        ax = axes[1]
        run_labels = list(dict.fromkeys(pt["label"]))
        width = 0.8 / len(run_labels)
        yt = np.arange(len(tensors))[::-1]
        for j, lab in enumerate(run_labels):
            sub = pt[pt["label"] == lab].set_index("tensor")["share"]
            v = [float(sub.get(t, np.nan)) for t in tensors]
            ax.barh(yt + (len(run_labels) - 1 - 2 * j) * width / 2, v, height=width,
                    color=colors.get(lab, f"C{j}"), label=lab)  # fmt: skip
        ax.set_yticks(yt, tensors, fontsize=7.5)
        ax.set_xlim(0, min(1.05, 1.2 * float(pt["share"].max()) + 1e-3))
        ax.set_xlabel("Σᵢ|Hᵢᵢ| / Σᵢ Σⱼ|Hᵢⱼ| over the tensor's rows i")
        more = "" if len(set(pt["tensor"])) <= len(tensors) else f", first {len(tensors)}"
        ax.set_title(f"per tensor (point estimates{more})", fontsize=10)
        ax.grid(True, axis="x", alpha=0.3)
        if len(run_labels) > 1:
            ax.legend(fontsize=8, title="run", title_fontsize=8)
    fig.suptitle("Where the Hessian's (1,1)-mass sits (last checkpoint)", fontsize=11)
    return _finish(fig), pt


def _details_dict(x) -> dict:
    """A row's details (dicts once read by :func:`hessnorm.results.read_results`)."""
    return x if isinstance(x, dict) else {}
