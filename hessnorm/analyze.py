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
    data_seed: int | None = None,
    eval_resamples: int = 0,
    text: str | Path | None = None,
    block_size: int | None = None,
    strict: bool = False,
):
    """Estimate Hessian norms of checkpoints; returns a :class:`pandas.DataFrame`.

    Every interval is conditional on the evaluation set: it covers the norm of the
    Hessian of the mean loss over *these* examples, not over the data distribution.
    ``eval_resamples=K`` measures the other source of variation: the same estimator
    (same ``seed``) on K independent evaluation sets (for language models, the default
    windows at K random offsets drawn from ``data_seed``), reported as ``eval_sd`` (their
    sample standard deviation), ``eval_min`` and ``eval_max``, at K times the cost.

    Args:
        checkpoints: files or run folders (a folder stands for all its checkpoints,
            in step order: a trajectory).
        estimators: names from :data:`hessnorm.results.ESTIMATORS` (list or
            comma-separated string).
        n_cauchy: Cauchy probes for (1,1)-norm estimates (paper 000 uses 50).
        rotation: rotation for the ``rotated-*`` estimators.
        eval_examples: evaluation examples the Hessian is averaged over (>= 1;
            None: the format's default, 64 windows for language models).
        seed: seeds the estimators' probes only (not the evaluation set).
        tol: Lanczos relative interval width.
        device, dtype: where and in which precision to compute.
        model, data, loss, task, data_dir: see :func:`hessnorm.checkpoint.load`.
        batchnorm: ``"batch"`` or ``"frozen"`` (see HessianOperator.from_module).
        progress: progress bars.
        log: where notes go (default stderr); ``False`` silences them.
        data_seed: language models: None (default) evaluates on the deterministic
            :func:`hessnorm.train.tasks.lm_windows` windows; an int draws random window
            offsets with it (:func:`hessnorm.checkpoint.nanogpt_eval_windows`).
        eval_resamples: K >= 2 adds the spread over K independent evaluation sets
            (0: none).
        text, block_size: Hugging Face ``save_pretrained`` folders: the text file the
            ``eval_examples`` windows of ``block_size`` tokens are cut from (see
            :func:`hessnorm.checkpoint.load`).
        strict: refuse (CheckpointError) a nanoGPT checkpoint whose recomputed loss
            fails the ``best_val_loss`` check (:func:`hessnorm.checkpoint.loss_check`)
            instead of warning.

    Under ``torch.distributed`` (e.g. ``torchrun``) every rank loads the checkpoint and
    keeps a contiguous shard of the evaluation examples
    (:func:`hessnorm.distributed.shard_batches`; whole batches for BatchNorm models on
    batch statistics); the operator reduces over the ranks, so every rank returns the
    same rows, and only rank 0 shows progress and notes.

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

    from hessnorm.checkpoint import expand, load, loss_check_columns
    from hessnorm.operator import HessianOperator

    names = parse_estimators(estimators)
    if isinstance(checkpoints, (str, Path)):
        checkpoints = [checkpoints]
    if isinstance(dtype, str):
        if dtype not in ("float32", "float64"):
            raise ConfigError(f"dtype must be float32 or float64, got {dtype!r}")
        dtype = getattr(torch, dtype)
    out = sys.stderr if log is None else log
    check_analyze_options(eval_examples=eval_examples, device=device, eval_resamples=eval_resamples)
    from hessnorm import distributed

    if distributed.rank() != 0:
        out, progress = False, False

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
            raise ConfigError(
                f"{c} is a folder without checkpoints (ckpt_*.pt of a hessnorm run, nanoGPT's "
                "ckpt.pt, or sub-folders holding ckpt.pt)"
            )
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
            data_seed=data_seed,
            text=text,
            block_size=block_size,
        )
        note(
            f"{path}: {meta['kind']} checkpoint (task {meta.get('task')}, step {meta.get('step')})"
        )
        note(f"  evaluation data: {describe_eval_data(meta)}")
        for msg in meta.get("notes", []):
            note(f"  {msg}")
        check = meta.get("loss_check")
        if strict and check is not None and not check.passed:
            raise CheckpointError(f"--strict: {path}: {check.warning()}")
        if eval_resamples and meta.get("resample") is None:
            raise ConfigError(
                f"--eval-resamples needs evaluation sets that can be redrawn (language models); "
                f"{path} ({meta['kind']}, task {meta.get('task')}) has one fixed evaluation set"
            )
        own_rotation = meta.get("rotation")

        def operator(
            batches_, net=net, loss_fn=loss_fn, own_rotation=own_rotation, say=lambda msg: None
        ):
            # under torch.distributed each rank keeps its shard of every evaluation set
            batches_ = _rank_shard(net, batches_, batchnorm, say)
            op_ = HessianOperator.from_module(
                net, loss_fn, batches_, batchnorm=batchnorm, device=device, dtype=dtype
            )
            if own_rotation:
                op_ = op_.rotated(parse_rotation(own_rotation, op_.d))
            return op_

        op = operator(batches, say=note)
        if own_rotation:
            note(
                f"  trained with rotated Adam ({spec_string(own_rotation)}): analysing the Hessian of "
                "L∘R in the run's own rotated coordinates, as paper 000 Table 2 does"
            )
        at_point = {"loss": op.loss(), "grad_norm": float(torch.linalg.vector_norm(op.gradient()))}
        spread = _resample_spread(
            operator,
            meta,
            names,
            eval_resamples,
            dict(n_cauchy=n_cauchy, rotation=rotation, seed=seed, tol=tol, progress=False),
            note,
        )
        sizes = _tensor_sizes(net, op)
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
                run=run_name if meta["kind"] in ("hessnorm-run", "nanogpt") else "",
                task=meta.get("task", ""),
                optimizer=meta.get("optimizer", ""),
                step=meta.get("step"),
                **at_point,
                **{k: meta.get(k) for k in _DATA_KEYS},
                **spread.get(row["estimator"], {"eval_resamples": 0}),
                **loss_check_columns(meta.get("loss_check")),
            )
            row["details"] = _annotate_details(row["estimator"], row["details"], sizes)
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


_DATA_KEYS = ("data", "split", "eval_windows", "eval_tokens", "eval_rule", "data_seed")


def check_analyze_options(*, eval_examples=None, device=None, eval_resamples=0, out=None) -> None:
    """Reject bad analyze options before any checkpoint is read.

    Raises:
        ConfigError: ``eval_examples < 1``, ``eval_resamples`` of 1 or negative,
            ``device="cuda"`` on a machine without a GPU, or an ``out`` path with
            a suffix other than .csv/.json or in a folder that cannot be written.

    Example:
        >>> check_analyze_options(eval_examples=0)
        Traceback (most recent call last):
        ...
        hessnorm.errors.ConfigError: --eval-examples must be >= 1, got 0 (leave it out for the default: 64 windows for language models)
    """
    if eval_examples is not None and int(eval_examples) < 1:
        raise ConfigError(
            f"--eval-examples must be >= 1, got {eval_examples} (leave it out for the default: "
            "64 windows for language models)"
        )
    if int(eval_resamples) < 0 or int(eval_resamples) == 1:
        raise ConfigError(
            f"--eval-resamples must be 0 (off) or >= 2 evaluation sets, got {eval_resamples}"
        )
    if device is not None and str(device).startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(
            f"--device {device}: no CUDA GPU is available to this torch "
            f"({torch.__version__}); use --device cpu or leave --device out"
        )
    if out is not None:
        check_output_path(out)


def check_output_path(path: str | Path) -> Path:
    """Validate a results path before the work that fills it.

    Raises:
        ConfigError: a suffix other than ``.csv``/``.json``, or a folder that cannot
            be created or written.

    Example:
        >>> check_output_path("results.txt")
        Traceback (most recent call last):
        ...
        hessnorm.errors.ConfigError: --out must end in .csv or .json, got results.txt
    """
    import os

    path = Path(path)
    if path.suffix not in (".csv", ".json"):
        raise ConfigError(f"--out must end in .csv or .json, got {path.name}")
    if path.is_dir():
        raise ConfigError(f"--out {path} is a folder; name a .csv or .json file")
    folder = path.parent.resolve()
    existing = next((p for p in (folder, *folder.parents) if p.exists()), None)
    if existing is None or not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"--out {path}: cannot write into {existing or folder}")
    return path


def describe_eval_data(meta: dict) -> str:
    """One line naming the evaluation set of a checkpoint's rows.

    Example:
        >>> describe_eval_data({"data": "d/val.bin", "split": "val", "eval_windows": 64,
        ...                     "eval_tokens": 256, "eval_rule": "lm_windows: evenly spaced"})
        'd/val.bin (split val), 64 windows × 256 tokens, lm_windows: evenly spaced'
    """
    size = f"{meta.get('eval_windows')} examples"
    if meta.get("eval_tokens"):
        size = f"{meta.get('eval_windows')} windows × {meta.get('eval_tokens')} tokens"
    return f"{meta.get('data')} (split {meta.get('split')}), {size}, {meta.get('eval_rule')}"


def _resample_spread(operator, meta, names, k: int, options: dict, note) -> dict:
    """estimator -> spread columns over ``k`` independent evaluation sets (empty when k = 0)."""
    if not k:
        return {}
    values: dict[str, list[float]] = {n: [] for n in names}
    for i in range(k):
        op_i = operator(meta["resample"](i + 1))  # resample 0 is the --data-seed set itself
        for row in analyze_operator(op_i, names, **options):
            values[row["estimator"]].append(float(row["value"]))
    note(f"  {k} independent evaluation sets: {meta['eval_rule'].split(':')[0]} (resample 1..{k})")
    out = {}
    for name, v in values.items():
        t = torch.tensor(v, dtype=torch.float64)
        out[name] = {
            "eval_resamples": k,
            "eval_sd": float(t.std()),
            "eval_min": float(t.min()),
            "eval_max": float(t.max()),
        }
    return out


def _tensor_sizes(net, op) -> dict[str, int]:
    names = getattr(op, "param_names", None)
    if names is None:
        names = [n for n, p in net.named_parameters() if p.requires_grad]
    params = dict(net.named_parameters())
    return {n: int(params[n].numel()) for n in names if n in params}


def _annotate_details(estimator: str, details: str, sizes: dict[str, int]) -> str:
    """Add ``tensor_sizes`` to l11 details; label Lanczos' unconverged ``lambda_min``."""
    try:
        d = json.loads(details)
    except (TypeError, json.JSONDecodeError):
        return details
    if not isinstance(d, dict):
        return details
    if "per_tensor" in d and sizes:
        d["tensor_sizes"] = {k: sizes.get(k) for k in d["per_tensor"]}
    if "lambda_min" in d:
        # Lanczos stops when the largest |eigenvalue| converged; the smallest Ritz value
        # at that point is not a converged eigenvalue.
        d["lambda_min_unconverged"] = d.pop("lambda_min")
    return json.dumps(d, ensure_ascii=False)


