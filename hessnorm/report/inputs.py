"""Report inputs: run folders of the trainer and results files of ``hessnorm analyze``.

Reads files only (results files through :func:`hessnorm.results.read_results`, which
parses ``details``); knows estimators through :mod:`hessnorm.registry` (never runs them).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hessnorm.errors import ConfigError
from hessnorm.results import NUMERIC_COLUMNS, columns, read_results

__all__ = [
    "RunData",
    "load_input",
    "dedupe_checkpoints",
    "RESULT_COLUMNS",
    "RESULT_REQUIRED",
    "SMOOTH_COLUMNS",
]

RESULT_REQUIRED = ("checkpoint", "estimator", "value")
RESULT_COLUMNS = tuple(columns())  # the columns `hessnorm analyze` writes
_NUMERIC = NUMERIC_COLUMNS
_TEXT = tuple(c for c in RESULT_COLUMNS if c not in _NUMERIC)
METRICS_REQUIRED = ("step", "train_loss")
SMOOTH_COLUMNS = ("smooth_grad_norm", "local_smoothness")
# Canonical optimizer order (paper 000 lists Adam first, then its variants, then SGD-type).
_OPT_ORDER = ("adam", "adasgd", "rotated-adam", "blockwise-adam", "sgd", "signgd", "rmsprop")
LOSS_UNITS = {
    "gpt": "loss (nats/token)",
    "resnet": "cross-entropy loss (nats/example)",
    "quadratic": "loss L(x)",
}
TOP_TENSORS = 15
DPI = 120


# ---------------------------------------------------------------------------- inputs


@dataclasses.dataclass
class RunData:
    """A trainer run folder: its config and per-step metrics.

    Attributes:
        path: the folder.
        config: ``config.json`` as a dict (``{}`` if absent).
        metrics: ``metrics.csv`` as a DataFrame (numeric columns, empty cells NaN).
        label: display name (set by :func:`make_report`; the optimizer by default).

    Example:
        >>> run = RunData(Path("runs/rot"), {"task": "quadratic", "optimizer": "rotated-adam",
        ...               "rotation": "randperm:depth=2,seed=0", "task_options": {"t": 0.1}},
        ...               pd.DataFrame({"step": [1]}))
        >>> run.name, run.task, run.base_label(), run.has_smoothness()
        ('rot', 'quadratic', 'rotated-adam [randperm:depth=2,seed=0] (t=0.1)', False)
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


def normalize_results(df: pd.DataFrame, source: Path) -> pd.DataFrame:
    """Results rows with every ``hessnorm analyze`` column, per-dim and bound columns filled.

    Adds ``bound_value``, ``bound_low``, ``bound_high`` and ``source``; missing optional
    columns become NaN / ``""``.

    Raises:
        ConfigError: a required column (checkpoint, estimator, value) is missing.

    Example:
        >>> rows = pd.DataFrame({"checkpoint": ["c.pt"] * 2, "estimator": ["spectral", "l11"],
        ...                      "value": [2.0, 2.0], "low": [1.0, 1.0], "high": [3.0, 3.0],
        ...                      "d": [10, 10]})
        >>> df = normalize_results(rows, Path("r.csv"))
        >>> cols = ["value_per_dim", "bound_per_dim", "bound_low", "rotation", "source"]
        >>> df[cols].values.tolist()
        [[0.2, 2.0, 10.0, 'none', 'r.csv'], [0.2, 0.2, 1.0, 'none', 'r.csv']]
        >>> try:
        ...     normalize_results(pd.DataFrame({"value": [1.0]}), Path("r.csv"))
        ... except ConfigError as exc:
        ...     print(str(exc).split(":")[0])
        r.csv is not a results file of `hessnorm analyze`
    """
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
        if c != "details":
            df[c] = df[c].map(_text)
    df["rotation"] = df["rotation"].replace("", "none")
    # value / d is the paper's normalisation; fill it where a producer left it out.
    fill = df["value_per_dim"].isna() & df["d"].gt(0)
    df.loc[fill, "value_per_dim"] = df.loc[fill, "value"] / df.loc[fill, "d"]
    # Without bound_per_dim, apply the registry's rule: the bound is the estimate,
    # or d times it (spectral: bound d‖H‖₂ from the estimate ‖H‖₂).
    fill = df["bound_per_dim"].isna()
    spectral = df["estimator"].map(_bound_is_d_times_value).astype(bool)
    df.loc[fill & spectral, "bound_per_dim"] = df.loc[fill & spectral, "value"]
    df.loc[fill & ~spectral, "bound_per_dim"] = df.loc[fill & ~spectral, "value_per_dim"]
    # The bound is a fixed multiple of the estimate, so its interval is the same multiple.
    factor = df["bound_per_dim"] * df["d"] / df["value"].where(df["value"] != 0)
    df["bound_value"] = df["bound_per_dim"] * df["d"]
    df["bound_low"] = df["low"] * factor
    df["bound_high"] = df["high"] * factor
    df["source"] = str(source)
    return df


