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
* ``l0l1.png`` / ``l0l1.csv`` — gradient norm against local smoothness with the fitted
  (L0, L1) bound of paper 003, Assumption 1 (:func:`hessnorm.l0l1.fit_l0l1`).

A section appears only when its data exist. From the shell::

    hessnorm report runs/adam runs/adasgd results.csv --out reports/gpt --title "GPT"

From Python: ``make_report(["runs/adam", "results.csv"], "reports/gpt")``.
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import html
import io
import json
import math
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hessnorm._io import atomic_write_bytes
from hessnorm.analyze import COLUMNS
from hessnorm.errors import ConfigError

__all__ = ["make_report", "load_input", "RunData", "norms_table", "configure_parser", "run"]

RESULT_REQUIRED = ("checkpoint", "estimator", "value")
RESULT_COLUMNS = tuple(COLUMNS)  # the columns `hessnorm analyze` writes
_NUMERIC = (
    "step",
    "value",
    "value_per_dim",
    "low",
    "high",
    "confidence",
    "bound_per_dim",
    "n_hvp",
    "seconds",
    "d",
)
_TEXT = tuple(c for c in RESULT_COLUMNS if c not in _NUMERIC)
METRICS_REQUIRED = ("step", "train_loss")
SMOOTH_COLUMNS = ("smooth_grad_norm", "local_smoothness")
# Canonical optimizer order (paper 000 lists Adam first, then its variants, then SGD-type).
_OPT_ORDER = ("adam", "adasgd", "rotated-adam", "blockwise-adam", "sgd", "signgd", "rmsprop")
_EST_ORDER = (
    "spectral",
    "l11",
    "blockwise:by_tensor",
    "blockwise:by_row",
    "rotated-l11",
    "rotated-spectral",
)
_LOSS_UNITS = {
    "gpt": "loss (nats/token)",
    "resnet": "cross-entropy loss (nats/example)",
    "quadratic": "loss L(x)",
}
_TOP_TENSORS = 15
_DPI = 120


# ---------------------------------------------------------------------------- inputs


@dataclasses.dataclass
class RunData:
    """A trainer run folder: its config and per-step metrics.

    Attributes:
        path: the folder.
        config: ``config.json`` as a dict (``{}`` if absent).
        metrics: ``metrics.csv`` as a DataFrame (numeric columns, empty cells NaN).
        label: display name (set by :func:`make_report`; the optimizer by default).
    """

    path: Path
    config: dict
    metrics: pd.DataFrame
    label: str = ""

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def task(self) -> str:
        return str(self.config.get("task") or "unknown")

    @property
    def optimizer(self) -> str:
        return str(self.config.get("optimizer") or self.name)

    @property
    def rotation(self) -> str | None:
        """The rotation the optimizer works in (``None`` for non-rotated optimizers).

        The trainer stores a default ``rotation`` spec in every config; only
        ``rotated-*`` optimizers use it, so it labels only those runs.
        """
        rot = self.config.get("rotation")
        if rot and self.optimizer.startswith("rotated") and str(rot).lower() != "none":
            return str(rot)
        return None

    def base_label(self) -> str:
        label = self.optimizer
        if self.rotation:
            label += f" [{self.rotation}]"
        t = (self.config.get("task_options") or {}).get("t")
        if self.task == "quadratic" and t is not None:
            label += f" (t={t:g})" if isinstance(t, (int, float)) else f" (t={t})"
        return label

    def has_smoothness(self) -> bool:
        if not all(c in self.metrics.columns for c in SMOOTH_COLUMNS):
            return False
        return bool(self.metrics[list(SMOOTH_COLUMNS)].notna().all(axis=1).any())


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"cannot read {path} as JSON: {exc}") from exc


def _read_run(folder: Path) -> RunData:
    metrics_path = folder / "metrics.csv"
    try:
        metrics = pd.read_csv(metrics_path)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {metrics_path} as CSV: {exc}") from exc
    missing = [c for c in METRICS_REQUIRED if c not in metrics.columns]
    if missing:
        raise ConfigError(
            f"{metrics_path} lacks the columns {missing}; it is not a metrics file written by "
            "`hessnorm train` (expected step, train_loss, eval_loss, ...)."
        )
    for c in metrics.columns:
        metrics[c] = pd.to_numeric(metrics[c], errors="coerce")
    metrics = metrics.dropna(subset=["step"]).sort_values("step").reset_index(drop=True)
    config: dict = {}
    if (folder / "config.json").is_file():
        config = _read_json(folder / "config.json")
        if not isinstance(config, dict):
            raise ConfigError(f"{folder / 'config.json'} must hold a JSON object (TrainConfig).")
    return RunData(path=folder, config=config, metrics=metrics)