def _rank_shard(net, batches, batchnorm: str, note) -> list:
    """This rank's contiguous shard of the evaluation batches (all of them in one process).

    Examples are split (``hessnorm.distributed.shard_batches``); a model with BatchNorm
    on batch statistics gets whole batches instead, since cutting a batch would change
    its statistics.
    """
    from hessnorm import distributed

    if not distributed.is_distributed():
        return batches
    by_batch = batchnorm == "batch" and any(
        isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in net.modules()
    )
    world = distributed.world_size()
    shard = distributed.shard_batches(batches, distributed.rank(), world, whole_batches=by_batch)
    note(
        f"  {world} ranks share the evaluation set "
        f"({'whole batches' if by_batch else 'contiguous shards of examples'})"
    )
    return shard


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
    """Add the ``analyze`` options to ``p`` (``hessnorm analyze --help`` lists them).

    Example:
        >>> p = argparse.ArgumentParser()
        >>> configure_parser(p)
        >>> args = p.parse_args(["runs/adam", "--estimators", "spectral,l11", "--seed", "3"])
        >>> args.checkpoints, args.estimators, args.seed, args.n_cauchy
        (['runs/adam'], 'spectral,l11', 3, 50)
    """
    p.description = __doc__.split("Python::")[0].strip()
    p.epilog = _EPILOG
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
        "--eval-examples",
        type=int,
        default=None,
        help="examples the Hessian averages over (>= 1; default: 64 windows for language models)",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seeds the estimators' random probes only; every interval is conditional on the "
        "evaluation set (see --data-seed, --eval-resamples)",
    )
    p.add_argument(
        "--data-seed",
        type=int,
        default=None,
        help="language models: shift the evaluation windows by a random offset drawn with this "
        "seed "
        "(default: deterministic lm_windows rule, evenly spaced starts over the val split)",
    )
    p.add_argument(
        "--eval-resamples",
        type=int,
        default=0,
        metavar="K",
        help="also run each estimator on K >= 2 independent evaluation sets (random offsets "
        "drawn from --data-seed) and report their spread (eval_sd, eval_min, eval_max): the "
        "variation the estimator interval does not include; costs K times more",
    )
    p.add_argument("--tol", type=float, default=1e-4, help="Lanczos relative interval width")
    p.add_argument("--device", default=None, choices=["cpu", "cuda"])
    p.add_argument("--dtype", default=None, choices=["float32", "float64"])
    p.add_argument("--batchnorm", default="batch", choices=["batch", "frozen"])
    p.add_argument("--model", default=None, help="state_dicts: 'module:factory' building the model")
    p.add_argument(
        "--data",
        default=None,
        help="state_dicts: 'module:function' returning eval batches; nanoGPT: 'builtin' for "
        "hessnorm's bundled byte-level corpus (never used unless asked)",
    )
    p.add_argument(
        "--loss", default=None, help="'module:function' batch-mean loss (default cross-entropy)"
    )
    p.add_argument(
        "--task", default=None, help="state_dicts: a trainer task instead of --model/--data"
    )
    p.add_argument(
        "--data-dir",
        default=None,
        help="nanoGPT data folder holding val.bin (required for nanoGPT checkpoints unless "
        "--data builtin)",
    )
    p.add_argument(
        "--text",
        default=None,
        help="Hugging Face save_pretrained folders: UTF-8 text file the evaluation windows "
        "are cut from with the folder's tokenizer (--eval-examples windows, default 16)",
    )
    p.add_argument(
        "--block-size",
        type=int,
        default=None,
        help="Hugging Face folders: tokens per window (default: context length, at most 1024)",
    )
    p.add_argument(
        "--dist-timeout",
        type=float,
        default=600.0,
        help="under torchrun: seconds a collective may wait before every rank stops (default 600)",
    )
    p.add_argument(
        "--strict",
        action="store_true",
        help="nanoGPT: refuse a checkpoint whose recomputed loss differs from its "
        "best_val_loss by more than the printed tolerance (default: warn)",
    )
    p.add_argument("--out", default=None, help="results file (.csv or .json)")
    p.add_argument("--quiet", action="store_true", help="no progress bars or notes")


