"""Report tables: the smoothness table of paper 000 (Tables 2–3) and the runs table."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hessnorm.report.inputs import (
    RESULT_COLUMNS,
    RunData,
    details_of,
    estimator_rank,
    normalize_results,
    optimizer_rank,
    run_keys,
)
from hessnorm.results import EVAL_COLUMNS, LOSS_CHECK_COLUMNS, family, is_spectrum

__all__ = ["norms_table", "spectrum_table"]

# ---------------------------------------------------------------------------- tables


def norms_table(results: pd.DataFrame) -> pd.DataFrame:
    """The smoothness table of paper 000, Tables 2–3, from ``hessnorm analyze`` rows.

    One row per (run, checkpoint, estimator, rotation): every analysed checkpoint of
    a run (rows sharing ``run``; rows without one each stand alone by ``checkpoint``)
    is listed, in step order within the run, so a folder of checkpoints analysed
    together reads as a trajectory. Exact duplicates (the same file read twice) are
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
        value, low, high, confidence, value_per_dim, d, n_hvp, seconds``, then the
        loss and evaluation-set columns of :data:`hessnorm.results.COLUMNS` (``loss`` ..
        ``eval_max``) and the nanoGPT loss check (:data:`hessnorm.results.LOSS_CHECK_COLUMNS`),
        ordered by optimizer, run, step, then estimator.

    Example:
        >>> rows = pd.DataFrame({"checkpoint": ["r/ckpt_000020.pt", "r/ckpt_000010.pt"],
        ...                      "run": ["r", "r"], "step": [20, 10], "estimator": ["l11"] * 2,
        ...                      "bound": ["‖H‖₁,₁"] * 2, "value": [2.5, 1.5], "d": [10, 10]})
        >>> t = norms_table(rows)
        >>> t["step"].tolist(), t["value"].tolist(), t["bound_per_dim"].tolist()
        ([10, 20], [1.5, 2.5], [0.15, 0.25])
    """
    if "bound_value" not in results.columns:
        results = normalize_results(results, Path("<DataFrame>"))
    if "run_key" not in results.columns:
        results = run_keys(results, [])
    df = results.drop_duplicates(subset=[c for c in RESULT_COLUMNS if c != "details"])
    df = df[df["estimator"].map(family).eq("smoothness")]  # the other families have their own
    out = _ordered(df, by_step=True)
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
        "loss",
        "grad_norm",
        *EVAL_COLUMNS,
        *LOSS_CHECK_COLUMNS,
    ]
    for c in cols:  # DataFrames from older producers may lack the evaluation columns
        if c not in out.columns:
            out[c] = pd.NA
    out = out[cols].reset_index(drop=True)
    out["step"] = out["step"].astype("Int64")
    out["d"] = out["d"].astype("Int64")
    out["n_hvp"] = out["n_hvp"].astype("Int64")
    return out


def format_number(x: Any, digits: int = 4) -> str:
    """A table cell: integers as such, others to ``digits`` significant digits, "" if missing.

    Example:
        >>> [format_number(x) for x in (3.0, 2.5e-5, 1234567.0, float("nan"), None, "x")]
        ['3', '2.5e-05', '1.235e+06', '', '', 'x']
        >>> format_number(np.int64(7)), format_number(1 / 3, digits=2)
        ('7', '0.33')
    """
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
    return f"[{format_number(low)}, {format_number(high)}]{c}"


def norms_display(table: pd.DataFrame) -> pd.DataFrame:
    """The smoothness table as shown: formatted cells, empty rotation/loss/spread columns dropped.

    Example:
        >>> rows = pd.DataFrame({"checkpoint": ["r/c.pt"], "run": ["r"], "step": [2],
        ...                      "estimator": ["l11"], "value": [6.0], "low": [5.0],
        ...                      "high": [7.0], "d": [2]})
        >>> shown = norms_display(norms_table(rows))
        >>> shown[["optimizer", "estimate", "interval", "estimate / d"]].values.tolist()
        [['r', '6', '[5, 7]', '3']]
        >>> "rotation" in shown.columns
        False
    """
    rows = []
    for r in table.itertuples(index=False):
        d = r.d if not pd.isna(r.d) else None
        rows.append(
            {
                "optimizer": r.label,
                "step": format_number(r.step),
                "H(L, Φ)": r.metric or r.estimator,
                "bound": r.bound,
                "estimator": r.estimator,
                "rotation": "" if r.rotation == "none" else r.rotation,
                "estimate": format_number(r.bound_value),
                "interval": _interval(r.bound_low, r.bound_high, r.confidence),
                "estimate / d": format_number(r.bound_per_dim),
                "d": format_number(d),
                "HVPs": format_number(r.n_hvp),
                "loss": format_number(r.loss),
                "± eval sets": _eval_spread(r),
            }
        )
    out = pd.DataFrame(rows)
    if not out.empty and (out["rotation"] == "").all():
        out = out.drop(columns="rotation")
    for c in ("loss", "± eval sets"):
        if not out.empty and (out[c] == "").all():
            out = out.drop(columns=c)
    return out


def _eval_spread(r) -> str:
    """± one sd of the bound over independent evaluation sets (``--eval-resamples K``)."""
    if pd.isna(r.eval_sd) or pd.isna(r.eval_resamples) or not r.eval_resamples:
        return ""
    factor = r.bound_value / r.value if r.value else float("nan")
    return f"±{format_number(r.eval_sd * factor)} (sd, {int(r.eval_resamples)} sets)"


def runs_table(runs: list[RunData]) -> pd.DataFrame:
    """One row per training run: task, optimizer, peak lr, steps, final losses, seconds.

    Example:
        >>> metrics = pd.DataFrame({"step": [1, 2, 3], "train_loss": [3.0, 2.0, 1.5],
        ...                         "eval_loss": [None, None, 1.7]})
        >>> run = RunData(Path("runs/adam"), {"task": "quadratic", "optimizer": "adam", "lr": 0.1},
        ...               metrics, "adam")
        >>> row = runs_table([run]).to_dict("records")[0]
        >>> row["run"], row["peak lr"], row["steps"], row["final train loss (mean of last 10%)"]
        ('adam', 0.1, 3, 1.5)
        >>> row["final eval loss"], math.isnan(row["seconds"])
        (1.7, True)
    """
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


def _ordered(df: pd.DataFrame, by_step: bool = False) -> pd.DataFrame:
    """Rows ordered by optimizer, run label, (step,) estimator, rotation (with helper columns)."""
    keys = ["_o", "label", "_s", "_e", "rotation"] if by_step else ["_o", "label", "_e", "rotation"]
    return df.assign(
        _o=df["optimizer"].map(optimizer_rank),
        _e=df["estimator"].map(estimator_rank),
        _s=pd.to_numeric(df["step"], errors="coerce") if "step" in df else 0,
    ).sort_values(keys, kind="stable", na_position="last")


def last_checkpoint(df: pd.DataFrame) -> pd.DataFrame:
    """The rows of each run's last checkpoint (largest step; the last listed without steps).

    Example:
        >>> df = pd.DataFrame({"run_key": ["r", "r"], "step": [10, 20],
        ...                    "checkpoint": ["r/a.pt", "r/b.pt"]})
        >>> last_checkpoint(df)["checkpoint"].tolist()
        ['r/b.pt']
    """
    keep = []
    for _, g in df.groupby("run_key", sort=False):
        steps = g["step"]
        if steps.notna().any():
            last_ckpt = g.loc[steps == steps.max(), "checkpoint"].iloc[-1]
        else:
            last_ckpt = g["checkpoint"].iloc[-1]
        keep.append(g[g["checkpoint"] == last_ckpt])
    return pd.concat(keep) if keep else df.iloc[:0]


def spectrum_table(results: pd.DataFrame) -> pd.DataFrame:
    """The spectrum rows (trace, density, diagonal share, block spectra) of each run's last checkpoint.

    Rows of the registry's ``family="spectrum"`` estimators, chosen per run as in
    :func:`norms_table`; numbers are copied unchanged from the analyze rows, plus
    columns read from ``details``: ``lambda_max``, ``lambda_min`` and
    ``second_moment`` (tr(H²)/d) for ``density``, ``n_blocks`` for block spectra.

    Args:
        results: rows of ``hessnorm analyze`` (its DataFrame or :func:`load_input` of
            its results files, concatenated).

    Returns:
        DataFrame with columns ``label, optimizer, run, step, checkpoint, estimator,
        metric, rotation, value, low, high, confidence, value_per_dim, lambda_max,
        lambda_min, second_moment, n_blocks, d, n_hvp, seconds`` (empty without
        spectrum rows), ordered by optimizer then estimator.

    Example:
        >>> rows = pd.DataFrame({"checkpoint": ["r/c.pt"] * 2, "estimator": ["trace", "l11"],
        ...                      "value": [3.0, 5.0], "d": [10, 10], "step": [1, 1]})
        >>> spectrum_table(rows)[["estimator", "value", "value_per_dim"]].values.tolist()
        [['trace', 3.0, 0.3]]
    """
    if "bound_value" not in results.columns:
        results = normalize_results(results, Path("<DataFrame>"))
    if "run_key" not in results.columns:
        results = run_keys(results, [])
    df = results.drop_duplicates(subset=[c for c in RESULT_COLUMNS if c != "details"])
    df = df[df["estimator"].map(is_spectrum).astype(bool)]
    out = last_checkpoint(df).copy()
    det = [details_of(x) for x in out["details"]]
    for key in ("lambda_max", "lambda_min", "second_moment", "n_blocks"):
        out[key] = [d.get(key, math.nan) if d.get(key) is not None else math.nan for d in det]
    out = _ordered(out)
    cols = [
        "label",
        "optimizer",
        "run",
        "step",
        "checkpoint",
        "estimator",
        "metric",
        "rotation",
        "value",
        "low",
        "high",
        "confidence",
        "value_per_dim",
        "lambda_max",
        "lambda_min",
        "second_moment",
        "n_blocks",
        "d",
        "n_hvp",
        "seconds",
    ]
    out = out[cols].reset_index(drop=True)
    for c in ("step", "d", "n_hvp", "n_blocks"):
        out[c] = pd.to_numeric(out[c], errors="coerce").astype("Int64")
    return out


def spectrum_display(table: pd.DataFrame) -> pd.DataFrame:
    """The spectrum table as shown: one line per (run, estimator) with its interval.

    Example:
        >>> rows = pd.DataFrame({"checkpoint": ["r/c.pt"], "estimator": ["trace"],
        ...                      "value": [3.0], "low": [2.0], "high": [4.0],
        ...                      "confidence": [0.95], "d": [10], "step": [1]})
        >>> shown = spectrum_display(spectrum_table(rows))
        >>> shown[["quantity", "estimate", "interval", "mean eigenvalue"]].values.tolist()
        [['trace', '3', '[2, 4] (95%)', '0.3']]
    """
    rows = []
    for r in table.itertuples(index=False):
        note = ""
        if not pd.isna(r.lambda_max):
            note = f"λ_max ≈ {format_number(r.lambda_max)}, λ_min ≈ {format_number(r.lambda_min)}"
            if not pd.isna(r.second_moment):
                note += f", tr(H²)/d ≈ {format_number(r.second_moment)}"
        elif not pd.isna(r.n_blocks):
            note = f"{int(r.n_blocks)} blocks"
        per_dim = r.value_per_dim if r.estimator in ("trace", "density") else math.nan
        rows.append(
            {
                "optimizer": r.label,
                "step": format_number(r.step),
                "quantity": r.metric or r.estimator,
                "estimator": r.estimator,
                "rotation": "" if r.rotation == "none" else r.rotation,
                "estimate": format_number(r.value),
                "interval": _interval(r.low, r.high, r.confidence),
                "mean eigenvalue": format_number(per_dim),
                "notes": note,
                "d": format_number(r.d),
                "HVPs": format_number(r.n_hvp),
            }
        )
    out = pd.DataFrame(rows)
    if not out.empty and (out["rotation"] == "").all():
        out = out.drop(columns="rotation")
    return out
