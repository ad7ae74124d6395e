"""Shared machinery of the paper-table experiments: cached runs, the lr search, verdicts.

Used by :mod:`hessnorm.experiments.table2` and :mod:`hessnorm.experiments.resnet`
only. A run is a trainer run folder (:func:`hessnorm.train.loop.train`); it is
*done* when it holds its final checkpoint, and *diverged* when it holds
``diverged.json`` (written here when the trainer raised
:class:`~hessnorm.errors.NonFiniteError`). Done and diverged runs are never
trained again, so an experiment can be stopped and restarted at any time and a
report regenerated from the cached folders in seconds.
"""

from __future__ import annotations

import json
import math
import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import torch

from hessnorm._io import atomic_write_bytes
from hessnorm.errors import ConfigError, NonFiniteError
from hessnorm.train.loop import TrainConfig, train
from hessnorm.train.runs import checkpoint_name, list_checkpoints

__all__ = [
    "RunResult",
    "train_cached",
    "search_lr",
    "verdict",
    "machine_info",
    "write_text",
]

DIVERGED = "diverged.json"


class RunResult(dict):
    """``status`` ("ok"/"diverged"), ``out``, ``checkpoint``, ``metrics`` (DataFrame),
    ``final_train_loss``, ``final_eval_loss``, ``seconds`` (training time), ``cached``.

    Example:
        >>> r = RunResult(status="diverged", final_eval_loss=math.inf)
        >>> r["status"], isinstance(r, dict), r["final_eval_loss"] > 1e300
        ('diverged', True, True)
    """


def _final_ckpt(cfg: TrainConfig) -> Path:
    return Path(cfg.out) / checkpoint_name(cfg.steps)


def train_cached(cfg: TrainConfig) -> RunResult:
    """Train ``cfg`` unless its folder already holds the final checkpoint or a divergence mark.

    A folder with earlier checkpoints only (an interrupted run) is resumed. The
    returned ``final_eval_loss`` of a diverged run is +inf, so it never wins a search.

    Example:
        >>> import tempfile
        >>> cfg = TrainConfig(task="quadratic", steps=2, out=tempfile.mkdtemp(), device="cpu",
        ...                   progress=False, task_options={"d": 20})
        >>> first, again = train_cached(cfg), train_cached(cfg)
        >>> first["status"], first["cached"], again["cached"], Path(again["checkpoint"]).name
        ('ok', False, True, 'ckpt_000002.pt')
        >>> again["final_eval_loss"] == first["final_eval_loss"] == float(again["metrics"].eval_loss.iloc[-1])
        True
    """
    import pandas as pd

    out = Path(cfg.out)
    cached = _final_ckpt(cfg).is_file() or (out / DIVERGED).is_file()
    if not cached:
        try:
            train(replace(cfg, resume=bool(list_checkpoints(out))))
        except NonFiniteError as exc:
            text = json.dumps({"message": str(exc), "config": cfg.to_dict()}, indent=2)
            write_text(out / DIVERGED, text)
    metrics = pd.read_csv(out / "metrics.csv") if (out / "metrics.csv").is_file() else None
    if (out / DIVERGED).is_file() or not _final_ckpt(cfg).is_file():
        return RunResult(
            status="diverged",
            out=str(out),
            checkpoint=None,
            metrics=metrics,
            final_train_loss=math.inf,
            final_eval_loss=math.inf,
            seconds=float(metrics.seconds.iloc[-1]) if metrics is not None and len(metrics) else 0,
            cached=cached,
        )
    ev = metrics.dropna(subset=["eval_loss"])
    return RunResult(
        status="ok",
        out=str(out),
        checkpoint=str(_final_ckpt(cfg)),
        metrics=metrics,
        final_train_loss=float(metrics.train_loss.iloc[-1]),
        final_eval_loss=float(ev.eval_loss.iloc[-1]),
        seconds=float(metrics.seconds.iloc[-1]),
        cached=cached,
    )