def _bound_is_d_times_value(label: str) -> bool:
    """The registry's rule for an estimator label: its bound is d times its value."""
    from hessnorm.registry import parse_estimators

    try:
        (sel,) = parse_estimators([label])
    except ConfigError:
        return False
    return sel.spec.per_dim == "value"


def _text(x: Any) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return ""
    if isinstance(x, (dict, list)):
        return json.dumps(x)
    return str(x)


def _read_results(path: Path) -> pd.DataFrame:
    df = read_results(path)
    details = df["details"] if "details" in df.columns else None
    df = normalize_results(df, path)
    df["details"] = list(details) if details is not None else [{} for _ in range(len(df))]
    return df


def load_input(path: str | os.PathLike) -> RunData | pd.DataFrame:
    """Read one report input: a run folder (-> :class:`RunData`) or a results file (-> DataFrame).

    A ``metrics.csv`` or ``config.json`` path stands for its run folder. Results
    DataFrames carry every column of ``hessnorm analyze`` (missing optional ones
    filled with NaN / ``""``) plus ``source``.

    Raises:
        ConfigError: the path does not exist, or is neither a run folder nor a
            ``.csv`` / ``.json`` results file, or is malformed.

    Example:
        >>> import tempfile
        >>> from hessnorm.train.loop import TrainConfig, train
        >>> run_dir = tempfile.mkdtemp()
        >>> _ = train(TrainConfig(task="quadratic", steps=2, out=run_dir, device="cpu",
        ...                       progress=False, task_options={"d": 20}))
        >>> run = load_input(Path(run_dir) / "metrics.csv")  # stands for its folder
        >>> type(run).__name__, run.optimizer, run.metrics["step"].tolist()
        ('RunData', 'adam', [1, 2])
        >>> try:
        ...     load_input(Path(run_dir) / "ckpt_000002.pt")
        ... except ConfigError as exc:
        ...     print(str(exc).split("ckpt_000002.pt ")[1])
        is neither a run folder nor a results file (.csv or .json from `hessnorm analyze --out`).
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


def optimizer_rank(name: str) -> tuple:
    """Sort key: the canonical optimizer order (Adam and its variants, then SGD-type), unknown last.

    Example:
        >>> sorted(["zzz", "sgd", "rotated-adam", "adam"], key=optimizer_rank)
        ['adam', 'rotated-adam', 'sgd', 'zzz']
    """
    return (_OPT_ORDER.index(name) if name in _OPT_ORDER else len(_OPT_ORDER), name)


def estimator_rank(name: str) -> tuple:
    """Registry order: base estimator first, its rotated form after it; unknown names last.

    Example:
        >>> sorted(["unknown", "rotated-l11", "l11", "spectral"], key=estimator_rank)
        ['spectral', 'l11', 'rotated-l11', 'unknown']
    """
    from hessnorm.registry import ROTATED_PREFIX, estimators

    order = list(estimators())
    base = name[len(ROTATED_PREFIX) :] if name.startswith(ROTATED_PREFIX) else name
    base = base.partition(":")[0]
    i = order.index(base) if base in order else len(order)
    return (i, name.startswith(ROTATED_PREFIX), name)


def label_runs(runs: list[RunData]) -> None:
    """Set each run's ``label``: its base label, plus the folder name where two share one.

    Example:
        >>> runs = [RunData(Path(p), {"optimizer": o}, pd.DataFrame())
        ...         for p, o in [("a/r1", "adam"), ("b/r2", "adam"), ("c", "sgd")]]
        >>> label_runs(runs)
        >>> [r.label for r in runs]
        ['adam (r1)', 'adam (r2)', 'sgd']
    """
    base = [r.base_label() for r in runs]
    for r, b in zip(runs, base):
        r.label = b if base.count(b) == 1 else f"{b} ({r.name})"


def run_keys(results: pd.DataFrame, runs: list[RunData]) -> pd.DataFrame:
    """Add ``run_key`` (run folder name, else checkpoint path) and a display ``label``.

    Labels come from the matching run folder, else the optimizer (with the checkpoint's
    file name, or its full path, where they would collide).

    Example:
        >>> runs = [RunData(Path("a/r1"), {"optimizer": "adam"}, pd.DataFrame(), "adam (r1)")]
        >>> res = pd.DataFrame({"run": ["r1", "", ""], "optimizer": ["adam", "sgd", "sgd"],
        ...                     "checkpoint": ["r1/c.pt", "x/ckpt.pt", "y/ckpt.pt"]})
        >>> run_keys(res, runs)[["run_key", "label"]].values.tolist()
        [['r1', 'adam (r1)'], ['x/ckpt.pt', 'x/ckpt.pt'], ['y/ckpt.pt', 'y/ckpt.pt']]
    """
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
    # Runs named after the same folder (a/out, b/out) still collide: use the full key.
    counts = pd.Series(list(label.values())).value_counts()
    label = {k: (k if counts[v] > 1 and k not in by_name else v) for k, v in label.items()}
    df["label"] = df["run_key"].map(label)
    return df


#: Columns that identify one estimate: the same checkpoint, estimator, rotation and
#: evaluation set read from two results files is one estimate.
IDENTITY_COLUMNS = (
    "checkpoint",
    "estimator",
    "rotation",
    "data",
    "split",
    "eval_windows",
    "eval_rule",
)


def dedupe_checkpoints(results: pd.DataFrame) -> pd.DataFrame:
    """Keep one row per estimate when results files overlap (the last file read wins).

    Checkpoint paths are compared after resolving them (``out/ckpt.pt`` and
    ``./out/ckpt.pt`` are one file); files that merely share a name
    (``a/ckpt.pt``, ``b/ckpt.pt``) stay apart.

    Example:
        >>> df = pd.DataFrame({"checkpoint": ["a/ckpt.pt", "./a/ckpt.pt", "b/ckpt.pt"],
        ...                    "estimator": ["l11"] * 3, "value": [1.0, 1.1, 2.0]})
        >>> dedupe_checkpoints(df)["value"].tolist()
        [1.1, 2.0]
    """
    df = results.copy()
    resolved = df["checkpoint"].map(lambda c: str(Path(c).resolve()) if c else c)
    keys = [c for c in IDENTITY_COLUMNS if c in df.columns and c != "checkpoint"]
    key = pd.concat([resolved.rename("_ckpt"), df[keys].astype(str)], axis=1)
    keep = ~key.duplicated(keep="last")
    return df[keep.to_numpy()].reset_index(drop=True)


def run_colors(labels: Iterable[str]) -> dict[str, Any]:
    """One tab10 RGBA colour per distinct label, in first-seen order.

    Example:
        >>> colors = run_colors(["adam", "sgd", "adam"])
        >>> list(colors), len(colors["adam"]), colors["adam"] != colors["sgd"]
        (['adam', 'sgd'], 4, True)
    """
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return {lab: cmap(i % 10) for i, lab in enumerate(dict.fromkeys(labels))}


# ---------------------------------------------------------------------------- spectra


def details_of(x: Any) -> dict:
    """A row's ``details`` (a dict once read; ``{}`` for none).

    Example:
        >>> details_of({"n": 3}), details_of(""), details_of(None)
        ({'n': 3}, {}, {})
    """
    return dict(x) if isinstance(x, dict) else {}