_EPILOG = (
    "Language-model evaluation windows (hessnorm gpt runs, nanoGPT ckpt.pt, Hugging Face "
    "folders with --text): n = --eval-examples windows of T+1 consecutive tokens (T = "
    "block size) from the N evaluation tokens, window i starting at floor(i*(N-T-1)/(n-1)) "
    "(integer arithmetic; 0 when n = 1); inputs are its first T tokens, targets its last T. "
    "Deterministic by default (offset 0); --data-seed S shifts every start by one random offset c (start_i + c, modulo the N-T possible starts), and --eval-resamples K repeats the estimate on K such sets: the default is one draw (c = 0) of the rule the resamples draw from. Every interval is conditional on the evaluation set used. Multi-process: torchrun --nproc-per-node N -m hessnorm analyze "
    "... splits the evaluation examples into contiguous shards (gloo on CPUs, NCCL with "
    "--device cuda); every rank computes the same numbers, rank 0 prints and writes --out; "
    "each rank holds the whole model."
)


def run(args: argparse.Namespace) -> int:
    """Run ``hessnorm analyze`` with parsed ``args``: print the table, write ``--out``.

    Under ``torchrun`` it sets up (and tears down) the process group; every rank
    computes, rank 0 prints and writes. Returns the exit code.

    Example:
        >>> import contextlib, io, pathlib, tempfile
        >>> import pandas as pd
        >>> from hessnorm.train.loop import TrainConfig, train
        >>> out = pathlib.Path(tempfile.mkdtemp())
        >>> ckpt = train(TrainConfig(task="quadratic", steps=1, out=str(out), device="cpu",
        ...                          progress=False, task_options={"d": 20}))["checkpoint"]
        >>> p = argparse.ArgumentParser()
        >>> configure_parser(p)
        >>> args = p.parse_args([ckpt, "--estimators", "spectral", "--quiet",
        ...                      "--out", str(out / "norms.csv")])
        >>> with contextlib.redirect_stdout(io.StringIO()) as log:
        ...     code = run(args)
        >>> code, pd.read_csv(out / "norms.csv")["estimator"].tolist()
        (0, ['spectral'])
    """
    from hessnorm import distributed

    created = distributed.init_from_env(args.device, args.dist_timeout)
    try:
        code = _run(args)
        if created:
            # every rank leaves together: tearing the group down while a peer still
            # talks to it can abort inside gloo
            import torch.distributed as dist

            dist.barrier()
        return code
    finally:
        if created:
            import torch.distributed as dist

            dist.destroy_process_group()