def _normalize_results(df: pd.DataFrame, source: Path) -> pd.DataFrame:
    missing = [c for c in RESULT_REQUIRED if c not in df.columns]
    if missing:
        raise ConfigError(
            f"{source} is not a results file of `hessnorm analyze`: it lacks the columns "
            f"{missing}. Pass run folders (config.json + metrics.csv) or files written by "
            "`hessnorm analyze --out results.csv|.json`."
        )
    df = df.copy()
    for c in RESULT_COLUMNS:
        if c not in df.columns:
            df[c] = np.nan if c in _NUMERIC else ""
    for c in _NUMERIC:
        df[c] = pd.to_numeric(df[c], errors="coerce")
    for c in _TEXT:
        df[c] = df[c].map(_text)
    df["rotation"] = df["rotation"].replace("", "none")
    # value / d is the paper's normalisation; fill it where a producer left it out.
    fill = df["value_per_dim"].isna() & df["d"].gt(0)
    df.loc[fill, "value_per_dim"] = df.loc[fill, "value"] / df.loc[fill, "d"]
    # Without bound_per_dim, take the estimate itself as the bound (true for every
    # estimator but spectral, whose bound d‖H‖₂ is then d·value).
    fill = df["bound_per_dim"].isna()
    spectral = df["bound"].str.startswith("d‖") & df["estimator"].str.endswith("spectral")
    df.loc[fill & spectral, "bound_per_dim"] = df.loc[fill & spectral, "value"]
    df.loc[fill & ~spectral, "bound_per_dim"] = df.loc[fill & ~spectral, "value_per_dim"]
    # The bound is a fixed multiple of the estimate, so its interval is the same multiple.
    factor = df["bound_per_dim"] * df["d"] / df["value"].where(df["value"] != 0)
    df["bound_value"] = df["bound_per_dim"] * df["d"]
    df["bound_low"] = df["low"] * factor
    df["bound_high"] = df["high"] * factor
    df["source"] = str(source)
    return df


def _text(x: Any) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return ""
    if isinstance(x, (dict, list)):
        return json.dumps(x)
    return str(x)


def _read_results(path: Path) -> pd.DataFrame:
    if path.suffix.lower() == ".json":
        data = _read_json(path)
        if isinstance(data, dict):  # pandas orient="columns"/"list": {column: values}
            try:
                data = pd.DataFrame(data).to_dict(orient="records")
            except ValueError as exc:
                raise ConfigError(
                    f"{path} holds a JSON object that is not a table of results: {exc}"
                ) from exc
        if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
            raise ConfigError(
                f"{path} must hold a JSON list of result rows (as written by "
                "`hessnorm analyze --out results.json`)."
            )
        df = pd.DataFrame(data)
    else:
        try:
            df = pd.read_csv(path, keep_default_na=False, na_values=[""], dtype=str)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read {path} as a CSV results file: {exc}") from exc
    return _normalize_results(df, path)


def load_input(path: str | os.PathLike) -> RunData | pd.DataFrame:
    """Read one report input: a run folder (-> :class:`RunData`) or a results file (-> DataFrame).

    A ``metrics.csv`` or ``config.json`` path stands for its run folder. Results
    DataFrames carry every column of ``hessnorm analyze`` (missing optional ones
    filled with NaN / ``""``) plus ``source``.

    Raises:
        ConfigError: the path does not exist, or is neither a run folder nor a
            ``.csv`` / ``.json`` results file, or is malformed.
    """
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"report input {p} does not exist.")
    if p.is_file() and p.name in ("metrics.csv", "config.json"):
        p = p.parent
    if p.is_dir():
        if not (p / "metrics.csv").is_file():
            raise ConfigError(
                f"{p} is a folder without metrics.csv, so not a run folder of `hessnorm train`; "
                "pass run folders (config.json + metrics.csv) or results files of `hessnorm analyze`."
            )
        return _read_run(p)
    if p.suffix.lower() not in (".csv", ".json"):
        raise ConfigError(
            f"{p} is neither a run folder nor a results file (.csv or .json from "
            "`hessnorm analyze --out`)."
        )
    return _read_results(p)