def search_lr(
    grid: Sequence[float], start: int, score: Callable[[float], float]
) -> tuple[int, dict[int, float]]:
    """Best grid index by a unimodal walk: evaluate the current best's two neighbours,
    move to the better one, stop when the best has both neighbours evaluated.

    Every optimizer is searched on the same ``grid`` by the same rule, so none is
    tuned more than another; a best value at the grid's edge is flagged by the
    caller. Ties go to the smaller learning rate. Cost: at least 3 evaluations
    (2 at an edge), one more per step of the walk.

    Example:
        >>> best, seen = search_lr([1, 2, 3, 4, 5], 1, lambda lr: (lr - 4) ** 2)
        >>> best, sorted(seen)
        (3, [0, 1, 2, 3, 4])
    """
    seen: dict[int, float] = {}

    def f(i: int) -> float:
        if i not in seen:
            v = float(score(grid[i]))
            seen[i] = v if math.isfinite(v) else math.inf
        return seen[i]

    i = start
    while True:
        f(i)
        for j in (i - 1, i + 1):
            if 0 <= j < len(grid):
                f(j)
        best = min(seen, key=lambda k: (seen[k], k))
        if best == i:
            return best, seen
        i = best


def verdict(diff: float, se: float, k: float = 2.0) -> str:
    """Verdict on a claim "a < b" from ``diff`` = b − a and its standard error ``se``.

    "holds" if diff > k·se, "does not hold" if diff < −k·se, otherwise "not
    separable" (the interval diff ± k·se contains 0). A nan ``se`` (no noise
    estimate) is treated as 0 and the verdict says "(no noise estimate)".

    Example:
        >>> verdict(0.3, 0.1), verdict(-0.3, 0.1), verdict(0.1, 0.1)
        ('holds', 'does not hold', 'not separable')
    """
    if not math.isfinite(diff):
        return "holds" if diff > 0 else "does not hold"
    tag = ""
    if not math.isfinite(se):
        se, tag = 0.0, " (no noise estimate)"
    if diff > k * se:
        return "holds" + tag
    if diff < -k * se:
        return "does not hold" + tag
    return "not separable" + tag


def machine_info() -> dict:
    """CPU model, logical cores, load average, torch threads and versions (for reports).

    Example:
        >>> info = machine_info()
        >>> info["cores"] == os.cpu_count(), info["torch"] == torch.__version__
        (True, True)
    """
    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        load = tuple(round(x, 2) for x in os.getloadavg())
    except OSError:
        load = None
    info = dict(
        cpu=cpu,
        cores=os.cpu_count(),
        load_avg_1_5_15=load,
        torch_threads=torch.get_num_threads(),
        torch=torch.__version__,
        python=platform.python_version(),
        when=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    )
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def machine_line(info: dict) -> str:
    """One markdown line describing the machine of :func:`machine_info`.

    Example:
        >>> machine_line({"cpu": "Xeon", "cores": 2, "load_avg_1_5_15": (1.0, 0.5, 0.25),
        ...               "torch": "2.3.0", "torch_threads": 1})
        'Xeon, 2 logical cores shared with other jobs (load average (1.0, 0.5, 0.25) when the report was written), torch 2.3.0 with 1 thread(s), no GPU'
    """
    gpu = f", GPU {info['gpu']}" if info.get("gpu") else ", no GPU"
    return (
        f"{info['cpu']}, {info['cores']} logical cores shared with other jobs (load average "
        f"{info['load_avg_1_5_15']} when the report was written), torch {info['torch']} with "
        f"{info['torch_threads']} thread(s){gpu}"
    )


def write_text(path: Path, text: str) -> None:
    """Atomically write ``text`` (UTF-8) to ``path``.

    Example:
        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / "note.md"
        >>> write_text(path, "‖H‖₂ = 1"); path.read_text(encoding="utf-8")
        '‖H‖₂ = 1'
    """
    atomic_write_bytes(Path(path), text.encode())


