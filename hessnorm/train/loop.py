"""The reference training loop: one dataclass config, one function built from small steps.

Run from the shell (``hessnorm train``) or from Python::

    from hessnorm.train import TrainConfig, train
    train(TrainConfig(task="gpt", optimizer="adam", steps=300, lr=1e-3, out="runs/adam"))
    # resume after an interruption: same call with resume=True

A run folder holds ``config.json``, ``metrics.csv`` and ``ckpt_XXXXXX.pt`` files
every ``ckpt_every`` steps plus the final one. All writes are atomic. Resuming
restores weights, optimizer state and every random state, so in float64 on the
CPU an interrupted-and-resumed run ends with bit-identical parameters.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch

from hessnorm._io import atomic_write
from hessnorm.errors import CheckpointError, ConfigError, NonFiniteError
from hessnorm.optim.factory import OPTIMIZERS, make_optimizer
from hessnorm.train.runs import (
    DTYPES,
    checkpoint_name,
    list_checkpoints,
    load_checkpoint,
    rebuild,
    save_checkpoint,
)
from hessnorm.train.tasks import TASKS, Task, build_task, cosine_lr

__all__ = ["TrainConfig", "train", "rebuild"]
METRIC_COLUMNS = ["step", "train_loss", "eval_loss", "lr", "grad_norm", "update_norm", "seconds"]
SMOOTH_COLUMNS = ["local_smoothness", "smooth_grad_norm"]
# Settings that may differ between a run and its resumption without changing the math.
_RESUMABLE = {"resume", "progress", "steps", "ckpt_every", "eval_every", "device"}


@dataclass
class TrainConfig:
    """Everything that defines a run (saved as ``config.json`` and in each checkpoint).

    ``None`` means "the task's default" (``lr``, ``beta1``, ``beta2``, ``batch_size``,
    ``schedule``, ``warmup``, ``eval_examples``). ``task_options`` go to
    :func:`hessnorm.train.tasks.build_task` (e.g. ``{"n_layer": 4}`` for gpt,
    ``{"t": 0.1}`` for quadratic). ``rotation`` is used by ``rotated-adam``;
    ``partition`` by ``blockwise-adam``. ``bias_correction``, ``eps_inside`` and ``v0``
    switch Adam-type optimizers to paper 000's Algorithm 1-3 as written. This class is
    the one source of the trainer's defaults: ``hessnorm train`` derives its flags and
    their help from the fields and the lines below.

    Attributes:
        task: the trainer task (quadratic, gpt, resnet).
        optimizer: the optimizer (adam, adasgd, blockwise-adam, rotated-adam, sgd, signgd, rmsprop).
        steps: optimizer steps.
        lr: peak learning rate (None: the task's default).
        out: run folder (config.json, metrics.csv, ckpt_*.pt).
        device: cpu, cuda or auto (cuda when available).
        seed: seeds the model's initialisation and the data order.
        resume: continue from the run folder's last checkpoint.
        dtype: parameter dtype.
        ckpt_every: save a checkpoint every this many steps (0: only the final one).
        eval_every: evaluate every this many steps (0: every steps/10).
        beta1: Adam's β₁ (None: the task's default).
        beta2: Adam's β₂ (None: the task's default).
        eps: Adam's ε.
        weight_decay: decoupled weight decay (AdamW-style).
        partition: blocks of blockwise-adam (by_tensor, by_row, coordinates, single).
        rotation: rotation R of rotated-adam (a spec such as randperm:depth=2,seed=0).
        record_smoothness_every: record local smoothness every this many steps (0: never).
        progress: show a progress bar.
        batch_size: training batch size (None: the task's default).
        schedule: learning-rate schedule, cosine or constant (None: the task's default).
        warmup: warm-up steps (None: the task's default).
        eval_examples: evaluation examples (None: the task's default).
        data_dir: nanoGPT data folder (train.bin/val.bin) or CIFAR-10 folder.
        task_options: task options as JSON, e.g. '{"n_layer": 4}'.
        bias_correction: Adam's bias correction (off: paper 000 Alg. 1-3 as written).
        eps_inside: ε inside the square root, sqrt(v + ε), as in the paper.
        v0: initial value of Adam's second moment v.
        compile: torch.compile the model (CUDA only).

    Example:
        >>> cfg = TrainConfig(task="quadratic", optimizer="rotated-adam", steps=10)
        >>> cfg.lr is None, cfg.rotation, TrainConfig.from_dict(cfg.to_dict()) == cfg
        (True, 'randperm:depth=2,seed=0', True)
    """

    task: str = "gpt"
    optimizer: str = "adam"
    steps: int = 200
    lr: float | None = None
    out: str = "runs/default"
    device: str = "auto"
    seed: int = 0
    resume: bool = False
    dtype: str = "float32"
    ckpt_every: int = 0
    eval_every: int = 0
    beta1: float | None = None
    beta2: float | None = None
    eps: float = 1e-8
    weight_decay: float = 0.0
    partition: str = "by_tensor"
    rotation: str = "randperm:depth=2,seed=0"
    record_smoothness_every: int = 0
    progress: bool = True
    batch_size: int | None = None
    schedule: str | None = None
    warmup: int | None = None
    eval_examples: int | None = None
    data_dir: str | None = None
    task_options: dict = field(default_factory=dict)
    bias_correction: bool = True
    eps_inside: bool = False
    v0: float = 0.0
    compile: bool = False

    def to_dict(self) -> dict:
        """The config as a JSON-able dict (what ``config.json`` holds).

        Example:
            >>> TrainConfig(steps=3).to_dict()["steps"]
            3
        """
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        """The config of a dict, ignoring unknown keys (configs of newer versions).

        Example:
            >>> TrainConfig.from_dict({"steps": 5, "unknown": 1}).steps
            5
        """
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


def _device(name: str | None) -> torch.device:
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' asked for but CUDA is not available; use --device cpu.")
    return torch.device(name)


def _validate(cfg: TrainConfig) -> None:
    if cfg.task not in TASKS:
        raise ConfigError(f"unknown task {cfg.task!r}; choose one of {', '.join(TASKS)}.")
    if cfg.optimizer not in OPTIMIZERS:
        raise ConfigError(
            f"unknown optimizer {cfg.optimizer!r}; choose one of {', '.join(OPTIMIZERS)}."
        )
    if cfg.dtype not in DTYPES:
        raise ConfigError(f"unknown dtype {cfg.dtype!r}; use float32 or float64.")
    if cfg.steps < 1:
        raise ConfigError(f"steps must be >= 1, got {cfg.steps}.")
    if cfg.schedule not in (None, "cosine", "constant"):
        raise ConfigError(f"unknown schedule {cfg.schedule!r}; use 'cosine' or 'constant'.")


def _task_options(cfg: TrainConfig) -> dict:
    opts = dict(cfg.task_options)
    if cfg.data_dir is not None:
        opts["data_dir"] = cfg.data_dir
    if cfg.batch_size is not None:
        opts["batch_size"] = cfg.batch_size
    return opts


def _flat(params) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in params])


def _read_metrics(path: Path, upto: int) -> list[dict]:
    if not path.is_file():
        return []
    with open(path, newline="") as fh:
        return [r for r in csv.DictReader(fh) if int(r["step"]) <= upto]


def _write_metrics(path: Path, rows: list[dict], columns: list[str]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    text = buf.getvalue()
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def _rng_state(gen: torch.Generator, device: torch.device) -> dict:
    state = {"data": gen.get_state(), "torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _eval_loss(model, loss_fn, batches, autocast) -> float:
    was = model.training
    model.eval()
    total, n = 0.0, 0
    with torch.no_grad(), autocast():
        for x, y in batches:
            b = len(y)
            total += float(loss_fn(model(x), y)) * b
            n += b
    model.train(was)
    return total / n


def _smoothness(model, loss_fn, batch, w, w_next):
    """Local smoothness (paper 003, App. E) of the training-batch loss along w -> w_next.

    The loss is the operator's (``HessianOperator.from_module`` on the one batch,
    evaluation mode, BatchNorm with running statistics when the model keeps them).
    """
    from hessnorm.estimators.local_smoothness import local_smoothness
    from hessnorm.operator import HessianOperator

    bn = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    frozen = bool(bn) and all(m.running_mean is not None for m in bn)
    was = model.training
    model.eval()
    try:
        op = HessianOperator.from_module(
            model, loss_fn, [batch], batchnorm="frozen" if frozen else "batch"
        )
    finally:
        model.train(was)
    est = local_smoothness(op, w, w_next)
    return est.value, est.details["grad_norm"]


# ---------------------------------------------------------------------------- setup


def _open_run_folder(cfg: TrainConfig) -> tuple[Path, dict | None, Path | None]:
    """Create ``cfg.out``; with ``resume``, the last checkpoint (checked against ``cfg``)."""
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    existing = list_checkpoints(out)
    if existing and not cfg.resume:
        raise ConfigError(
            f"{out} already holds checkpoints (last: step {existing[-1][0]}); pass "
            "--resume (resume=True) to continue it, or choose another --out."
        )
    if not existing:
        return out, None, None
    ckpt = load_checkpoint(existing[-1][1])
    saved = TrainConfig.from_dict(ckpt["config"])
    diff = [
        f.name
        for f in fields(TrainConfig)
        if f.name not in _RESUMABLE and getattr(saved, f.name) != getattr(cfg, f.name)
    ]
    if diff:
        raise ConfigError(
            f"cannot resume {out}: settings {diff} differ from the saved run; use the "
            "same settings (only steps, ckpt/eval frequency, device, progress may change)."
        )
    return out, ckpt, existing[-1][1]


@dataclass
class _Hyper:
    """The hyper-parameters of a run: the config's, or the task's defaults where it says None."""

    lr: float
    betas: tuple[float, float]
    schedule: str
    warmup: int
    eval_examples: int | None
    eval_every: int

    @classmethod
    def resolve(cls, cfg: TrainConfig, defaults: dict) -> _Hyper:
        warmup = cfg.warmup if cfg.warmup is not None else defaults["warmup"]
        return cls(
            lr=cfg.lr if cfg.lr is not None else defaults["lr"],
            betas=(
                cfg.beta1 if cfg.beta1 is not None else defaults["betas"][0],
                cfg.beta2 if cfg.beta2 is not None else defaults["betas"][1],
            ),
            schedule=cfg.schedule or defaults["schedule"],
            warmup=max(1, cfg.steps // 20) if warmup is None else warmup,
            eval_examples=(
                cfg.eval_examples if cfg.eval_examples is not None else defaults["eval_examples"]
            ),
            eval_every=cfg.eval_every or max(1, cfg.steps // 10),
        )

    def lr_at(self, step: int, steps: int) -> float:
        if self.schedule == "cosine":
            return cosine_lr(step, lr=self.lr, steps=steps, warmup=self.warmup)
        return self.lr


@dataclass
class _Run:
    """Everything one training run holds while it trains."""

    cfg: TrainConfig
    out: Path
    task: Task
    hyper: _Hyper
    device: torch.device
    opt: torch.optim.Optimizer
    params: list
    gen: torch.Generator
    eval_batches: list
    use_amp: bool
    forward: Callable
    columns: list[str]
    meta: dict
    rows: list[dict] = field(default_factory=list)
    elapsed: float = 0.0
    last_ckpt: Path | None = None

    def autocast(self):
        if self.use_amp:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()


def _setup(cfg: TrainConfig, out: Path) -> _Run:
    """Build the task, optimizer, data generator and checkpoint metadata of a run."""
    device = _device(cfg.device)
    dtype = DTYPES[cfg.dtype]
    task = build_task(cfg.task, _task_options(cfg), seed=cfg.seed, dtype=dtype, device=device)
    hyper = _Hyper.resolve(cfg, task.defaults)
    model = task.model
    model.train()
    opt = make_optimizer(
        cfg.optimizer,
        model.named_parameters(),
        lr=hyper.lr,
        betas=hyper.betas,
        eps=cfg.eps,
        weight_decay=cfg.weight_decay,
        partition=cfg.partition,
        rotation=cfg.rotation,
        bias_correction=cfg.bias_correction,
        eps_inside=cfg.eps_inside,
        v0=cfg.v0,
    )
    params = [p for p in model.parameters() if p.requires_grad]
    meta = dict(
        task=cfg.task,
        task_options=task.options,
        config=cfg.to_dict(),
        d=sum(p.numel() for p in params),
        param_names=[n for n, p in model.named_parameters() if p.requires_grad],
        dtype=cfg.dtype,
        lr=hyper.lr,
        betas=list(hyper.betas),
        schedule=hyper.schedule,
        warmup=hyper.warmup,
    )
    if cfg.task == "gpt" and task.options.get("data_dir") is None:
        from hessnorm.train.data import corpus_info

        meta["corpus"] = corpus_info()
    return _Run(
        cfg=cfg,
        out=out,
        task=task,
        hyper=hyper,
        device=device,
        opt=opt,
        params=params,
        gen=torch.Generator().manual_seed(cfg.seed),
        eval_batches=task.eval_batches(hyper.eval_examples),
        use_amp=device.type == "cuda" and dtype == torch.float32,
        forward=torch.compile(model) if (cfg.compile and device.type == "cuda") else model,
        columns=METRIC_COLUMNS + (SMOOTH_COLUMNS if cfg.record_smoothness_every else []),
        meta=meta,
    )


def _restore(run: _Run, ckpt: dict, path: Path) -> int:
    """Load weights, optimizer state, random states and metrics; the step to resume from."""
    try:
        run.task.model.load_state_dict(ckpt["model"])
        run.opt.load_state_dict(ckpt["optimizer"])
    except (RuntimeError, ValueError, KeyError) as exc:
        raise CheckpointError(f"checkpoint {path} does not fit: {exc}") from exc
    run.gen.set_state(ckpt["rng"]["data"])
    torch.set_rng_state(ckpt["rng"]["torch"])
    if "cuda" in ckpt["rng"] and run.device.type == "cuda":
        torch.cuda.set_rng_state(ckpt["rng"]["cuda"], run.device)
    start, run.elapsed = int(ckpt["step"]), float(ckpt["elapsed"])
    run.rows = _read_metrics(run.out / "metrics.csv", start)
    return start


# ---------------------------------------------------------------------------- steps


def _save(run: _Run, step: int) -> Path:
    # metrics first: a kill between the two writes leaves rows past the last
    # checkpoint, which resume drops; the other order would lose rows
    _write_metrics(run.out / "metrics.csv", run.rows, run.columns)
    path = run.out / checkpoint_name(step)
    save_checkpoint(
        path,
        dict(
            run.meta,
            step=step,
            model=run.task.model.state_dict(),
            optimizer=run.opt.state_dict(),
            rng=_rng_state(run.gen, run.device),
            elapsed=run.elapsed,
        ),
    )
    return path


def _step(run: _Run, step: int) -> dict:
    """One optimizer step (``step`` counts from 0); its metrics row (without eval/seconds)."""
    cfg, model, loss_fn = run.cfg, run.task.model, run.task.loss_fn
    lr_now = run.hyper.lr_at(step, cfg.steps)
    for group in run.opt.param_groups:
        group["lr"] = lr_now
    batch = run.task.sample(run.gen)
    with run.autocast():
        loss = loss_fn(run.forward(batch[0]), batch[1])
    if not torch.isfinite(loss):
        where = f"; the last good checkpoint is {run.last_ckpt}" if run.last_ckpt else ""
        raise NonFiniteError(
            f"the training loss is {float(loss.detach())} at step {step + 1} ({cfg.optimizer}, "
            f"lr={lr_now:g}){where}; lower the learning rate."
        )
    run.opt.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = float(
        torch.linalg.vector_norm(
            torch.stack(
                [torch.linalg.vector_norm(p.grad) for p in run.params if p.grad is not None]
            )
        )
    )
    w = _flat(run.params)
    run.opt.step()
    w_next = _flat(run.params)
    row = dict(
        step=step + 1,
        train_loss=float(loss.detach()),
        eval_loss="",
        lr=lr_now,
        grad_norm=grad_norm,
        update_norm=float(torch.linalg.vector_norm(w_next - w)),
    )
    K = cfg.record_smoothness_every
    if K and step % K == 0 and not torch.equal(w, w_next):
        row["local_smoothness"], row["smooth_grad_norm"] = _smoothness(
            model, loss_fn, batch, w, w_next
        )
    return row


# ---------------------------------------------------------------------------- train


def train(cfg: TrainConfig) -> dict:
    """Train ``cfg.task`` with ``cfg.optimizer``; write the run folder ``cfg.out``.

    Returns a summary dict: ``out``, ``step``, ``train_loss``, ``eval_loss``,
    ``checkpoint`` (path of the final checkpoint), ``seconds``.

    Raises:
        ConfigError: unknown task/optimizer/dtype, or an existing run folder without
            ``resume`` (or a resume whose config differs from the saved one).
        NonFiniteError: the loss became NaN/Inf; training stops there and the last
            good checkpoint is kept (the message names the step).

    Example:
        >>> import tempfile
        >>> summary = train(TrainConfig(task="quadratic", steps=3, out=tempfile.mkdtemp(),
        ...                             progress=False, task_options={"d": 20}))
        >>> summary["step"], summary["checkpoint"].endswith("ckpt_000003.pt")
        (3, True)
    """
    _validate(cfg)
    _device(cfg.device)  # fail on an unavailable device before touching the folder
    out, ckpt, ckpt_path = _open_run_folder(cfg)
    atomic_write(
        out / "config.json",
        lambda tmp: Path(tmp).write_text(json.dumps(cfg.to_dict(), indent=2, sort_keys=True)),
    )
    run = _setup(cfg, out)
    train_loss = eval_loss = float("nan")
    with torch.random.fork_rng(devices=[run.device] if run.device.type == "cuda" else []):
        torch.manual_seed(cfg.seed + 1)  # dropout and any other global draw
        start = _restore(run, ckpt, ckpt_path) if ckpt is not None else 0
        run.last_ckpt = ckpt_path
        bar = None
        if cfg.progress:
            from tqdm.auto import tqdm

            bar = tqdm(
                total=cfg.steps, initial=start, desc=f"{cfg.task}/{cfg.optimizer}", unit="step"
            )
        t_start = time.perf_counter() - run.elapsed
        try:
            for step in range(start, cfg.steps):
                row = _step(run, step)
                train_loss = row["train_loss"]
                done = step + 1
                if done % run.hyper.eval_every == 0 or done == cfg.steps:
                    eval_loss = _eval_loss(
                        run.task.model, run.task.loss_fn, run.eval_batches, run.autocast
                    )
                    row["eval_loss"] = eval_loss
                run.elapsed = time.perf_counter() - t_start
                row["seconds"] = round(run.elapsed, 4)
                run.rows.append(row)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{train_loss:.4f}", lr=f"{row['lr']:.2e}")
                if (cfg.ckpt_every and done % cfg.ckpt_every == 0) or done == cfg.steps:
                    run.last_ckpt = _save(run, done)
        finally:
            if bar is not None:
                bar.close()
    return dict(
        out=str(out),
        step=cfg.steps,
        train_loss=train_loss,
        eval_loss=eval_loss,
        checkpoint=str(run.last_ckpt),
        seconds=run.elapsed,
    )
