"""``hessnorm analyze``: Hessian norms of checkpoints, one row per (checkpoint, estimator).

Python::

    df = hessnorm.analyze(["runs/adam"], estimators=["spectral", "l11"])
    df = hessnorm.analyze("ckpt.pt", options=AnalyzeOptions(estimators="l11", ...))

CLI::

    hessnorm analyze runs/adam runs/rotated --estimators spectral,l11,rotated-l11 --out results.csv

Estimators are the registered ones (:mod:`hessnorm.registry`; ``hessnorm estimators``
lists them); their options are flags here (``--n-cauchy``, ``--tol``, ...) and keywords
of :func:`analyze`. Every setting lives in one :class:`~hessnorm.inputs.AnalyzeOptions`.

Estimators that carry densities (``density``, ``block-spectra:*``) put them in
``df.attrs["spectra"]``; :func:`hessnorm.results.write_results` writes them to a sidecar
``<out stem>.spectra.json`` named in the rows' ``details``.

Checkpoints of a run trained with rotated Adam are analysed **in the run's own
rotated coordinates** (the Hessian RᵀHR of L∘R, the loss that run optimised, as in
paper 000 Table 2); the ``rotation`` column says so and a note is printed.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from hessnorm.errors import CheckpointError, ConfigError
from hessnorm.estimators.local_smoothness import check_alpha, local_smoothness
from hessnorm.inputs import (
    DEFAULT_LM_WINDOWS,
    AnalyzeOptions,
    CheckpointInfo,
    EstimatorContext,
    EvalSet,
)
from hessnorm.registry import Selection, parse_estimators, split_options
from hessnorm.results import (
    DEFAULT_ESTIMATORS,
    DEFAULT_ROTATION,
    columns,
    spectra_key,
    spectra_path,
    write_results,
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
    "AnalyzeOptions",
]


def _estimate_row(sel: Selection, est, d: int, rotated_run: bool) -> dict[str, Any]:
    """One result row (estimate columns only) of a selection's Estimate."""
    metric, bound = sel.labels(rotated_run)
    row = est.to_dict(details=False)
    row.update(
        estimator=sel.label,
        metric=metric,
        bound=bound,
        bound_per_dim=sel.spec.bound_per_dim(est.value, d),
        details=dict(est.details),
    )
    for c in sel.spec.columns:
        row[c] = est.details.get(c)
    if "spectra" in est.artifacts:
        row["spectra"] = est.artifacts["spectra"]
    return row


def analyze_operator(
    op,
    estimators: str | Sequence[str] = DEFAULT_ESTIMATORS,
    *,
    rotation=DEFAULT_ROTATION,
    seed: int = 0,
    progress: bool = True,
    options: Mapping[str, Any] | None = None,
    context: EstimatorContext | None = None,
    rotated_run: bool = False,
    **estimator_options: Any,
) -> list[dict]:
    """Run the named estimators on one operator; a list of row dicts (no checkpoint columns).

    Args:
        op: the Hessian operator (or a dense symmetric tensor's operator).
        estimators: registered names (list or comma-separated); ``rotated-NAME`` runs
            NAME on ``op.rotated(R)`` for the rotation ``rotation``.
        rotation: a spec string or rotation object, for the ``rotated-*`` names only.
        seed: seeds every estimator's probes.
        progress: progress bars.
        options: estimator options (``{"n_cauchy": 20}`` or ``{"l11.n_cauchy": 20}``);
            keyword arguments (``n_cauchy=20``) are merged into them.
        context: what the estimators that take ``context`` may read (the checkpoint).
        rotated_run: ``op`` already is the Hessian of a rotated loss (labels say so).

    Cost: that of each named estimator (see its docstring and ``hessnorm estimators``).
    ``details`` is a dict; rows of estimators carrying densities have one more key,
    ``spectra`` (block name -> SpectralDensity), which is not a column.

    Example:
        >>> import torch
        >>> from hessnorm.operator import DenseOperator
        >>> op = DenseOperator(torch.diag(torch.tensor([3.0, -1.0], dtype=torch.float64)))
        >>> row, = analyze_operator(op, ["spectral"], progress=False)
        >>> round(row["value"], 6), row["bound"], round(row["bound_per_dim"], 6)
        (3.0, 'd‖H‖₂', 3.0)
    """
    selections = parse_estimators(estimators)
    per, _unused = split_options(selections, {**dict(options or {}), **estimator_options})
    rows, R = [], None
    for sel in selections:
        target = op
        if sel.rotated:
            if R is None:
                R = parse_rotation(rotation, op.d)
            target = op.rotated(R)
        est = sel.spec.run(target, per[sel.label], seed=seed, progress=progress, context=context)
        row = _estimate_row(sel, est, op.d, rotated_run)
        if sel.rotated:
            row["rotation"] = spec_string(rotation)
        rows.append(row)
    return rows