def fmt_interval(value: float, low: float, high: float, digits: int = 4) -> str:
    """``value [low, high]`` with ``digits`` significant digits.

    Example:
        >>> fmt_interval(1.23456, 1.2, 1.3), fmt_interval(0.012345, 0.01, 0.02, digits=2)
        ('1.235 [1.2, 1.3]', '0.012 [0.01, 0.02]')
    """
    return f"{value:.{digits}g} [{low:.{digits}g}, {high:.{digits}g}]"


def fixed_train_batches(meta: dict, n_batches: int, seed: int, device=None, dtype=None) -> list:
    """``n_batches`` training batches of the checkpoint's task, drawn with ``seed``.

    Paper 000 App. D.3 estimates the norms on "a fixed batch of training data"; the
    batches are drawn the way the trainer draws them (same batch size, same
    augmentation), from a generator seeded independently of training.

    Example:
        >>> import tempfile
        >>> from hessnorm.train.runs import rebuild
        >>> ckpt = train(TrainConfig(task="quadratic", steps=1, out=tempfile.mkdtemp(),
        ...                          device="cpu", progress=False, task_options={"d": 20}))
        >>> meta = rebuild(ckpt["checkpoint"])[3]
        >>> batches = fixed_train_batches(meta, 2, seed=0)
        >>> len(batches), tuple(batches[0][1].shape), batches[0][1].dtype
        (2, (1, 20), torch.float32)
    """
    from hessnorm.train.tasks import build_task

    dtype = dtype or getattr(torch, meta["dtype"])
    task = build_task(
        meta["task"],
        meta["task_options"],
        seed=meta["config"]["seed"],
        dtype=dtype,
        device=device or "cpu",
    )
    gen = torch.Generator().manual_seed(int(seed))
    return [task.sample(gen) for _ in range(n_batches)]


QUANTITIES = ("spectral", "l11", "rotated-l11")  # registered estimator names
_LEGACY = {"rotated_l11": "rotated-l11"}  # cache keys written before the registry


def hessian_norms(
    checkpoint,
    quantities: Sequence[str] = QUANTITIES,
    *,
    n_batches: int = 1,
    data_seed: int = 12345,
    rotation: str | None = None,
    n_cauchy: int = 50,
    tol: float = 1e-3,
    max_iter: int = 100,
    seed: int = 0,
    progress: bool = False,
    device=None,
) -> dict[str, dict]:
    """Paper 000 Table 2's three quantities at one trainer checkpoint, per dimension.

    With H the Hessian of the mean loss over a fixed batch of training data at the
    checkpoint's weights x (original coordinates, whatever optimizer produced them):

    * ``spectral``: ‖H‖₂ = d‖H‖₂/d (Lanczos, rigorous interval; the AdaSGD row),
    * ``l11``: ‖H‖₁,₁/d (Cauchy medians, Alg. 4, influence-function interval; the Adam row),
    * ``rotated-l11``: ‖RᵀHR‖₁,₁/d, the Hessian of L∘R at x̃ = Rᵀx (the rotated-Adam
      row), R the run's own rotation for a rotated-Adam run, else ``rotation``
      (default ``randperm:depth=2,seed=0``, the trainer's default).

    Cost: ≤ ``max_iter`` HVPs for ``spectral``, ``n_cauchy`` for each (1,1)-norm.
    Returns {quantity: Estimate.to_dict(details=False) + ``per_dim``, ``low_per_dim``,
    ``high_per_dim``, ``rotation``, ``n_batches``, ``batch_examples``}.

    Example:
        The quadratic task's Hessian is Σ at every point, so ‖H‖₂ = 1:

        >>> import tempfile
        >>> ckpt = train(TrainConfig(task="quadratic", steps=1, out=tempfile.mkdtemp(),
        ...                          device="cpu", progress=False, task_options={"d": 20}))
        >>> norms = hessian_norms(ckpt["checkpoint"], ["spectral"])
        >>> row = norms["spectral"]
        >>> row["low_per_dim"] <= 1.0 <= row["high_per_dim"], round(row["per_dim"], 5), row["d"]
        (True, 1.0, 20)
    """
    import hessnorm as hn
    from hessnorm.train.runs import rebuild

    unknown = [q for q in quantities if q not in QUANTITIES]
    if unknown:
        raise ConfigError(f"unknown quantities {unknown}; choose from {QUANTITIES}.")
    model, _, loss_fn, meta = rebuild(checkpoint, device=device)
    batches = fixed_train_batches(meta, n_batches, data_seed, device=device)
    op = hn.HessianOperator.from_module(model, loss_fn, batches)
    d = op.d
    spec = (
        meta["rotation"] or rotation or meta["config"].get("rotation") or "randperm:depth=2,seed=0"
    )
    from hessnorm.analyze import analyze_operator

    rows = analyze_operator(
        op,
        list(quantities),
        rotation=spec,
        seed=seed,
        progress=progress,
        options={"n_cauchy": n_cauchy, "spectral.tol": tol, "spectral.max_iter": max_iter}
        if "spectral" in quantities
        else {"n_cauchy": n_cauchy},
    )
    out = {}
    for q, r in zip(quantities, rows):
        scale = (
            r["bound_per_dim"] / r["value"] if r["value"] else (1.0 if q == "spectral" else 1 / d)
        )
        row = {k: r[k] for k in ("name", "value", "value_per_dim", "low", "high", "confidence")}
        row.update({k: r[k] for k in ("n_hvp", "seconds", "d")})
        row.update(
            per_dim=r["value"] * scale,
            low_per_dim=r["low"] * scale,
            high_per_dim=r["high"] * scale,
            rotation=spec if q == "rotated-l11" else "none",
            n_batches=n_batches,
            batch_examples=sum(len(b[1]) for b in batches),
            converged=bool(r["details"].get("converged", True)),
        )
        out[q] = row
    return out


