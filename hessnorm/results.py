"""Result rows and their files: the columns ``hessnorm analyze`` writes, and the one place
that serialises and parses them.

In memory a row's ``details`` is a dict of plain values; it becomes JSON text only here,
when a results file is written (:func:`write_results`), and a dict again only here, when
one is read (:func:`read_results`). Densities travel next to the results file in a
sidecar (:func:`spectra_path`, format :data:`SPECTRA_FORMAT`).

What an estimator is (its labels, family, per-dimension rule, options) lives in
:mod:`hessnorm.registry`; the helpers here that need it (:func:`columns`,
:func:`is_spectrum`, :func:`per_dim_label`) read it from there. This module imports no
torch at import time.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hessnorm.errors import ConfigError

__all__ = [
    "COLUMNS",
    "EVAL_COLUMNS",
    "LOSS_CHECK_COLUMNS",
    "NUMERIC_COLUMNS",
    "DEFAULT_ESTIMATORS",
    "DEFAULT_ROTATION",
    "SPECTRA_FORMAT",
    "columns",
    "is_spectrum",
    "per_dim_label",
    "jsonable",
    "details_to_text",
    "details_from_text",
    "write_results",
    "read_results",
    "spectra_key",
    "spectra_path",
    "read_spectra",
]

# Format tag of the spectra sidecar ``<results stem>.spectra.json``: a JSON object
# {"format", "results", "spectra": {key: {"checkpoint", "step", "estimator", "rotation",
# "run", "optimizer", "blocks": {block name: SpectralDensity.to_dict()}}}}, key =
# "<checkpoint> | <estimator> | <rotation>" (also in the row's details as spectra_key).
SPECTRA_FORMAT = "hessnorm-spectra/1"

DEFAULT_ESTIMATORS = ("spectral", "l11")
DEFAULT_ROTATION = "randperm:depth=2,seed=0"

# The columns of an analyze row, in order (``hessnorm analyze --out`` writes them).
# ``loss``/``grad_norm``: the mean loss and ‖∇L‖₂ at the checkpoint over the evaluation
# set; ``data``..``data_seed``: that evaluation set (file, split, windows × tokens, the
# rule choosing them and its seed). Every interval (low, high) is conditional on that
# set; ``eval_sd``/``eval_min``/``eval_max`` are the spread of the estimate over
# ``eval_resamples`` independent evaluation sets (``analyze --eval-resamples K``).
EVAL_COLUMNS = [
    "data",
    "split",
    "eval_windows",
    "eval_tokens",
    "eval_rule",
    "data_seed",
    "eval_resamples",
    "eval_sd",
    "eval_min",
    "eval_max",
]
#: nanoGPT checkpoints: the best_val_loss check (hessnorm.checkpoint.LossCheck.columns).
LOSS_CHECK_COLUMNS = ["best_val_loss", "loss_check", "loss_check_tol", "loss_check_detectable"]
COLUMNS = [
    "checkpoint",
    "kind",
    "run",
    "task",
    "optimizer",
    "step",
    "loss",
    "grad_norm",
    "estimator",
    "metric",
    "bound",
    "rotation",
    "value",
    "value_per_dim",
    "low",
    "high",
    "confidence",
    "bound_per_dim",
    "n_hvp",
    "seconds",
    "d",
    *EVAL_COLUMNS,
    *LOSS_CHECK_COLUMNS,
    "details",
]
NUMERIC_COLUMNS = (
    "step",
    "loss",
    "grad_norm",
    "eval_windows",
    "eval_tokens",
    "data_seed",
    "eval_resamples",
    "eval_sd",
    "eval_min",
    "eval_max",
    "best_val_loss",
    "loss_check_tol",
    "loss_check_detectable",
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


def columns() -> list[str]:
    """:data:`COLUMNS` plus the extra columns registered estimators declare, before ``details``.

    Example:
        >>> columns()[:3], columns()[-1]
        (['checkpoint', 'kind', 'run'], 'details')
    """
    from hessnorm.registry import estimators

    extra: list[str] = []
    for spec in estimators().values():
        extra += [c for c in spec.columns if c not in COLUMNS and c not in extra]
    return [*COLUMNS[:-1], *extra, COLUMNS[-1]]


def is_spectrum(label: str) -> bool:
    """Whether the estimator named ``label`` (``rotated-`` and ``:ARG`` forms too) is a
    registered spectrum estimator (trace, density, ...); False for unknown names.

    Example:
        >>> is_spectrum("trace"), is_spectrum("rotated-diagonal-share"), is_spectrum("l11"), is_spectrum("x")
        (True, True, False, False)
    """
    return family(label) == "spectrum"


def family(label: str) -> str | None:
    """The registered family of an estimator label, or None for unknown names.

    Example:
        >>> family("blockwise:by_tensor"), family("density"), family("nope")
        ('smoothness', 'spectrum', None)
    """
    from hessnorm.registry import parse_estimators

    try:
        (sel,) = parse_estimators([label])
    except ConfigError:
        return None
    return sel.spec.family


def per_dim_label(bound: str) -> str:
    """Axis label of the reported quantity divided by d, from its ``bound`` label.

    ``"d‖H‖₂"`` -> ``"‖H‖₂"``; ratios (diagonal share, JS distance) are their own label;
    anything else ``"<bound> / d"``.

    Example:
        >>> per_dim_label("d‖H‖₂"), per_dim_label("‖H‖₁,₁"), per_dim_label("Σᵢ|Hᵢᵢ| / ‖H‖₁,₁")
        ('‖H‖₂', '‖H‖₁,₁ / d', 'Σᵢ|Hᵢᵢ| / ‖H‖₁,₁')
    """
    from hessnorm.registry import estimators

    bound = bound or "estimate"
    for spec in estimators().values():
        for rotated in (False, True):
            if spec.labels(rotated)[1] == bound:
                return spec.per_dim_label(rotated)
    return f"{bound} / d"


# ---------------------------------------------------------------------- serialisation


def jsonable(obj: Any) -> Any:
    """``obj`` with every value JSON can hold: tensors as lists (``<tensor shape>`` when
    large), non-finite floats as None, tuples as lists, other objects as their ``str``.

    Example:
        >>> jsonable({"a": (1, float("nan")), 2: "x"})
        {'a': [1, None], '2': 'x'}
    """
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if hasattr(obj, "tolist") and hasattr(obj, "shape"):  # tensors and arrays
        n = math.prod(obj.shape) if obj.shape else 1
        return jsonable(obj.tolist()) if n <= 64 else f"<tensor {tuple(obj.shape)}>"
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    if hasattr(obj, "item"):  # numpy scalars
        return jsonable(obj.item())
    return str(obj)


def details_to_text(details: Any) -> str:
    """A row's details as the JSON text a results file stores (``""`` for none).

    Example:
        >>> details_to_text({"n": 3}), details_to_text({}), details_to_text(None)
        ('{"n": 3}', '', '')
    """
    if details is None or (isinstance(details, float) and math.isnan(details)):
        return ""
    if isinstance(details, str):
        return details
    return json.dumps(jsonable(details), ensure_ascii=False) if details else ""


def details_from_text(text: Any) -> dict:
    """The details dict of a stored row (``{}`` when empty or not a JSON object).

    Example:
        >>> details_from_text('{"n": 3}'), details_from_text(""), details_from_text("[1]")
        ({'n': 3}, {}, {})
    """
    if isinstance(text, Mapping):
        return dict(text)
    if not isinstance(text, str) or not text:
        return {}
    try:
        out = json.loads(text)
    except json.JSONDecodeError:
        return {}
    return out if isinstance(out, dict) else {}


def spectra_key(row: Mapping[str, Any]) -> str:
    """The sidecar key of a result row: ``"<checkpoint> | <estimator> | <rotation>"``.

    Example:
        >>> spectra_key({"checkpoint": "r/ckpt_000002.pt", "estimator": "density", "rotation": "none"})
        'r/ckpt_000002.pt | density | none'
    """
    return f"{row['checkpoint']} | {row['estimator']} | {row['rotation']}"


def spectra_path(path: str | Path) -> Path:
    """The spectra sidecar of a results file: ``results.csv`` -> ``results.spectra.json``.

    Example:
        >>> spectra_path("out/results.csv").as_posix()
        'out/results.spectra.json'
    """
    path = Path(path)
    return path.with_name(path.stem + ".spectra.json")


def write_results(df, path: str | Path) -> Path:
    """Write result rows as CSV or JSON (by suffix), atomically; details become JSON here.

    When ``df.attrs["spectra"]`` (set by :func:`hessnorm.analyze.analyze`) holds
    densities for rows of ``df``, they are first written, atomically, to
    :func:`spectra_path` ``(path)`` in the format :data:`SPECTRA_FORMAT` (per block: the
    per-probe SLQ nodes and weights and the broadened density on a grid,
    :meth:`~hessnorm.estimators.density.SpectralDensity.to_dict`), and those rows'
    ``details`` gain ``spectra_file`` (the sidecar's name, relative to the results
    file's folder) and ``spectra_key`` (:func:`spectra_key`).

    Raises:
        ConfigError: a suffix other than ``.csv`` or ``.json``.

    Example:
        >>> import tempfile, pathlib, pandas as pd
        >>> out = write_results(pd.DataFrame({"value": [1.0], "details": [{"n": 2}]}),
        ...                     pathlib.Path(tempfile.mkdtemp()) / "r.csv")
        >>> out.read_text().splitlines()
        ['value,details', '1.0,"{""n"": 2}"']
        >>> read_results(out)["details"].tolist()
        [{'n': 2}]
    """
    from hessnorm._io import atomic_write

    path = Path(path)
    if path.suffix not in (".csv", ".json"):
        raise ConfigError(f"--out must end in .csv or .json, got {path.name}")
    path.parent.mkdir(parents=True, exist_ok=True)
    df = _with_spectra_sidecar(df, path)
    if "details" in df.columns:
        df = df.copy()
        df["details"] = [details_to_text(d) for d in df["details"]]
    if path.suffix == ".csv":
        atomic_write(path, lambda tmp: df.to_csv(tmp, index=False))
    else:
        atomic_write(
            path, lambda tmp: df.to_json(tmp, orient="records", indent=1, force_ascii=False)
        )
    return path


def _with_spectra_sidecar(df, path: Path):
    """Write the sidecar of the densities in ``df.attrs`` (if any); rows name it."""
    import pandas as pd

    from hessnorm._io import atomic_write_bytes

    spectra = df.attrs.get("spectra") or {}
    if not spectra or df.empty:
        return df
    side = spectra_path(path)
    payload, details = {}, []
    for row in df.to_dict(orient="records"):
        key = spectra_key(row)
        d = details_from_text(row.get("details"))
        if key in spectra:
            payload[key] = {
                "checkpoint": str(row["checkpoint"]),
                "step": None if pd.isna(row["step"]) else int(row["step"]),
                "estimator": row["estimator"],
                "rotation": row["rotation"],
                "run": row["run"],
                "optimizer": row["optimizer"],
                "blocks": {str(k): sd.to_dict() for k, sd in spectra[key]["blocks"].items()},
            }
            d.update(spectra_file=side.name, spectra_key=key)
        details.append(d)
    if not payload:
        return df
    doc = {"format": SPECTRA_FORMAT, "results": path.name, "spectra": payload}
    atomic_write_bytes(side, json.dumps(jsonable(doc), ensure_ascii=False).encode("utf-8"))
    out = df.copy()
    out["details"] = details
    return out


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"cannot read {path} as JSON: {exc}") from exc


def read_results(path: str | Path):
    """Read a results file of ``hessnorm analyze`` (CSV or JSON) as a DataFrame.

    The numeric columns (:data:`NUMERIC_COLUMNS`) are numbers (empty cells NaN), the
    others as stored, and ``details`` is parsed here into dicts (``{}`` for none).

    Raises:
        ConfigError: unreadable, or JSON that is not a list of rows.

    Example:
        >>> import tempfile, pathlib, pandas as pd
        >>> p = write_results(pd.DataFrame({"value": [2.0], "details": [{"a": [1, 2]}]}),
        ...                   pathlib.Path(tempfile.mkdtemp()) / "r.json")
        >>> df = read_results(p)
        >>> float(df["value"][0]), df["details"][0]
        (2.0, {'a': [1, 2]})
    """
    import pandas as pd

    path = Path(path)
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
        except (
            OSError,
            pd.errors.ParserError,
            pd.errors.EmptyDataError,
            UnicodeDecodeError,
        ) as exc:
            raise ConfigError(f"cannot read {path} as a CSV results file: {exc}") from exc
    for c in NUMERIC_COLUMNS:
        if c in df.columns:
            df[c] = pd.to_numeric(df[c], errors="coerce")
    if "details" in df.columns:
        df["details"] = [details_from_text(x) for x in df["details"]]
    return df


def read_spectra(row: Mapping[str, Any], cache: dict | None = None) -> dict | None:
    """The sidecar entry (``checkpoint, step, estimator, rotation, blocks``) of a result row.

    The row's ``details`` name the sidecar (``spectra_file``, relative to the results
    file in ``source``) and its ``spectra_key``; ``None`` when the row has no spectra or
    the file is missing.

    Raises:
        ConfigError: the file exists but is not a ``hessnorm-spectra/1`` sidecar.

    Example:
        >>> read_spectra({"details": {}, "source": "r.csv"}) is None  # no spectra named
        True
    """
    d = details_from_text(row["details"])
    name, key = d.get("spectra_file"), d.get("spectra_key")
    if not name or not key:
        return None
    source = str(row["source"]) if "source" in row and row["source"] else ""
    path = (Path(source).parent if source else Path(".")) / str(name)
    cache = {} if cache is None else cache
    if path not in cache:
        if not path.is_file():
            cache[path] = None
        else:
            data = _read_json(path)
            if not isinstance(data, dict) or data.get("format") != SPECTRA_FORMAT:
                raise ConfigError(
                    f"{path} is not a spectra sidecar of `hessnorm analyze` (format "
                    f"{SPECTRA_FORMAT}); re-run analyze with --out to rewrite it."
                )
            cache[path] = data.get("spectra") or {}
    entries = cache[path]
    return None if entries is None else entries.get(key)
