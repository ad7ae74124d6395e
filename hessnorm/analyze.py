"""``hessnorm analyze``: Hessian norms of checkpoints, one row per (checkpoint, estimator).

Python::

    df = hessnorm.analyze(["runs/adam"], estimators=["spectral", "l11"])

CLI::

    hessnorm analyze runs/adam runs/rotated --estimators spectral,l11,rotated-l11 --out results.csv

Estimators: the names of :data:`hessnorm.results.ESTIMATORS` (the registry holds
their labels and per-dimension rules).

Spectrum estimators (``trace``, ``density``, ``diagonal-share``,
``rotated-diagonal-share``, ``block-spectra:by_tensor``) give one number per row too
(see :mod:`hessnorm.results`); the densities behind ``density`` and ``block-spectra``
travel in ``df.attrs["spectra"]`` and :func:`write_results` writes them to a sidecar
``<out stem>.spectra.json`` named in the rows' ``details``.

Checkpoints of a run trained with rotated Adam are analysed **in the run's own
rotated coordinates** (the Hessian RᵀHR of L∘R, the loss that run optimised, as in
paper 000 Table 2); the ``rotation`` column says so and a note is printed.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from hessnorm.errors import CheckpointError, ConfigError
from hessnorm.estimators.local_smoothness import check_alpha, local_smoothness
from hessnorm.results import (
    COLUMNS,
    DEFAULT_ESTIMATORS,
    DEFAULT_ROTATION,
    ESTIMATORS,
    parse_estimators,
)
from hessnorm.rotation import parse as parse_rotation
from hessnorm.rotation import spec_string

__all__ = [
    "analyze",
    "analyze_operator",
    "smoothness_along_run",
    "write_results",
    "spectra_key",
    "spectra_path",
]


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return obj.tolist() if obj.numel() <= 64 else f"<tensor {tuple(obj.shape)}>"
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return str(obj)


def analyze_operator(
    op,
    estimators=DEFAULT_ESTIMATORS,
    *,
    n_cauchy: int = 50,
    rotation=DEFAULT_ROTATION,
    seed: int = 0,
    tol: float = 1e-4,
    progress: bool = True,
) -> list[dict]:
    """Run the named estimators on one operator; a list of row dicts (no checkpoint columns).

    ``rotation`` (a spec string or rotation object) is used by the ``rotated-*``
    estimators only. Cost: that of each named estimator (see its docstring). Rows of
    the ``density`` and ``block-spectra:*`` estimators carry one more key,
    ``spectra`` (block name -> :class:`~hessnorm.estimators.density.SpectralDensity`),
    which is not a column.

    Example:
        >>> import torch
        >>> from hessnorm.operator import DenseOperator
        >>> op = DenseOperator(torch.diag(torch.tensor([3.0, -1.0], dtype=torch.float64)))
        >>> row, = analyze_operator(op, ["spectral"], progress=False)
        >>> round(row["value"], 6), row["bound"], round(row["bound_per_dim"], 6)
        (3.0, 'd‖H‖₂', 3.0)
    """
    rows = []
    R = None
    for name in parse_estimators(estimators):
        spec = ESTIMATORS[name]
        target = op
        if spec.rotated:
            if R is None:
                R = parse_rotation(rotation, op.d)
            target = op.rotated(R)
        est = spec.run(target, n_cauchy=n_cauchy, seed=seed, tol=tol, progress=progress)
        row = est.to_dict(details=False)
        details = dict(est.details)
        spectra = details.pop("spectra", None)
        row.update(
            estimator=name,
            metric=spec.metric,
            bound=spec.bound,
            bound_per_dim=spec.bound_per_dim(est.value, op.d),
            details=json.dumps(_jsonable(details), ensure_ascii=False),
        )
        if spectra is not None:
            row["spectra"] = spectra
        if spec.rotated:
            row["rotation"] = spec_string(rotation)
        rows.append(row)
    return rows


def analyze(
    checkpoints: str | Path | Sequence[str | Path],
    estimators: str | Sequence[str] = DEFAULT_ESTIMATORS,
    *,
    n_cauchy: int = 50,
    rotation=DEFAULT_ROTATION,
    eval_examples: int | None = None,
    seed: int = 0,
    tol: float = 1e-4,
    device: str | None = None,
    dtype: torch.dtype | str | None = None,
    model=None,
    data=None,
    loss=None,
    task: str | None = None,
    data_dir: str | None = None,
    batchnorm: str = "batch",
    progress: bool = True,
    log=None,
):
    """Estimate Hessian norms of checkpoints; returns a :class:`pandas.DataFrame`.

    Args:
        checkpoints: files or run folders (a folder stands for all its checkpoints,
            in step order: a trajectory).
        estimators: names from :data:`hessnorm.results.ESTIMATORS` (list or
            comma-separated string).
        n_cauchy: Cauchy probes for (1,1)-norm estimates (paper 000 uses 50).
        rotation: rotation for the ``rotated-*`` estimators.
        eval_examples: evaluation examples the Hessian is averaged over.
        seed: seeds the estimators and the choice of evaluation examples.
        tol: Lanczos relative interval width.
        device, dtype: where and in which precision to compute.
        model, data, loss, task, data_dir: see :func:`hessnorm.checkpoint.load`.
        batchnorm: ``"batch"`` or ``"frozen"`` (see HessianOperator.from_module).
        progress: progress bars.
        log: where notes go (default stderr); ``False`` silences them.

    Returns:
        One row per (checkpoint, estimator) with columns :data:`hessnorm.results.COLUMNS`.

    Example:
        >>> import tempfile, pathlib, torch
        >>> from torch import nn
        >>> x, y = torch.randn(8, 3, generator=torch.Generator().manual_seed(0)), torch.arange(8) % 2
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "w.pt"
        >>> torch.save(nn.Linear(3, 2).state_dict(), path)
        >>> df = analyze(path, ["spectral"], model=lambda: nn.Linear(3, 2),
        ...              data=lambda: [(x, y)], progress=False, log=False)
        >>> df[["kind", "estimator", "bound"]].values.tolist()
        [['state_dict', 'spectral', 'd‖H‖₂']]
    """
    import pandas as pd

    from hessnorm.checkpoint import expand, load
    from hessnorm.operator import HessianOperator

    names = parse_estimators(estimators)
    if isinstance(checkpoints, (str, Path)):
        checkpoints = [checkpoints]
    if isinstance(dtype, str):
        if dtype not in ("float32", "float64"):
            raise ConfigError(f"dtype must be float32 or float64, got {dtype!r}")
        dtype = getattr(torch, dtype)
    out = sys.stderr if log is None else log

    def note(msg):
        if out is not False:
            print(msg, file=out)

    files: list[tuple[Path, str]] = []
    for c in checkpoints:
        c = Path(c)
        if not c.exists():
            raise ConfigError(f"{c} does not exist")
        found = expand(c)
        if not found:
            raise ConfigError(f"{c} is a folder without ckpt_*.pt checkpoints")
        files += [(f, str(c) if c.is_dir() else str(f.parent)) for f in found]

    rows = []
    for path, run_name in files:
        net, batches, loss_fn, meta = load(
            path,
            model=model,
            data=data,
            loss=loss,
            task=task,
            data_dir=data_dir,
            eval_examples=eval_examples,
            seed=seed,
            device=device,
            dtype=dtype,
        )
        note(
            f"{path}: {meta['kind']} checkpoint (task {meta.get('task')}, step {meta.get('step')})"
        )
        op = HessianOperator.from_module(
            net, loss_fn, batches, batchnorm=batchnorm, device=device, dtype=dtype
        )
        own_rotation = meta.get("rotation")
        if own_rotation:
            note(
                f"  trained with rotated Adam ({spec_string(own_rotation)}): analysing the Hessian of "
                "L∘R in the run's own rotated coordinates, as paper 000 Table 2 does"
            )
            op = op.rotated(parse_rotation(own_rotation, op.d))
        for row in analyze_operator(
            op, names, n_cauchy=n_cauchy, rotation=rotation, seed=seed, tol=tol, progress=progress
        ):
            if own_rotation:
                row["rotation"] = spec_string(own_rotation) + (
                    f" then {row['rotation']}" if row.get("rotation") not in (None, "none") else ""
                )
                # the operator already is R^T H R: name the quantities of L∘R
                spec = ESTIMATORS[row["estimator"]]
                row["metric"], row["bound"] = spec.metric_rotated_run, spec.bound_rotated_run
            row.setdefault("rotation", "none")
            row.update(
                checkpoint=str(path),
                kind=meta["kind"],
                run=run_name if meta["kind"] == "hessnorm-run" else "",
                task=meta.get("task", ""),
                optimizer=meta.get("optimizer", ""),
                step=meta.get("step"),
            )
            rows.append(row)
    df = pd.DataFrame(rows, columns=COLUMNS)
    df.attrs["spectra"] = {
        spectra_key(row): {"blocks": row["spectra"]} for row in rows if "spectra" in row
    }
    return df


def spectra_key(row) -> str:
    """The sidecar key of a result row: ``"<checkpoint> | <estimator> | <rotation>"``.

    Example:
        >>> spectra_key({"checkpoint": "r/ckpt_000002.pt", "estimator": "density", "rotation": "none"})
        'r/ckpt_000002.pt | density | none'
    """
    return f"{row['checkpoint']} | {row['estimator']} | {row['rotation']}"


def _checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    if not run_dir.is_dir():
        raise CheckpointError(
            f"run folder {run_dir} does not exist; pass the folder `hessnorm train` wrote"
        )
    from hessnorm.train.runs import list_checkpoints

    found = list_checkpoints(run_dir)
    if len(found) < 2:
        raise CheckpointError(
            f"{run_dir} holds {len(found)} checkpoint(s) named ckpt_XXXXXX.pt; local smoothness needs "
            "at least two consecutive ones (train with a smaller --ckpt-every)"
        )
    return found


def smoothness_along_run(
    run_dir: str | Path,
    *,
    alpha: float = 0.1,
    eval_examples: int | None = None,
    progress: bool = True,
):
    """Local smoothness between consecutive checkpoints of a training run.

    For consecutive checkpoints ``ckpt_a.pt``, ``ckpt_b.pt`` (sorted by step) the row
    for step ``a`` is :func:`local_smoothness` with ``w = θ_a`` and ``w_next = θ_b``,
    gradients of the mean loss over the evaluation set rebuilt by
    :func:`hessnorm.checkpoint.load` (``eval_examples``; the same set for every
    checkpoint). When checkpoints are saved every K > 1 steps, Δ spans K optimizer
    steps, so the value is the smoothness along that longer segment (paper 003,
    App. E, uses single steps). Pairs whose parameters did not change are skipped.

    Cost: ``(1/α + 1)`` gradients over the evaluation set per pair.

    Args:
        run_dir: the run folder holding ``ckpt_XXXXXX.pt`` files.
        alpha: grid spacing of :func:`local_smoothness`.
        eval_examples: size of the evaluation set (passed to ``load``).
        progress: show a tqdm progress bar.

    Returns:
        pandas.DataFrame with columns ``step``, ``next_step``, ``grad_norm``,
        ``local_smoothness``, ``step_norm``, ``argmax_gamma``, ``loss``.

    Raises:
        CheckpointError: no such folder, or fewer than two checkpoints in it.
        ConfigError: a bad ``alpha``.

    Example:
        >>> import tempfile
        >>> from hessnorm.train import TrainConfig, train
        >>> run = tempfile.mkdtemp()
        >>> _ = train(TrainConfig(task="quadratic", optimizer="adam", steps=2, ckpt_every=1,
        ...                       out=run, progress=False, dtype="float64",
        ...                       task_options={"d": 20}))
        >>> smoothness_along_run(run, progress=False)["step"].tolist()
        [1]
    """
    import pandas as pd

    run_dir = Path(run_dir)
    ckpts = _checkpoints(run_dir)
    check_alpha(alpha)  # fail on a bad alpha before rebuilding any model

    from hessnorm.checkpoint import load
    from hessnorm.operator import HessianOperator

    def operator(path: Path):
        model, batches, loss_fn, _meta = load(path, eval_examples=eval_examples)
        return HessianOperator.from_module(model, loss_fn, batches)

    iterator = range(len(ckpts) - 1)
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(iterator, desc="local smoothness", unit="ckpt")
    rows = []
    op_next = operator(ckpts[0][1])
    for i in iterator:
        op, op_next = op_next, operator(ckpts[i + 1][1])
        w, w_next = op.point, op_next.point.to(op.dtype)
        if torch.equal(w, w_next):
            continue
        est = local_smoothness(op, w, w_next, alpha=alpha)
        rows.append(
            {
                "step": ckpts[i][0],
                "next_step": ckpts[i + 1][0],
                "grad_norm": est.details["grad_norm"],
                "local_smoothness": est.value,
                "step_norm": est.details["step_norm"],
                "argmax_gamma": est.details["argmax_gamma"],
                "loss": op.loss(),
            }
        )
    return pd.DataFrame(
        rows,
        columns=[
            "step",
            "next_step",
            "grad_norm",
            "local_smoothness",
            "step_norm",
            "argmax_gamma",
            "loss",
        ],
    )


def spectra_path(path: str | Path) -> Path:
    """The spectra sidecar of a results file: ``results.csv`` -> ``results.spectra.json``.

    Example:
        >>> spectra_path("out/results.csv").as_posix()
        'out/results.spectra.json'
    """
    path = Path(path)
    return path.with_name(path.stem + ".spectra.json")


def write_results(df, path: str | Path) -> Path:
    """Write results as CSV or JSON (by suffix), atomically.

    When ``df.attrs["spectra"]`` (set by :func:`analyze`) holds densities for rows of
    ``df``, they are first written, atomically, to :func:`spectra_path` ``(path)`` in
    the format :data:`hessnorm.results.SPECTRA_FORMAT` (per block: the per-probe SLQ
    nodes and weights and the broadened density on a grid,
    :meth:`~hessnorm.estimators.density.SpectralDensity.to_dict`), and those rows'
    ``details`` gain ``spectra_file`` (the sidecar's name, relative to the results
    file's folder) and ``spectra_key`` (:func:`spectra_key`).

    Raises:
        ConfigError: a suffix other than ``.csv`` or ``.json``.

    Example:
        >>> import tempfile, pathlib, pandas as pd
        >>> out = write_results(pd.DataFrame({"value": [1.0]}), pathlib.Path(tempfile.mkdtemp()) / "r.csv")
        >>> out.read_text().split()
        ['value', '1.0']
    """
    from hessnorm._io import atomic_write

    path = Path(path)
    if path.suffix not in (".csv", ".json"):
        raise ConfigError(f"--out must end in .csv or .json, got {path.name}")
    path.parent.mkdir(parents=True, exist_ok=True)
    df = _with_spectra_sidecar(df, path)
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
    from hessnorm.results import SPECTRA_FORMAT

    spectra = df.attrs.get("spectra") or {}
    if not spectra or df.empty:
        return df
    side = spectra_path(path)
    payload, details = {}, []
    for row in df.to_dict(orient="records"):
        key = spectra_key(row)
        d = json.loads(row["details"]) if isinstance(row["details"], str) else {}
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
        details.append(json.dumps(d, ensure_ascii=False) if d else row["details"])
    if not payload:
        return df
    doc = {"format": SPECTRA_FORMAT, "results": path.name, "spectra": payload}
    atomic_write_bytes(side, json.dumps(_jsonable(doc), ensure_ascii=False).encode("utf-8"))
    out = df.copy()
    out["details"] = details
    return out


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.description = __doc__.split("Python::")[0].strip()
    p.add_argument("checkpoints", nargs="+", help="checkpoint files or run folders")
    p.add_argument(
        "--estimators",
        default=",".join(DEFAULT_ESTIMATORS),
        help=f"comma-separated, from: {', '.join(ESTIMATORS)}",
    )
    p.add_argument(
        "--n-cauchy", type=int, default=50, help="Cauchy probes for (1,1)-norms (default 50)"
    )
    p.add_argument("--rotation", default=DEFAULT_ROTATION, help="rotation for rotated-* estimators")
    p.add_argument(
        "--eval-examples", type=int, default=None, help="examples the Hessian averages over"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tol", type=float, default=1e-4, help="Lanczos relative interval width")
    p.add_argument("--device", default=None, choices=["cpu", "cuda"])
    p.add_argument("--dtype", default=None, choices=["float32", "float64"])
    p.add_argument("--batchnorm", default="batch", choices=["batch", "frozen"])
    p.add_argument("--model", default=None, help="state_dicts: 'module:factory' building the model")
    p.add_argument(
        "--data", default=None, help="state_dicts: 'module:function' returning eval batches"
    )
    p.add_argument(
        "--loss", default=None, help="'module:function' batch-mean loss (default cross-entropy)"
    )
    p.add_argument(
        "--task", default=None, help="state_dicts: a trainer task instead of --model/--data"
    )
    p.add_argument("--data-dir", default=None, help="nanoGPT data folder with val.bin")
    p.add_argument("--out", default=None, help="results file (.csv or .json)")
    p.add_argument("--quiet", action="store_true", help="no progress bars or notes")


def run(args: argparse.Namespace) -> int:
    df = analyze(
        args.checkpoints,
        args.estimators,
        n_cauchy=args.n_cauchy,
        rotation=args.rotation,
        eval_examples=args.eval_examples,
        seed=args.seed,
        tol=args.tol,
        device=args.device,
        dtype=args.dtype,
        model=args.model,
        data=args.data,
        loss=args.loss,
        task=args.task,
        data_dir=args.data_dir,
        batchnorm=args.batchnorm,
        progress=not args.quiet,
        log=False if args.quiet else None,
    )
    show = df[
        ["run", "step", "estimator", "value", "value_per_dim", "low", "high", "n_hvp", "seconds"]
    ].copy()
    show["checkpoint"] = [Path(c).name for c in df["checkpoint"]]
    import pandas as pd

    with pd.option_context("display.width", 160, "display.max_columns", 20):
        print(show.to_string(index=False, float_format=lambda v: f"{v:.5g}"))
    if args.out:
        print(f"wrote {write_results(df, args.out)}")
        if df.attrs.get("spectra"):
            print(f"wrote {spectra_path(args.out)}")
    return 0
