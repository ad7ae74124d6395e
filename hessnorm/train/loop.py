"""The reference training loop: one dataclass config, one function.

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
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch

from hessnorm.errors import CheckpointError, ConfigError, NonFiniteError
from hessnorm.optim.factory import OPTIMIZERS, make_optimizer
from hessnorm.train.checkpoint import (
    atomic_write,
    checkpoint_name,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
)
from hessnorm.train.tasks import TASKS, build_task, cosine_lr

__all__ = ["TrainConfig", "train", "rebuild"]

_DTYPES = {"float32": torch.float32, "float64": torch.float64}
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
    switch Adam-type optimizers to paper 000's Algorithm 1-3 as written.
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
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
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
    if cfg.dtype not in _DTYPES:
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
    """Local smoothness (paper 003, App. E) of the training-batch loss along w -> w_next."""
    from torch.func import functional_call, grad

    from hessnorm.estimators.local_smoothness import local_smoothness

    names = [n for n, p in model.named_parameters() if p.requires_grad]
    shapes = [p.shape for _, p in model.named_parameters() if p.requires_grad]
    sizes = [s.numel() for s in shapes]
    x, y = batch

    def f(flat):
        parts = dict(zip(names, (t.view(s) for t, s in zip(flat.split(sizes), shapes))))
        return loss_fn(functional_call(model, parts, (x,)), y)

    g = grad(f)
    was = model.training
    model.eval()
    try:
        est = local_smoothness(lambda v: g(v).detach(), w, w_next)
    finally:
        model.train(was)
    return est.value, est.details["grad_norm"]


def train(cfg: TrainConfig) -> dict:
    """Train ``cfg.task`` with ``cfg.optimizer``; write the run folder ``cfg.out``.

    Returns a summary dict: ``out``, ``step``, ``train_loss``, ``eval_loss``,
    ``checkpoint`` (path of the final checkpoint), ``seconds``.

    Raises:
        ConfigError: unknown task/optimizer/dtype, or an existing run folder without
            ``resume`` (or a resume whose config differs from the saved one).
        NonFiniteError: the loss became NaN/Inf; training stops there and the last
            good checkpoint is kept (the message names the step).
    """
    _validate(cfg)
    device = _device(cfg.device)
    dtype = _DTYPES[cfg.dtype]
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    existing = list_checkpoints(out)
    ckpt = None
    if existing and not cfg.resume:
        raise ConfigError(
            f"{out} already holds checkpoints (last: step {existing[-1][0]}); pass "
            "--resume (resume=True) to continue it, or choose another --out."
        )
    if existing:
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
    atomic_write(
        out / "config.json",
        lambda tmp: Path(tmp).write_text(json.dumps(cfg.to_dict(), indent=2, sort_keys=True)),
    )

    task = build_task(cfg.task, _task_options(cfg), seed=cfg.seed, dtype=dtype, device=device)
    dflt = task.defaults
    lr = cfg.lr if cfg.lr is not None else dflt["lr"]
    betas = (
        cfg.beta1 if cfg.beta1 is not None else dflt["betas"][0],
        cfg.beta2 if cfg.beta2 is not None else dflt["betas"][1],
    )
    schedule = cfg.schedule or dflt["schedule"]
    warmup = cfg.warmup if cfg.warmup is not None else dflt["warmup"]
    if warmup is None:
        warmup = max(1, cfg.steps // 20)
    eval_n = cfg.eval_examples if cfg.eval_examples is not None else dflt["eval_examples"]
    eval_every = cfg.eval_every or max(1, cfg.steps // 10)
    model, loss_fn = task.model, task.loss_fn
    model.train()
    opt = make_optimizer(
        cfg.optimizer,
        model.named_parameters(),
        lr=lr,
        betas=betas,
        eps=cfg.eps,
        weight_decay=cfg.weight_decay,
        partition=cfg.partition,
        rotation=cfg.rotation,
        bias_correction=cfg.bias_correction,
        eps_inside=cfg.eps_inside,
        v0=cfg.v0,
    )
    params = [p for p in model.parameters() if p.requires_grad]
    gen = torch.Generator().manual_seed(cfg.seed)
    eval_batches = task.eval_batches(eval_n)
    use_amp = device.type == "cuda" and dtype == torch.float32

    def autocast():
        if use_amp:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    forward = torch.compile(model) if (cfg.compile and device.type == "cuda") else model
    columns = METRIC_COLUMNS + (SMOOTH_COLUMNS if cfg.record_smoothness_every else [])
    start, elapsed = 0, 0.0
    rows: list[dict] = []
    meta = dict(
        task=cfg.task,
        task_options=task.options,
        config=cfg.to_dict(),
        d=sum(p.numel() for p in params),
        param_names=[n for n, p in model.named_parameters() if p.requires_grad],
        dtype=cfg.dtype,
        lr=lr,
        betas=list(betas),
        schedule=schedule,
        warmup=warmup,
    )
    if cfg.task == "gpt" and task.options.get("data_dir") is None:
        from hessnorm.train.data import corpus_info

        meta["corpus"] = corpus_info()

    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(cfg.seed + 1)  # dropout and any other global draw
        if ckpt is not None:
            try:
                model.load_state_dict(ckpt["model"])
                opt.load_state_dict(ckpt["optimizer"])
            except (RuntimeError, ValueError, KeyError) as exc:
                raise CheckpointError(f"checkpoint {existing[-1][1]} does not fit: {exc}") from exc
            gen.set_state(ckpt["rng"]["data"])
            torch.set_rng_state(ckpt["rng"]["torch"])
            if "cuda" in ckpt["rng"] and device.type == "cuda":
                torch.cuda.set_rng_state(ckpt["rng"]["cuda"], device)
            start, elapsed = int(ckpt["step"]), float(ckpt["elapsed"])
            rows = _read_metrics(out / "metrics.csv", start)
        last_ckpt = existing[-1][1] if existing else None

        def save(step):
            # metrics first: a kill between the two writes leaves rows past the last
            # checkpoint, which resume drops; the other order would lose rows
            _write_metrics(out / "metrics.csv", rows, columns)
            path = out / checkpoint_name(step)
            save_checkpoint(
                path,
                dict(
                    meta,
                    step=step,
                    model=model.state_dict(),
                    optimizer=opt.state_dict(),
                    rng=_rng_state(gen, device),
                    elapsed=elapsed,
                ),
            )
            return path

        bar = None
        if cfg.progress:
            from tqdm.auto import tqdm

            bar = tqdm(
                total=cfg.steps, initial=start, desc=f"{cfg.task}/{cfg.optimizer}", unit="step"
            )
        train_loss = eval_loss = float("nan")
        t_start = time.perf_counter() - elapsed
        for step in range(start, cfg.steps):
            lr_now = (
                cosine_lr(step, lr=lr, steps=cfg.steps, warmup=warmup)
                if schedule == "cosine"
                else lr
            )
            for group in opt.param_groups:
                group["lr"] = lr_now
            batch = task.sample(gen)
            with autocast():
                loss = loss_fn(forward(batch[0]), batch[1])
            if not torch.isfinite(loss):
                if bar is not None:
                    bar.close()
                where = f"; the last good checkpoint is {last_ckpt}" if last_ckpt else ""
                raise NonFiniteError(
                    f"the training loss is {float(loss.detach())} at step {step + 1} ({cfg.optimizer}, "
                    f"lr={lr_now:g}){where}; lower the learning rate."
                )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = float(
                torch.linalg.vector_norm(
                    torch.stack(
                        [torch.linalg.vector_norm(p.grad) for p in params if p.grad is not None]
                    )
                )
            )
            w = _flat(params)
            opt.step()
            w_next = _flat(params)
            train_loss = float(loss.detach())
            row = dict(
                step=step + 1,
                train_loss=train_loss,
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
            del w, w_next
            done = step + 1
            if done % eval_every == 0 or done == cfg.steps:
                eval_loss = _eval_loss(model, loss_fn, eval_batches, autocast)
                row["eval_loss"] = eval_loss
            elapsed = time.perf_counter() - t_start
            row["seconds"] = round(elapsed, 4)
            rows.append(row)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{train_loss:.4f}", lr=f"{lr_now:.2e}")
            if (cfg.ckpt_every and done % cfg.ckpt_every == 0) or done == cfg.steps:
                last_ckpt = save(done)
        if bar is not None:
            bar.close()
        if start >= cfg.steps:  # nothing left to do: report the saved state
            last_ckpt = existing[-1][1]
    return dict(
        out=str(out),
        step=cfg.steps,
        train_loss=train_loss,
        eval_loss=eval_loss,
        checkpoint=str(last_ckpt),
        seconds=elapsed,
    )


def rebuild(ckpt_path_or_dict, *, eval_examples=None, device=None, dtype=None):
    """Model, evaluation batches, loss and metadata of a trainer checkpoint.

    Returns ``(model, batches, loss_fn, meta)``: the model in eval mode with the
    checkpoint's weights; ``batches`` a fixed deterministic list of
    ``(inputs, targets)`` from the evaluation split (``eval_examples`` examples; None:
    the task's default); ``loss_fn(outputs, targets)`` the batch-mean loss; ``meta``
    with ``task``, ``task_options``, ``optimizer``, ``rotation``, ``step``, ``d``,
    ``param_names``, ``config``, ``dtype``. Ready for
    ``HessianOperator.from_module(model, loss_fn, batches)``. For the quadratic task
    the model holds x and returns R x per row (see :mod:`hessnorm.train.tasks`).

    Args:
        ckpt_path_or_dict: path of a ``ckpt_XXXXXX.pt`` or its loaded dict.
        eval_examples: size of the evaluation set.
        device: where to build (default: CPU).
        dtype: ``torch.float32``/``torch.float64`` or their names (default: the run's).
    """
    ckpt = load_checkpoint(ckpt_path_or_dict)
    if isinstance(dtype, str):
        if dtype not in _DTYPES:
            raise ConfigError(f"unknown dtype {dtype!r}; use float32 or float64.")
        dtype = _DTYPES[dtype]
    dtype = dtype or _DTYPES[ckpt["dtype"]]
    device = torch.device(device or "cpu")
    cfg = ckpt["config"]
    task = build_task(
        ckpt["task"], ckpt["task_options"], seed=cfg["seed"], dtype=dtype, device=device
    )
    try:
        task.model.load_state_dict(ckpt["model"])
    except RuntimeError as exc:
        raise CheckpointError(f"checkpoint weights do not fit the rebuilt model: {exc}") from exc
    task.model.to(dtype=dtype)
    task.model.eval()
    if eval_examples is None:
        eval_examples = task.defaults["eval_examples"]
    meta = dict(
        task=ckpt["task"],
        task_options=ckpt["task_options"],
        optimizer=cfg["optimizer"],
        rotation=cfg["rotation"] if cfg["optimizer"] == "rotated-adam" else None,
        step=int(ckpt["step"]),
        d=int(ckpt["d"]),
        param_names=list(ckpt["param_names"]),
        config=cfg,
        dtype=str(dtype).replace("torch.", ""),
        lr=ckpt.get("lr"),
        corpus=ckpt.get("corpus"),
    )
    return task.model, task.eval_batches(eval_examples), task.loss_fn, meta