# ---------------------------------------------------------------------------- labels


def _opt_rank(name: str) -> tuple:
    return (_OPT_ORDER.index(name) if name in _OPT_ORDER else len(_OPT_ORDER), name)


def _est_rank(name: str) -> tuple:
    return (_EST_ORDER.index(name) if name in _EST_ORDER else len(_EST_ORDER), name)


def _label_runs(runs: list[RunData]) -> None:
    base = [r.base_label() for r in runs]
    for r, b in zip(runs, base):
        r.label = b if base.count(b) == 1 else f"{b} ({r.name})"


def _run_keys(results: pd.DataFrame, runs: list[RunData]) -> pd.DataFrame:
    """Add ``run_key`` (run folder name, else checkpoint path) and a display ``label``."""
    df = results.copy()
    df["run_key"] = np.where(df["run"] != "", df["run"], df["checkpoint"])
    by_name = {r.name: r.label for r in runs}
    keys = list(dict.fromkeys(df["run_key"]))
    base = {}
    for k in keys:
        row = df.loc[df["run_key"] == k].iloc[0]
        if k in by_name:
            base[k] = by_name[k]
        elif row["optimizer"]:
            base[k] = row["optimizer"]
        else:
            base[k] = Path(k).name or k
    values = list(base.values())
    label = {}
    for k, b in base.items():
        if values.count(b) == 1 or k in by_name:
            label[k] = b
        else:
            label[k] = f"{b} ({Path(k).name or k})"
    # Runs named after the same folder in different results files would still collide.
    df["label"] = df["run_key"].map(label)
    return df