# bump when an estimator's value or interval construction changes
NORMS_VERSION = 4  # 4: Cauchy probes from the counter-based Philox stream


def cached_norms(run_dir, checkpoint, quantities, settings: dict, **kw) -> dict[str, dict]:
    """:func:`hessian_norms` with a cache ``norms.json`` in the run folder.

    An entry is reused when it was computed with the same ``settings`` (the
    estimator options); otherwise it is recomputed and the file rewritten.

    Example:
        >>> import tempfile
        >>> run = tempfile.mkdtemp()
        >>> ckpt = train(TrainConfig(task="quadratic", steps=1, out=run, device="cpu",
        ...                          progress=False, task_options={"d": 20}))["checkpoint"]
        >>> first = cached_norms(run, ckpt, ["spectral"], {"max_iter": 30})
        >>> again = cached_norms(run, ckpt, ["spectral"], {"max_iter": 30})  # read from the cache
        >>> again == first, (Path(run) / "norms.json").is_file()
        (True, True)
    """
    path = Path(run_dir) / "norms.json"
    cache = json.loads(path.read_text()) if path.is_file() else {}
    # the interval constructions are part of the key: a cache written by an older
    # estimator version is recomputed rather than reported under the new wording
    key = json.dumps({**settings, "estimators": NORMS_VERSION}, sort_keys=True)
    have = {_LEGACY.get(q, q): v for q, v in cache.get(key, {}).items()}
    missing = [q for q in quantities if q not in have]
    if missing:
        have.update(hessian_norms(checkpoint, missing, **settings, **kw))
        cache[key] = have
        write_text(path, json.dumps(cache, indent=1, default=str))
    return {q: have[q] for q in quantities}