def _settings(
    estimators: str | Sequence[str] | None, options: AnalyzeOptions | None, settings: dict
) -> AnalyzeOptions:
    """One AnalyzeOptions from analyze()'s three ways of passing settings."""
    if options is not None and not isinstance(options, AnalyzeOptions):
        raise ConfigError(f"options must be an AnalyzeOptions, got {type(options).__name__}")
    if estimators is not None:
        settings["estimators"] = estimators
    if options is None:
        return AnalyzeOptions.build(**settings)
    if not settings:
        return options
    extra = AnalyzeOptions.build(**settings)
    changed = {
        k: getattr(extra, k)
        for k in ("estimators", *settings)
        if k in AnalyzeOptions.__dataclass_fields__
    }
    if extra.eval != EvalSet():
        changed["eval"] = extra.eval
    if extra.estimator_options:
        changed["estimator_options"] = {**options.estimator_options, **extra.estimator_options}
    return options.replace(**changed)


def _checkpoint_files(checkpoints) -> list[tuple[Path, str]]:
    """``(file, run name)`` for every checkpoint named (folders expand in step order)."""
    from hessnorm.checkpoint import expand

    if isinstance(checkpoints, (str, Path)):
        checkpoints = [checkpoints]
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
    return files


def analyze(
    checkpoints: str | Path | Sequence[str | Path],
    estimators: str | Sequence[str] | None = None,
    *,
    options: AnalyzeOptions | None = None,
    **settings: Any,
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
        estimators: registered names (list or comma-separated string); default
            ``spectral,l11``.
        options: every setting in one :class:`~hessnorm.inputs.AnalyzeOptions`.
        **settings: the same settings as keywords, for convenience: its fields
            (``seed``, ``rotation``, ``device``, ``dtype``, ``model``, ``loss``, ``task``,
            ``batchnorm``, ``eval_resamples``, ``progress``, ``log``), the evaluation set's
            (``eval_examples``, ``data``, ``data_dir``, ``text``, ``block_size``,
            ``data_seed``: :class:`~hessnorm.inputs.EvalSet`) and estimator options
            (``n_cauchy``, ``tol``, ...). They override ``options``.

    Under ``torch.distributed`` (e.g. ``torchrun``) every rank loads the checkpoint and
    keeps a contiguous shard of the evaluation examples
    (:func:`hessnorm.distributed.shard_batches`; whole batches for BatchNorm models on
    batch statistics); the operator reduces over the ranks, so every rank returns the
    same rows, and only rank 0 shows progress and notes.

    Returns:
        One row per (checkpoint, estimator) with columns :func:`hessnorm.results.columns`;
        ``details`` holds dicts.

    Raises:
        ConfigError: an unknown estimator, option or setting, before anything is read.

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

    from hessnorm import distributed

    opts = _settings(estimators, options, dict(settings))
    check_analyze_options(device=opts.device)
    out = sys.stderr if opts.log is None else opts.log
    progress = opts.progress
    if distributed.rank() != 0:
        out, progress = False, False

    def note(msg: str) -> None:
        if out is not False:
            print(msg, file=out)

    unused = opts.unused_options()
    if unused:
        note(f"note: no selected estimator takes {', '.join(unused)} (ignored)")
    rows: list[dict] = []
    for path, run_name in _checkpoint_files(checkpoints):
        rows += _analyze_checkpoint(path, run_name, opts, note, progress)
    df = pd.DataFrame(rows, columns=columns())
    df.attrs["spectra"] = {
        spectra_key(row): {"blocks": row["spectra"]} for row in rows if "spectra" in row
    }
    return df


def _torch_dtype(dtype):
    if isinstance(dtype, str):
        return getattr(torch, dtype)
    return dtype


def _load(path: Path, opts: AnalyzeOptions):
    from hessnorm.checkpoint import load

    return load(
        path,
        eval_set=opts.eval,
        model=opts.model,
        loss=opts.loss,
        task=opts.task,
        seed=opts.seed,
        device=opts.device,
        dtype=_torch_dtype(opts.dtype),
    )


def _operator_factory(net, loss_fn, info: CheckpointInfo, opts: AnalyzeOptions) -> Callable:
    """``batches -> operator`` for this checkpoint (its rank's shard; its own rotation)."""
    from hessnorm.operator import HessianOperator

    def operator(batches, say=lambda msg: None):
        batches = _rank_shard(net, batches, opts.batchnorm, say)
        op = HessianOperator.from_module(
            net,
            loss_fn,
            batches,
            batchnorm=opts.batchnorm,
            device=opts.device,
            dtype=_torch_dtype(opts.dtype),
        )
        if info.rotation:
            op = op.rotated(parse_rotation(info.rotation, op.d))
        return op

    return operator


def _announce(path: Path, info: CheckpointInfo, note) -> None:
    note(f"{path}: {info.kind} checkpoint (task {info.task}, step {info.step})")
    note(f"  evaluation data: {info.eval.describe()}")
    for msg in info.notes:
        note(f"  {msg}")
    if info.rotation:
        note(
            f"  trained with rotated Adam ({spec_string(info.rotation)}): analysing the Hessian "
            "of L∘R in the run's own rotated coordinates, as paper 000 Table 2 does"
        )


def _announce_cost(selections, per, d: int, grad_seconds: float, note) -> None:
    """The HVP budget of each estimator and an ETA from the timed gradient."""
    parts, total, unknown = [], 0, []
    for sel in selections:
        cost = sel.spec.cost(per[sel.label], d)
        if cost is None:
            unknown.append(sel.label)
            parts.append(f"{sel.label} (cost known once planned)")
        else:
            total += cost
            parts.append(f"{sel.label} ≤ {cost:,} HVPs")
    eta = ""
    if total and grad_seconds > 0:
        lo, hi = 2 * total * grad_seconds, 3 * total * grad_seconds
        eta = (
            f"; one gradient took {grad_seconds:.3g} s and an HVP costs about 2–3 gradients: "
            f"about {_fmt_duration(lo)}–{_fmt_duration(hi)}"
            + (" plus " + ", ".join(unknown) if unknown else "")
        )
    note(f"  cost: {', '.join(parts)}{eta}")


def _fmt_duration(s: float) -> str:
    if s < 60:
        return f"{s:.2g} s" if s < 10 else f"{s:.0f} s"
    if s < 3600:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"


def _analyze_checkpoint(
    path: Path, run_name: str, opts: AnalyzeOptions, note, progress: bool
) -> list[dict]:
    """The rows of one checkpoint: load, build the operator, run every estimator."""
    from hessnorm.checkpoint import loss_check_columns

    net, batches, loss_fn, info = _load(path, opts)
    _announce(path, info, note)
    check = info.extra.get("loss_check")
    if opts.strict and check is not None and not check.passed:
        raise CheckpointError(f"--strict: {path}: {check.warning()}")
    if opts.eval_resamples and info.resample is None:
        raise ConfigError(
            f"--eval-resamples needs evaluation sets that can be redrawn (language models); "
            f"{path} ({info.kind}, task {info.task}) has one fixed evaluation set"
        )
    operator = _operator_factory(net, loss_fn, info, opts)
    op = operator(batches, say=note)
    t0 = time.perf_counter()
    at_point = {"loss": op.loss(), "grad_norm": float(torch.linalg.vector_norm(op.gradient()))}
    grad_seconds = time.perf_counter() - t0  # the loss and one gradient
    selections, per = opts.selections(), opts.per_estimator()
    _announce_cost(selections, per, op.d, grad_seconds / 1.5, note)

    def preconditioner(op_, path=path, net=net):
        from hessnorm.preconditioner import Preconditioner

        return Preconditioner.from_checkpoint(path, op_, model=net)

    context = EstimatorContext(checkpoint=info, path=path, model=net, preconditioner=preconditioner)
    spread = _resample_spread(operator, info, opts, context, note)
    sizes = _tensor_sizes(net, op)
    rows = analyze_operator(
        op,
        [s.label for s in selections],
        rotation=opts.rotation,
        seed=opts.seed,
        progress=progress,
        options=opts.estimator_options,
        context=context,
        rotated_run=bool(info.rotation),
    )
    for row in rows:
        if info.rotation:
            row["rotation"] = spec_string(info.rotation) + (
                f" then {row['rotation']}" if row.get("rotation") not in (None, "none") else ""
            )
        row.setdefault("rotation", "none")
        row.update(
            checkpoint=str(path),
            kind=info.kind,
            run=run_name if info.kind in ("hessnorm-run", "nanogpt") else "",
            task=info.task or "",
            optimizer=info.optimizer,
            step=info.step,
            **at_point,
            **info.eval.columns(),
            **spread.get(row["estimator"], {"eval_resamples": 0}),
            **loss_check_columns(check),
        )
        if "per_tensor" in row["details"] and sizes:
            row["details"]["tensor_sizes"] = {k: sizes.get(k) for k in row["details"]["per_tensor"]}
    return rows


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
        hessnorm.errors.ConfigError: --eval-examples must be >= 1, got 0 (leave it out for the default: 64 windows for language models, the task's evaluation split otherwise)
    """
    EvalSet(windows=eval_examples)
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


def describe_eval_data(meta) -> str:
    """One line naming the evaluation set of a checkpoint's rows (a row or a CheckpointInfo).

    Example:
        >>> describe_eval_data({"data": "d/val.bin", "split": "val", "eval_windows": 64,
        ...                     "eval_tokens": 256, "eval_rule": "lm_windows: evenly spaced"})
        'd/val.bin (split val), 64 windows × 256 tokens, lm_windows: evenly spaced'
    """
    from hessnorm.inputs import EvalData

    if isinstance(meta, CheckpointInfo):
        return meta.eval.describe()
    return EvalData(
        meta.get("data"),
        meta.get("split"),
        meta.get("eval_windows"),
        meta.get("eval_tokens"),
        meta.get("eval_rule"),
    ).describe()


def _resample_spread(operator, info: CheckpointInfo, opts: AnalyzeOptions, context, note) -> dict:
    """estimator -> spread columns over ``opts.eval_resamples`` independent evaluation sets."""
    k = int(opts.eval_resamples)
    if not k:
        return {}
    labels = [s.label for s in opts.selections()]
    values: dict[str, list[float]] = {n: [] for n in labels}
    for i in range(k):
        op_i = operator(info.resample(i + 1))  # resample 0 is the --data-seed set itself
        rows = analyze_operator(
            op_i,
            labels,
            rotation=opts.rotation,
            seed=opts.seed,
            progress=False,
            options=opts.estimator_options,
            context=context,
        )
        for row in rows:
            values[row["estimator"]].append(float(row["value"]))
    note(f"  {k} independent evaluation sets: {info.eval.rule.split(':')[0]} (resample 1..{k})")
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


def configure_parser(p: argparse.ArgumentParser) -> None:
    """Add the ``analyze`` options to ``p`` (``hessnorm analyze --help`` lists them).

    The flags are derived: one per field of :class:`~hessnorm.inputs.AnalyzeOptions` and
    of :class:`~hessnorm.inputs.EvalSet`, and one per option of the registered estimators
    (:func:`hessnorm.registry.estimator_options`; default: each estimator's own).

    Example:
        >>> p = argparse.ArgumentParser()
        >>> configure_parser(p)
        >>> args = p.parse_args(["runs/adam", "--estimators", "spectral,l11", "--seed", "3"])
        >>> args.checkpoints, args.estimators, args.seed, args.n_cauchy
        (['runs/adam'], 'spectral,l11', 3, None)
    """
    from hessnorm.cliutil import add_dataclass_arguments
    from hessnorm.registry import estimator_options, estimators, names

    p.description = __doc__.split("Python::")[0].strip()
    p.epilog = _EPILOG
    p.add_argument("checkpoints", nargs="+", help="checkpoint files or run folders")
    add_dataclass_arguments(
        p,
        AnalyzeOptions,
        exclude=("estimator_options", "eval", "progress", "log"),
        choices={
            "device": ("cpu", "cuda"),
            "dtype": ("float32", "float64"),
            "batchnorm": ("batch", "frozen"),
        },
        helps={
            "estimators": f"comma-separated, from: {', '.join(names())}; rotated-NAME for the "
            "rotated loss (default spectral,l11)"
        },
    )
    add_dataclass_arguments(
        p.add_argument_group("evaluation set (conditions every interval)"),
        EvalSet,
        flags={"windows": "--eval-examples"},
        helps={
            "windows": f"examples the Hessian averages over (>= 1): windows for language models "
            f"(default {DEFAULT_LM_WINDOWS} for every format: hessnorm gpt runs, nanoGPT "
            "ckpt.pt, Hugging Face folders), else the task's evaluation split (default: all of it)"
        },
    )
    g = p.add_argument_group("estimator options (each applies to every estimator taking it)")
    for opt in estimator_options().values():
        users = [s for s in estimators().values() if opt.name in s.option_names]
        if all(s.argument == opt.name for s in users):
            continue  # set by the name (blockwise:by_row), not by a flag
        defaults = sorted({str(s.defaults()[opt.name]) for s in users})
        g.add_argument(
            opt.flag,
            dest=opt.name,
            type=opt.type if opt.type is not bool else str,
            choices=opt.choices or None,
            default=None,
            help=f"{opt.help} [{', '.join(s.name for s in users)}; default {' / '.join(defaults)}]",
        )
    p.add_argument(
        "--dist-timeout",
        type=float,
        default=600.0,
        help="under torchrun: seconds a collective may wait before every rank stops (default 600)",
    )
    p.add_argument(
        "--shard",
        choices=["fsdp"],
        default=None,
        help="under torchrun: shard the model itself with FSDP2 (each rank loads only its "
        "slice of the checkpoint; finite-difference HVPs; see hessnorm.sharded_load)",
    )
    p.add_argument("--out", default=None, help="results file (.csv or .json)")
    p.add_argument("--quiet", action="store_true", help="no progress bars or notes")


def options_from_args(args: argparse.Namespace) -> AnalyzeOptions:
    """The :class:`~hessnorm.inputs.AnalyzeOptions` of parsed ``hessnorm analyze`` flags.

    Example:
        >>> p = argparse.ArgumentParser()
        >>> configure_parser(p)
        >>> o = options_from_args(p.parse_args(["ckpt.pt", "--estimators", "l11",
        ...                                     "--n-cauchy", "20", "--eval-examples", "8"]))
        >>> o.per_estimator()["l11"], o.eval.windows, o.progress
        ({'n_cauchy': 20}, 8, True)
    """
    from hessnorm.cliutil import values_for
    from hessnorm.registry import estimator_options

    base = values_for(AnalyzeOptions, args)
    base = {
        k: v for k, v in base.items() if k not in ("estimator_options", "eval", "progress", "log")
    }
    ev = values_for(EvalSet, args)
    est = {
        name: getattr(args, name)
        for name in estimator_options()
        if getattr(args, name, None) is not None
    }
    return AnalyzeOptions(
        **base,
        eval=EvalSet(**ev),
        estimator_options=est,
        progress=not args.quiet,
        log=False if args.quiet else None,
    )


_EPILOG = (
    "Language-model evaluation windows (hessnorm gpt runs, nanoGPT ckpt.pt, Hugging Face "
    "folders with --text): n = --eval-examples windows of T+1 consecutive tokens (T = "
    "block size) from the N evaluation tokens, window i starting at floor(i*(N-T-1)/(n-1)) "
    "(integer arithmetic; 0 when n = 1); inputs are its first T tokens, targets its last T. "
    f"Default n = {DEFAULT_LM_WINDOWS} for every language-model format. "
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

    check_analyze_options(device=args.device, out=args.out)
    if getattr(args, "shard", None) == "fsdp":  # the model sharded too: hessnorm.sharded_load
        from hessnorm.sharded_load import analyze_sharded_args

        return analyze_sharded_args(args, analyze_operator, format_table, write_results)
    df = analyze(args.checkpoints, options=options_from_args(args))
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