def _run(args: argparse.Namespace) -> int:
    from hessnorm import distributed

    check_analyze_options(
        eval_examples=args.eval_examples,
        device=args.device,
        eval_resamples=args.eval_resamples,
        out=args.out,
    )
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
        data_seed=args.data_seed,
        eval_resamples=args.eval_resamples,
        text=args.text,
        block_size=args.block_size,
        strict=args.strict,
    )
    if distributed.rank() != 0:
        return 0
    print(format_table(df))
    if args.out:
        print(f"wrote {write_results(df, args.out)}")
        if df.attrs.get("spectra"):
            print(f"wrote {spectra_path(args.out)}")
    return 0


def format_table(df) -> str:
    """The table ``hessnorm analyze`` prints: identity, loss, estimates, and what they mean.

    ``checkpoint`` is the path as given (it tells apart files that share a name),
    ``run`` its run folder. Below the table: the meaning of ``bound_per_dim`` for each
    estimator shown and the evaluation set of each checkpoint.

    Example:
        >>> import pandas as pd
        >>> df = pd.DataFrame([{"checkpoint": "out/ckpt.pt", "run": "out", "step": 5, "loss": 2.0,
        ...     "grad_norm": 0.1, "estimator": "spectral", "value": 3.0, "low": 2.9, "high": 3.1,
        ...     "bound": "d‖H‖₂", "bound_per_dim": 3.0, "n_hvp": 10, "seconds": 1.0,
        ...     "eval_resamples": 0, "data": "v.bin", "split": "val", "eval_windows": 4,
        ...     "eval_tokens": 8, "eval_rule": "lm_windows"}])
        >>> print(format_table(df).splitlines()[-1])
        evaluation data of out/ckpt.pt: v.bin (split val), 4 windows × 8 tokens, lm_windows
    """
    import pandas as pd

    from hessnorm.results import per_dim_label

    cols = ["checkpoint", "run", "step", "loss", "estimator", "value", "low", "high"]
    if "eval_resamples" in df and df["eval_resamples"].fillna(0).gt(0).any():
        cols += ["eval_sd", "eval_min", "eval_max"]
    cols += ["bound_per_dim", "n_hvp", "seconds"]
    show = df[cols].copy()
    with pd.option_context("display.width", 200, "display.max_columns", 30):
        lines = [show.to_string(index=False, float_format=lambda v: f"{v:.5g}")]
    lines.append(
        "low, high: the estimator's interval for the Hessian of the mean loss over the "
        "evaluation set below (conditional on it; eval_sd/min/max: spread over "
        "independent evaluation sets, --eval-resamples)"
    )
    for est, bound in dict(zip(df["estimator"], df["bound"])).items():
        lines.append(
            f"bound_per_dim ({est}): {per_dim_label(bound)}, the bound {bound} divided by d"
        )
    for ckpt, g in df.groupby("checkpoint", sort=False):
        lines.append(f"evaluation data of {ckpt}: {describe_eval_data(g.iloc[0].to_dict())}")
    return "\n".join(lines)