@torch.no_grad()
def per_example_losses(model, batches) -> torch.Tensor:
    """Cross-entropy per example (per sequence: mean over its tokens) over ``batches``.

    Each batch goes through the model whole, so batch-statistics BatchNorm sees the
    same batches as the batch-mean loss does; the mean of the result is that loss.

    Example:
        >>> model = torch.nn.Linear(3, 4)
        >>> _ = torch.nn.init.zeros_(model.weight), torch.nn.init.zeros_(model.bias)
        >>> losses = per_example_losses(model, [(torch.randn(2, 3), torch.tensor([0, 3]))])
        >>> losses.shape, torch.allclose(losses, torch.full((2,), math.log(4), dtype=torch.float64))
        (torch.Size([2]), True)
    """
    import torch.nn.functional as F

    model.eval()
    out = []
    for x, y in batches:
        logits = model(x).float()
        ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="none")
        out.append(ce.view(len(y), -1).mean(1).double().cpu())
    return torch.cat(out)


def paired_se(a: torch.Tensor, b: torch.Tensor) -> float:
    """Standard error of mean(b − a) for per-example losses on the same examples.

    Example:
        >>> round(paired_se(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([2.0, 2.0, 5.0])), 6)
        0.57735
        >>> paired_se(torch.tensor([1.0]), torch.tensor([2.0]))
        nan
    """
    diff = (b - a).double()
    return float(diff.std() / math.sqrt(len(diff))) if len(diff) > 1 else math.nan


def reproduce_fixed_seeds(run, name, out_dir, quick, seed, progress, scale, data_dir):
    """Call an experiment's ``run`` for ``hessnorm reproduce NAME``.

    The configurations fix their own seeds (the extra-seed re-runs measure the noise), so
    ``seed`` must be 0; anything else is refused rather than silently ignored.

    Example:
        >>> run = lambda out, **kw: (out.name, kw["quick"], kw["scale"])
        >>> reproduce_fixed_seeds(run, "table2", "reports/table2", True, 0, False, "cpu", None)
        ('table2', True, 'cpu')
        >>> reproduce_fixed_seeds(run, "table2", "reports/table2", True, 1, False, "cpu", None)
        Traceback (most recent call last):
        ...
        hessnorm.errors.ConfigError: hessnorm reproduce table2 fixes its seeds per configuration; drop --seed
    """
    if seed != 0:
        raise ConfigError(
            f"hessnorm reproduce {name} fixes its seeds per configuration; drop --seed"
        )
    return run(Path(out_dir), quick=quick, scale=scale, data_dir=data_dir, progress=progress)


def fixed_seed_cli(run, name: str, argv, *, description: str, data_help: str, only: bool = False):
    """The ``python -m hessnorm.experiments.<name>`` command line shared by table2 and resnet.

    Parses ``--quick --scale --data-dir --out --runs --threads --quiet`` (and ``--only``
    when ``only``), sets the torch thread count and calls ``run`` with them; prints the
    path written and returns 0.

    Example:
        >>> import contextlib, io
        >>> with contextlib.redirect_stdout(io.StringIO()) as out:
        ...     code = fixed_seed_cli(lambda out, **kw: out / "table.md", "demo", ["--quick"],
        ...                           description="x", data_help="data")
        >>> code, out.getvalue().strip()
        (0, 'wrote reports/demo/table.md')
    """
    import argparse

    p = argparse.ArgumentParser(prog=f"hessnorm reproduce {name}", description=description)
    p.add_argument("--quick", action="store_true", help="smoke test (seconds)")
    p.add_argument("--scale", choices=("cpu", "paper"), default="cpu")
    p.add_argument("--data-dir", default=None, help=data_help)
    p.add_argument("--out", type=Path, default=Path("reports") / name)
    p.add_argument("--runs", type=Path, default=None, help=f"run cache (default runs/{name}…)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    if only:
        p.add_argument("--only", default=None, help="comma-separated configuration names")
    p.add_argument("--quiet", action="store_true")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    extra = {"only": a.only.split(",") if a.only else None} if only else {}
    path = run(
        a.out,
        quick=a.quick,
        scale=a.scale,
        data_dir=a.data_dir,
        runs_dir=a.runs,
        progress=not a.quiet,
        **extra,
    )
    print(f"wrote {path}")
    return 0
