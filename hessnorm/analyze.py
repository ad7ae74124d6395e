"""``hessnorm analyze``: Hessian norms of checkpoints, one row per (checkpoint, estimator).

Python::

    df = hessnorm.analyze(["runs/adam"], estimators=["spectral", "l11"])

CLI::

    hessnorm analyze runs/adam runs/rotated --estimators spectral,l11,rotated-l11 --out results.csv

Estimators (names accepted by ``estimators=``):

==================== =============================================== ===================
name                  quantity                                       bounds H(L, Φ) for
==================== =============================================== ===================
spectral              ‖H‖₂ (Lanczos)                                  Φ_AdaSGD: d‖H‖₂
l11                   ‖H‖₁,₁ (Cauchy medians, paper 000 Alg. 4)       Φ_Adam
blockwise:by_tensor   S(H, Φ) with one block per parameter tensor     Φ_tensor
blockwise:by_row      S(H, Φ) with one block per output row           Φ_row
rotated-l11           ‖RᵀHR‖₁,₁ for the ``rotation`` given            Φ_Adam on L∘R
rotated-spectral      ‖RᵀHR‖₂ (= ‖H‖₂; a consistency check)           Φ_AdaSGD on L∘R
==================== =============================================== ===================

Checkpoints of a run trained with rotated Adam are analysed **in the run's own
rotated coordinates** (the Hessian RᵀHR of L∘R, the loss that run optimised, as in
paper 000 Table 2); the ``rotation`` column says so and a note is printed.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch

from hessnorm.errors import ConfigError

__all__ = ["ESTIMATORS", "analyze", "analyze_operator", "configure_parser", "run"]

ESTIMATORS = (
    "spectral",
    "l11",
    "blockwise:by_tensor",
    "blockwise:by_row",
    "rotated-l11",
    "rotated-spectral",
)
DEFAULT_ESTIMATORS = ("spectral", "l11")
DEFAULT_ROTATION = "randperm:depth=2,seed=0"

_METRIC = {
    "spectral": ("H(L, Φ_AdaSGD)", "d‖H‖₂"),
    "l11": ("H(L, Φ_Adam)", "‖H‖₁,₁"),
    "blockwise:by_tensor": ("H(L, Φ_tensor)", "S(H, Φ)"),
    "blockwise:by_row": ("H(L, Φ_row)", "S(H, Φ)"),
    "rotated-l11": ("H(L∘R, Φ_Adam)", "‖RᵀHR‖₁,₁"),
    "rotated-spectral": ("H(L∘R, Φ_AdaSGD)", "d‖RᵀHR‖₂"),
}

COLUMNS = [
    "checkpoint",
    "kind",
    "run",
    "task",
    "optimizer",
    "step",
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
    "details",
]


def _parse_estimators(estimators: str | Iterable[str]) -> list[str]:
    names = [
        e.strip() for e in (estimators.split(",") if isinstance(estimators, str) else estimators)
    ]
    names = [e for e in names if e]
    bad = [e for e in names if e not in ESTIMATORS]
    if bad or not names:
        raise ConfigError(
            f"unknown estimator(s) {bad or names}; choose from {', '.join(ESTIMATORS)}"
        )
    return names


def _spec_string(rotation) -> str:
    if rotation is None:
        return "none"
    if isinstance(rotation, str):
        return rotation
    spec = getattr(rotation, "spec", rotation)
    if isinstance(spec, dict):
        kind = spec.get("kind", "rotation")
        opts = ",".join(f"{k}={v}" for k, v in spec.items() if k not in ("kind", "d"))
        return f"{kind}:{opts}" if opts else kind
    return str(spec)


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
    estimators only.
    """
    import hessnorm as hn
    from hessnorm.optim.factory import parse_rotation

    rows = []
    R = None
    for name in _parse_estimators(estimators):
        if name == "spectral":
            est = hn.spectral_norm(op, tol=tol, seed=seed, progress=progress)
            per_dim = est.value
        elif name == "l11":
            est = hn.l11_norm(op, n=n_cauchy, seed=seed, progress=progress)
            per_dim = est.value / op.d
        elif name.startswith("blockwise:"):
            kind = name.split(":", 1)[1]
            part = getattr(hn.Partition, kind)(op)
            est = hn.blockwise_smoothness(op, part, seed=seed, progress=progress)
            per_dim = est.value / op.d
        else:
            if R is None:
                R = parse_rotation(rotation, op.d)
            rop = op.rotated(R)
            if name == "rotated-l11":
                est = hn.l11_norm(rop, n=n_cauchy, seed=seed, progress=progress)
                per_dim = est.value / op.d
            else:
                est = hn.spectral_norm(rop, tol=tol, seed=seed, progress=progress)
                per_dim = est.value
        metric, bound = _METRIC[name]
        row = est.to_dict(details=False)
        row.update(
            estimator=name,
            metric=metric,
            bound=bound,
            bound_per_dim=per_dim,
            details=json.dumps(_jsonable(dict(est.details)), ensure_ascii=False),
        )
        if name.startswith("rotated"):
            row["rotation"] = _spec_string(rotation)
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
        estimators: names from :data:`ESTIMATORS` (list or comma-separated string).
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
        One row per (checkpoint, estimator) with columns :data:`COLUMNS`.
    """
    import pandas as pd

    from hessnorm.checkpoint import expand, load
    from hessnorm.operator import HessianOperator
    from hessnorm.optim.factory import parse_rotation

    names = _parse_estimators(estimators)
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
                f"  trained with rotated Adam ({_spec_string(own_rotation)}): analysing the Hessian of "
                "L∘R in the run's own rotated coordinates, as paper 000 Table 2 does"
            )
            op = op.rotated(parse_rotation(own_rotation, op.d))
        for row in analyze_operator(
            op, names, n_cauchy=n_cauchy, rotation=rotation, seed=seed, tol=tol, progress=progress
        ):
            if own_rotation:
                row["rotation"] = _spec_string(own_rotation) + (
                    f" then {row['rotation']}" if row.get("rotation") not in (None, "none") else ""
                )
                # the operator already is R^T H R: name the quantities of L∘R
                row["metric"] = row["metric"].replace("H(L,", "H(L∘R,")
                if not row["estimator"].startswith("rotated"):
                    row["bound"] = row["bound"].replace("‖H‖", "‖RᵀHR‖").replace("S(H,", "S(RᵀHR,")
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
    return pd.DataFrame(rows, columns=COLUMNS)


def write_results(df, path: str | Path) -> Path:
    """Write results as CSV or JSON (by suffix), atomically."""
    from hessnorm._io import atomic_write

    path = Path(path)
    if path.suffix not in (".csv", ".json"):
        raise ConfigError(f"--out must end in .csv or .json, got {path.name}")
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".csv":
        atomic_write(path, lambda tmp: df.to_csv(tmp, index=False))
    else:
        atomic_write(
            path, lambda tmp: df.to_json(tmp, orient="records", indent=1, force_ascii=False)
        )
    return path


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
    return 0