def _colors(labels: Iterable[str]) -> dict[str, Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return {lab: cmap(i % 10) for i, lab in enumerate(dict.fromkeys(labels))}


def _per_dim_label(bound: str) -> str:
    """Axis label of value / d: ``"d‖H‖₂"`` -> ``"‖H‖₂"``, else ``"<bound> / d"``."""
    bound = bound or "estimate"
    if bound.startswith("d") and len(bound) > 1 and bound[1] in "‖|":
        return bound[1:]
    return f"{bound} / d"


# ---------------------------------------------------------------------------- tables


def norms_table(results: pd.DataFrame) -> pd.DataFrame:
    """The smoothness table of paper 000, Tables 2–3, from ``hessnorm analyze`` rows.

    Keeps, for every run (rows sharing ``run``; rows without one each stand alone by
    ``checkpoint``), the rows of its last checkpoint (largest ``step``; the last one
    listed when steps are missing). Exact duplicates (the same file read twice) are
    dropped. Input numbers are copied unchanged; ``bound_value, bound_low,
    bound_high`` are the bound H(L, Φ) named in ``bound`` and its interval
    (``bound_per_dim · d``; the estimate's interval scaled by the same factor, e.g.
    d·[low, high] for the spectral row whose value is ‖H‖₂ and bound d‖H‖₂).

    Args:
        results: rows of ``hessnorm analyze`` (its DataFrame, or :func:`load_input`
            of its results files, concatenated).

    Returns:
        DataFrame with columns ``label, optimizer, run, step, checkpoint, estimator,
        metric, bound, rotation, bound_value, bound_low, bound_high, bound_per_dim,
        value, low, high, confidence, value_per_dim, d, n_hvp, seconds``, ordered by
        optimizer then estimator.

    Example:
        >>> rows = pd.DataFrame({"checkpoint": ["r/ckpt_000010.pt", "r/ckpt_000020.pt"],
        ...                      "run": ["r", "r"], "step": [10, 20], "estimator": ["l11"] * 2,
        ...                      "bound": ["‖H‖₁,₁"] * 2, "value": [1.5, 2.5], "d": [10, 10]})
        >>> t = norms_table(rows)
        >>> t["step"].tolist(), t["value"].tolist(), t["bound_per_dim"].tolist()
        ([20], [2.5], [0.25])
    """
    if "bound_value" not in results.columns:
        results = _normalize_results(results, Path("<DataFrame>"))
    if "run_key" not in results.columns:
        results = _run_keys(results, [])
    df = results.drop_duplicates(subset=[c for c in RESULT_COLUMNS if c != "details"])
    keep = []
    for _, g in df.groupby("run_key", sort=False):
        steps = g["step"]
        if steps.notna().any():
            last_ckpt = g.loc[steps == steps.max(), "checkpoint"].iloc[-1]
        else:
            last_ckpt = g["checkpoint"].iloc[-1]
        keep.append(g[g["checkpoint"] == last_ckpt])
    out = pd.concat(keep) if keep else df.iloc[:0]
    out = out.assign(
        _o=out["optimizer"].map(_opt_rank),
        _e=out["estimator"].map(_est_rank),
    ).sort_values(["_o", "label", "_e", "rotation"], kind="stable")
    cols = [
        "label",
        "optimizer",
        "run",
        "step",
        "checkpoint",
        "estimator",
        "metric",
        "bound",
        "rotation",
        "bound_value",
        "bound_low",
        "bound_high",
        "bound_per_dim",
        "value",
        "low",
        "high",
        "confidence",
        "value_per_dim",
        "d",
        "n_hvp",
        "seconds",
    ]
    out = out[cols].reset_index(drop=True)
    out["step"] = out["step"].astype("Int64")
    out["d"] = out["d"].astype("Int64")
    out["n_hvp"] = out["n_hvp"].astype("Int64")
    return out


def _fmt(x: Any, digits: int = 4) -> str:
    if x is None or x is pd.NA:
        return ""
    if isinstance(x, str):
        return x
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    try:
        v = float(x)
    except (TypeError, ValueError):
        return str(x)
    if math.isnan(v):
        return ""
    if math.isfinite(v) and v == int(v) and abs(v) < 1e6:
        return str(int(v))
    return f"{v:.{digits}g}"


def _interval(low: float, high: float, conf: float) -> str:
    if pd.isna(low) or pd.isna(high):
        return ""
    c = "" if pd.isna(conf) else (" (bound)" if conf >= 1 else f" ({conf:.0%})")
    return f"[{_fmt(low)}, {_fmt(high)}]{c}"


def _norms_display(table: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for r in table.itertuples(index=False):
        d = r.d if not pd.isna(r.d) else None
        rows.append(
            {
                "optimizer": r.label,
                "step": _fmt(r.step),
                "H(L, Φ)": r.metric or r.estimator,
                "bound": r.bound,
                "estimator": r.estimator,
                "rotation": "" if r.rotation == "none" else r.rotation,
                "estimate": _fmt(r.bound_value),
                "interval": _interval(r.bound_low, r.bound_high, r.confidence),
                "estimate / d": _fmt(r.bound_per_dim),
                "d": _fmt(d),
                "HVPs": _fmt(r.n_hvp),
            }
        )
    out = pd.DataFrame(rows)
    if not out.empty and (out["rotation"] == "").all():
        out = out.drop(columns="rotation")
    return out


def _runs_table(runs: list[RunData]) -> pd.DataFrame:
    rows = []
    for r in runs:
        m = r.metrics
        tail = m["train_loss"].dropna()
        n_tail = max(1, len(tail) // 10)
        ev = m["eval_loss"].dropna() if "eval_loss" in m.columns else pd.Series(dtype=float)
        rows.append(
            {
                "run": r.label,
                "folder": str(r.path),
                "task": r.task,
                "optimizer": r.optimizer,
                "peak lr": r.config.get("lr")
                if r.config.get("lr") is not None
                else (float(m["lr"].max()) if "lr" in m.columns else math.nan),
                "steps": int(m["step"].max()) if len(m) else 0,
                "final train loss (mean of last 10%)": float(tail.iloc[-n_tail:].mean())
                if len(tail)
                else math.nan,
                "final eval loss": float(ev.iloc[-1]) if len(ev) else math.nan,
                "seconds": float(m["seconds"].dropna().iloc[-1])
                if "seconds" in m.columns and m["seconds"].notna().any()
                else math.nan,
            }
        )
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------- figures


def _new_figure(w: float, h: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(w, h), dpi=_DPI)


def _finish(fig, rect=None) -> bytes:
    if rect is None:
        fig.tight_layout()
    else:
        fig.tight_layout(rect=rect)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI)
    return buf.getvalue()


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


def _loss_figure(task: str, runs: list[RunData], colors: dict) -> bytes:
    has_eval = any(
        "eval_loss" in r.metrics.columns and r.metrics["eval_loss"].notna().any() for r in runs
    )
    fig = _new_figure(11 if has_eval else 6.5, 4.3)
    axes = fig.subplots(1, 2 if has_eval else 1, squeeze=False)[0]
    ylabel = _LOSS_UNITS.get(task, "loss")
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


def _trajectory_figure(results: pd.DataFrame, colors: dict) -> tuple[bytes, pd.DataFrame] | None:
    df = results.drop_duplicates(subset=[c for c in RESULT_COLUMNS if c != "details"])
    df = df[df["step"].notna()]
    n_steps = df.groupby("run_key")["step"].nunique()
    df = df[df["run_key"].isin(n_steps[n_steps >= 2].index)].copy()
    if df.empty:
        return None
    # One panel per estimator; a run's rotation is already in its label.
    df["panel"] = df["estimator"]
    panels = sorted(df["panel"].unique(), key=_est_rank)
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
        ax.set_ylabel(_per_dim_label(bound))
        ax.grid(True, which="major", alpha=0.3)
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    fig.suptitle(
        "Hessian-norm estimates along training (error bars: estimator interval)", fontsize=11
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


def _per_tensor_shares(table_rows: pd.DataFrame) -> pd.DataFrame:
    """Rows ``label, step, tensor, share`` from the ``per_tensor`` details of l11 rows.

    Only unrotated rows count: in rotated coordinates (including a rotated-adam run
    analysed in its own coordinates) a "tensor's rows" are not that tensor's.
    """
    out = []
    rows = table_rows.drop_duplicates(subset=["label", "checkpoint", "estimator", "rotation"])
    for r in rows.itertuples(index=False):
        if r.estimator != "l11" or r.rotation != "none" or not r.details:
            continue
        try:
            details = json.loads(r.details)
        except json.JSONDecodeError:
            continue
        shares = details.get("per_tensor") if isinstance(details, dict) else None
        if not isinstance(shares, dict) or not shares:
            continue
        vals = {k: float(v) for k, v in shares.items() if v is not None}
        total = sum(vals.values())
        if not total > 0:
            continue
        for k, v in vals.items():
            # The contract says "share"; normalize anyway so absolute sums also read right.
            out.append({"label": r.label, "step": r.step, "tensor": k, "share": v / total})
    if not out:
        return pd.DataFrame(columns=["label", "step", "tensor", "share"])
    df = pd.DataFrame(out).sort_values(["label", "share"], ascending=[True, False])
    return df.reset_index(drop=True)


def _per_tensor_figure(shares: pd.DataFrame, colors: dict) -> bytes:
    labels = list(dict.fromkeys(shares["label"]))
    ncol = 1 if len(labels) == 1 else 2
    nrow = math.ceil(len(labels) / ncol)
    n_bars = min(_TOP_TENSORS, int(shares.groupby("label").size().max()))
    fig = _new_figure(7.5 * ncol, (0.28 * n_bars + 1.4) * nrow)
    axes = fig.subplots(nrow, ncol, squeeze=False).ravel()
    for ax, label in zip(axes, labels):
        g = shares[shares["label"] == label].sort_values("share", ascending=False)
        top = g.head(_TOP_TENSORS)
        rest = g["share"].iloc[_TOP_TENSORS:].sum()
        y = np.arange(len(top))[::-1]
        ax.barh(y, 100 * top["share"], color=colors.get(label, "C0"))
        ax.set_yticks(y, top["tensor"], fontsize=8)
        for yi, v in zip(y, top["share"]):
            ax.text(100 * v, yi, f" {100 * v:.1f}%", va="center", fontsize=7)
        ax.set_xlim(0, 100 * float(top["share"].max()) * 1.18)
        step = g["step"].iloc[0]
        title = f"{label}" + ("" if pd.isna(step) else f", step {int(step)}")
        if len(g) > len(top):
            title += f"\n(top {len(top)} of {len(g)} tensors; the rest: {100 * rest:.1f}%)"
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("share of ‖H‖₁,₁ (%), summed over the tensor's rows")
        ax.grid(True, axis="x", alpha=0.3)
    for ax in axes[len(labels) :]:
        ax.set_visible(False)
    fig.suptitle("Which tensors carry the (1,1)-norm (last checkpoint)", fontsize=11)
    return _finish(fig)


def _l0l1_figure(runs: list[RunData]) -> tuple[bytes, pd.DataFrame]:
    from hessnorm.l0l1 import fit_l0l1, plot_l0l1

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


# ---------------------------------------------------------------------------- writing


def _md_cell(x: Any) -> str:
    return _fmt(x).replace("|", "\\|").replace("\n", " ")


def _md_table(df: pd.DataFrame) -> str:
    head = "| " + " | ".join(str(c) for c in df.columns) + " |"
    sep = "|" + "|".join("---" for _ in df.columns) + "|"
    body = [
        "| " + " | ".join(_md_cell(v) for v in row) + " |" for row in df.itertuples(index=False)
    ]
    return "\n".join([head, sep, *body])


def _html_inline(text: str) -> str:
    out = html.escape(text)
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    return re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", out)


def _html_table(df: pd.DataFrame) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_fmt(v))}</td>" for v in row) + "</tr>"
        for row in df.itertuples(index=False)
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


_CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; max-width: 1100px;
       margin: 2em auto; padding: 0 1em; color: #222; line-height: 1.45; }
h1 { border-bottom: 2px solid #ddd; padding-bottom: .3em; }
h2 { border-bottom: 1px solid #eee; padding-bottom: .2em; margin-top: 1.8em; }
table { border-collapse: collapse; margin: .8em 0; font-size: 13px; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: left; }
th { background: #f3f3f3; }
tr:nth-child(even) td { background: #fafafa; }
img { max-width: 100%; border: 1px solid #eee; margin: .5em 0; }
code { background: #f3f3f3; padding: 0 3px; border-radius: 3px; }
.csv { font-size: 12px; color: #666; }
"""


class _Doc:
    """Report content as blocks, rendered to Markdown and to self-contained HTML."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self.blocks: list[tuple] = []
        self.images: dict[str, bytes] = {}

    def h(self, level: int, text: str) -> None:
        self.blocks.append(("h", level, text))

    def p(self, text: str) -> None:
        self.blocks.append(("p", text))

    def ul(self, items: Sequence[str]) -> None:
        self.blocks.append(("ul", list(items)))

    def table(self, display: pd.DataFrame, csv_name: str, data: pd.DataFrame) -> None:
        atomic_write_bytes(self.out_dir / csv_name, data.to_csv(index=False).encode())
        self.blocks.append(("table", display, csv_name))

    def image(self, name: str, png: bytes, alt: str) -> None:
        atomic_write_bytes(self.out_dir / name, png)
        self.images[name] = png
        self.blocks.append(("img", name, alt))

    def markdown(self) -> str:
        out = []
        for b in self.blocks:
            if b[0] == "h":
                out.append("#" * b[1] + " " + b[2])
            elif b[0] == "p":
                out.append(b[1])
            elif b[0] == "ul":
                out.append("\n".join(f"- {x}" for x in b[1]))
            elif b[0] == "table":
                out.append(_md_table(b[1]) + f"\n\nData: `{b[2]}`")
            elif b[0] == "img":
                out.append(f"![{b[2]}]({b[1]})")
        return "\n\n".join(out) + "\n"

    def html(self, title: str) -> str:
        out = []
        for b in self.blocks:
            if b[0] == "h":
                out.append(f"<h{b[1]}>{_html_inline(b[2])}</h{b[1]}>")
            elif b[0] == "p":
                out.append(f"<p>{_html_inline(b[1])}</p>")
            elif b[0] == "ul":
                out.append("<ul>" + "".join(f"<li>{_html_inline(x)}</li>" for x in b[1]) + "</ul>")
            elif b[0] == "table":
                out.append(_html_table(b[1]))
                out.append(f'<p class="csv">Data: <code>{html.escape(b[2])}</code></p>')
            elif b[0] == "img":
                data = base64.b64encode(self.images[b[1]]).decode("ascii")
                out.append(
                    f'<figure><img alt="{html.escape(b[2])}" src="data:image/png;base64,{data}">'
                    f'<figcaption class="csv">{html.escape(b[1])}</figcaption></figure>'
                )
        return (
            '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>\n"
            + "\n".join(out)
            + "\n</body></html>\n"
        )


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
    Tables 2–3 (:func:`norms_table`, last checkpoint of each run), estimates against
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
            est = ", ".join(sorted(set(item["estimator"]), key=_est_rank))
            read.append(
                f"results file `{path}`: {len(item)} rows, {item['checkpoint'].nunique()} "
                f"checkpoints, estimators {est or '—'}"
            )
    _label_runs(runs)
    results = pd.concat(frames, ignore_index=True) if frames else None
    if results is not None:
        results = _run_keys(results, runs)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    title = title or "hessnorm report"
    doc = _Doc(out)
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
    colors = _colors(labels)

    if runs:
        _section_runs(doc, runs, colors)
    if results is not None and len(results):
        _section_norms(doc, results, colors)
    smooth = [r for r in runs if r.has_smoothness()]
    if smooth:
        _section_l0l1(doc, smooth)

    md = out / "report.md"
    atomic_write_bytes(out / "report.html", doc.html(title).encode("utf-8"))
    atomic_write_bytes(md, doc.markdown().encode("utf-8"))
    return md


def _section_runs(doc: _Doc, runs: list[RunData], colors: dict) -> None:
    doc.h(2, "Training and evaluation loss")
    doc.p(
        "One line per run (paper 000, Figs. 1–2 style). Final train loss is the mean over the "
        "last 10% of logged steps; eval loss is on the task's fixed held-out set."
    )
    table = _runs_table(runs)
    doc.table(table, "runs.csv", table)
    tasks = sorted({r.task for r in runs})
    for task in tasks:
        group = [r for r in runs if r.task == task]
        group.sort(key=lambda r: (_opt_rank(r.optimizer), r.label))
        doc.image(
            f"loss_curves_{re.sub(r'[^A-Za-z0-9_-]+', '_', task)}.png",
            _loss_figure(task, group, colors),
            f"loss curves, task {task}",
        )


def _section_norms(doc: _Doc, results: pd.DataFrame, colors: dict) -> None:
    table = norms_table(results)
    doc.h(2, "Smoothness under each optimizer's geometry")
    doc.p(
        "Paper 000, Tables 2–3: for the last analysed checkpoint of each run, the smoothness "
        "H(L, Φ) that governs the optimizer with partition Φ, the quantity that bounds it "
        "(`bound`: ‖H‖₁,₁ for Adam, d‖H‖₂ for AdaSGD, the blockwise surrogate S(H, Φ) "
        "otherwise; S is an upper surrogate, see the blockwise_smoothness docstring), its estimate with the "
        "estimator's interval, and the estimate divided by the dimension d. A `rotation` "
        "means the Hessian was taken in rotated coordinates (RᵀHR): rotated-adam runs are "
        "analysed in their own coordinates, as in paper 000, Table 2."
    )
    doc.table(_norms_display(table), "norms.csv", table)

    traj = _trajectory_figure(results, colors)
    if traj is not None:
        png, data = traj
        doc.h(2, "Estimates along training")
        doc.p(
            "Each bound H(L, Φ) divided by d (the `estimate / d` column above) against the "
            "step of the checkpoint it was computed at; error bars are the estimator's interval."
        )
        doc.image("trajectories.png", png, "Hessian-norm estimates against training step")
        atomic_write_bytes(doc.out_dir / "trajectories.csv", data.to_csv(index=False).encode())

    rows = results.merge(
        table[["checkpoint", "estimator", "rotation"]].drop_duplicates(),
        on=["checkpoint", "estimator", "rotation"],
    )
    shares = _per_tensor_shares(rows)
    if len(shares):
        doc.h(2, "Which tensors carry the (1,1)-norm")
        doc.p(
            "Share of ‖H‖₁,₁ = Σᵢⱼ|Hᵢⱼ| summed over the rows i of each tensor (the `per_tensor` "
            f"details of the `l11` estimator) at each run's last checkpoint; top {_TOP_TENSORS} "
            "tensors shown. Rotated estimates are left out: their coordinates are not tensors."
        )
        doc.image("l11_per_tensor.png", _per_tensor_figure(shares, colors), "per-tensor share")
        top = shares.groupby("label", sort=False).head(5)
        display = top.assign(share=(100 * top["share"]).map(lambda v: f"{v:.1f}%"))
        doc.table(display, "l11_per_tensor.csv", shares)


def _section_l0l1(doc: _Doc, runs: list[RunData]) -> None:
    png, fits = _l0l1_figure(runs)
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
    """Arguments of ``hessnorm report``."""
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
    """Entry point of ``hessnorm report``; returns the exit status."""
    md = make_report(args.inputs, args.out, title=args.title, progress=not args.quiet)
    if not args.quiet:
        print(f"wrote {md} and {md.with_suffix('.html')}")
    return 0
