"""Training tasks: each builds a model, its data and a batch-mean loss.

``build_task(name, options, seed=..., dtype=..., device=...)`` returns a
:class:`Task`; ``options`` is a JSON-able dict saved in every checkpoint, so the
same call rebuilds the task from a checkpoint alone. Names:

* ``quadratic`` — paper 000 Section 4.1: L(x) = ½ (R x)ᵀ Σ (R x) with
  Σ = diag(1 ×11, 1/2², …, 1/990²) for d = 1000 (option ``t``: R = ExpSkew(d, t);
  t = 0 is the unrotated L₀), started from Rᵀx₀ with x₀ ~ U[0, 1]^d.
* ``gpt`` — nanoGPT-compatible GPT (:mod:`hessnorm.train.gpt`) on byte tokens of
  the Python stdlib, or on a nanoGPT data folder.
* ``resnet`` — small ResNet with batch-statistics BatchNorm on sklearn digits, or
  CIFAR-10 from a local folder (random crop + flip).

For the quadratic, the "model" is a module holding the parameter x whose
``forward(inputs)`` returns z = R x repeated once per row of ``inputs`` (shape
(B, d)); the targets hold the diagonal of Σ per row and ``loss_fn(z, σ)`` is
mean_rows ½ Σ_j σ_j z_j². So ``loss_fn(model(inputs), targets)`` is the quadratic
and the Hessian operator sees Rᵀ Σ R, like for any other model.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hessnorm.errors import ConfigError

__all__ = [
    "TASKS",
    "Task",
    "build_task",
    "lm_windows",
    "lm_batches",
    "QuadraticModel",
    "quadratic_sigma",
    "quadratic_loss",
    "cosine_lr",
]

TASKS = ("quadratic", "gpt", "resnet")


@dataclass
class Task:
    """A model, its data and a batch-mean loss, plus the task's default hyper-parameters.

    ``sample(gen)`` draws one training batch with the given ``torch.Generator`` (the
    only source of data randomness); ``eval_batches(n)`` is a fixed, deterministic
    list of evaluation batches covering ``n`` examples (None: the task's default).

    Example:
        >>> task = build_task("quadratic", {"d": 20})
        >>> x, y = task.sample(torch.Generator().manual_seed(0))
        >>> loss = task.loss_fn(task.model(x), y)  # ½ Σ_j σ_j x_j²
        >>> torch.allclose(loss, 0.5 * (quadratic_sigma(20, torch.float32) * task.model.x**2).sum())
        True
        >>> task.name, len(task.eval_batches()), task.defaults["lr"]
        ('quadratic', 1, 0.01)
    """

    name: str
    options: dict
    model: nn.Module
    loss_fn: Callable
    sample: Callable
    eval_batches: Callable
    defaults: dict = field(default_factory=dict)


def quadratic_sigma(d: int, dtype=torch.float64) -> torch.Tensor:
    """Diagonal of Σ in paper 000 Sec. 4.1: 11 ones, then 1/k² for k = 2, …, d − 10.

    Example:
        >>> s = quadratic_sigma(20)
        >>> len(s), s[:11].tolist() == [1.0] * 11, s[11].item(), s[-1].item()
        (20, True, 0.25, 0.01)
        >>> round(float(quadratic_sigma(1000).sum()) / 1000, 5)  # ‖Σ‖₁,₁/d of Table 1
        0.01164
    """
    if d < 12:
        raise ConfigError(f"the quadratic task needs d >= 12, got d={d}.")
    k = torch.arange(2, d - 9, dtype=dtype)
    return torch.cat([torch.ones(11, dtype=dtype), 1.0 / k**2])


def quadratic_loss(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """mean over rows of ½ Σ_j σ_j z_j² (outputs z, targets σ; both (B, d)).

    Example:
        >>> quadratic_loss(torch.tensor([[1.0, 2.0]]), torch.tensor([[2.0, 0.5]])).item()
        2.0
    """
    return 0.5 * (targets * outputs**2).sum(-1).mean()


class QuadraticModel(nn.Module):
    """Holds x ∈ R^d; ``forward(inputs)`` is R x repeated for each of the B rows of inputs.

    Example:
        >>> QuadraticModel(torch.tensor([1.0, 2.0, 3.0]))(torch.zeros(2, 1)).tolist()
        [[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]]
    """

    def __init__(self, x0: torch.Tensor, rotation=None) -> None:
        super().__init__()
        self.x = nn.Parameter(x0.clone())
        self.rotation = rotation

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        z = self.rotation.apply(self.x) if self.rotation is not None else self.x
        return z.unsqueeze(0).expand(inputs.shape[0], -1)


def seeded(seed: int, build: Callable[[], nn.Module]) -> nn.Module:
    """Build a module drawing from torch's global RNG without disturbing it.

    Example:
        >>> state = torch.random.get_rng_state()
        >>> a, b = seeded(3, lambda: nn.Linear(2, 2)), seeded(3, lambda: nn.Linear(2, 2))
        >>> torch.equal(a.weight, b.weight), torch.equal(state, torch.random.get_rng_state())
        (True, True)
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def lm_windows(tokens, n: int, block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The evaluation windows of a language model: the one rule for every checkpoint format.

    ``n`` windows of ``block_size + 1`` consecutive tokens whose starts are evenly
    spaced over the whole split of ``N`` tokens,
    ``start_i = floor(i (N - block_size - 1) / (n - 1))`` for ``i = 0..n-1``
    (``start_0 = 0`` when ``n = 1``), computed in integer arithmetic (a float
    ``linspace`` can round an exact integer such as 30 down to 29): deterministic
    (no seed), spread over the split (the first window starts at token 0, the last
    ends at token ``N - 1``), and the same for the trainer's ``gpt`` task, nanoGPT
    ``ckpt.pt`` files and Hugging Face folders (``analyze --text``), so the same
    weights always get the same Hessian. Inputs are the first ``block_size`` tokens
    of each window, targets the last ``block_size`` (shifted by one). Windows
    overlap only when ``N < n (block_size + 1)``.

    Args:
        tokens: a 1-D integer sequence (numpy array, memmap of ``val.bin``, list).
        n: number of windows (sequences).
        block_size: sequence length T.

    Returns:
        ``(inputs, targets)``, int64 tensors of shape (n, T) on the CPU.

    Raises:
        ConfigError: at most ``block_size + 1`` tokens, or ``n``/``block_size`` not a
            positive integer.

    Example:
        >>> x, y = lm_windows(list(range(10)), 2, 3)
        >>> x.tolist(), y.tolist()
        ([[0, 1, 2], [6, 7, 8]], [[1, 2, 3], [7, 8, 9]])
    """
    for what, value in (("the number of evaluation windows", n), ("block_size", block_size)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ConfigError(f"{what} must be a positive integer (>= 1), got {value!r}")
    T = int(block_size)
    if len(tokens) <= T + 1:
        raise ConfigError(
            f"the evaluation split has {len(tokens)} tokens, fewer than block_size + 1 = {T + 1}"
        )
    n, span = int(n), len(tokens) - T - 1
    starts = [i * span // max(n - 1, 1) for i in range(n)]
    rows = torch.from_numpy(
        np.stack([np.asarray(tokens[i : i + T + 1], dtype=np.int64) for i in starts])
    )
    return rows[:, :-1], rows[:, 1:]


def _quadratic(options, seed, dtype, device) -> Task:
    opts = {"d": 1000, "t": 0.0, "rotation_seed": 0} | options
    d, t = int(opts["d"]), float(opts["t"])
    sigma = quadratic_sigma(d, dtype).to(device)
    rotation = None
    if t != 0.0:
        from hessnorm.rotation import ExpSkew

        rotation = ExpSkew(d, t, seed=int(opts["rotation_seed"]))
    x0 = torch.rand(d, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    if rotation is not None:
        x0 = rotation.apply_T(x0)
    model = QuadraticModel(x0.to(dtype)).to(device)
    model.rotation = rotation
    batch = (torch.zeros(1, 1, dtype=dtype, device=device), sigma.unsqueeze(0))
    return Task(
        name="quadratic",
        options=opts,
        model=model,
        loss_fn=quadratic_loss,
        sample=lambda gen: batch,
        eval_batches=lambda n=None: [batch],
        defaults=dict(
            lr=0.01, betas=(0.9, 0.99), batch_size=1, schedule="constant", warmup=0, eval_examples=1
        ),
    )


def _gpt(options, seed, dtype, device) -> Task:
    from hessnorm.train.data import load_text
    from hessnorm.train.gpt import GPT, TINY_GPT, GPTConfig, lm_loss

    opts = TINY_GPT.to_dict() | {"data_dir": None, "batch_size": 16} | options
    train, val, vocab = load_text(opts["data_dir"])
    if vocab is not None and opts["vocab_size"] < vocab:
        raise ConfigError(f"vocab_size {opts['vocab_size']} < {vocab} tokens of the corpus.")
    config = GPTConfig(**{k: opts[k] for k in GPTConfig.__dataclass_fields__})
    model = seeded(seed, lambda: GPT(config)).to(device=device, dtype=dtype)
    T, B = config.block_size, int(opts["batch_size"])
    if len(val) <= T + 1 or len(train) <= T + 1:
        raise ConfigError(f"the text corpus is shorter than block_size + 1 = {T + 1} tokens.")
    train_t = torch.from_numpy(train.astype(np.int64)) if opts["data_dir"] is None else None

    def sample(gen):
        starts = torch.randint(len(train) - T - 1, (B,), generator=gen).tolist()
        if train_t is not None:
            rows = train_t[torch.as_tensor(starts).view(-1, 1) + torch.arange(T + 1)]
        else:
            rows = torch.from_numpy(
                np.stack([np.asarray(train[i : i + T + 1], dtype=np.int64) for i in starts])
            )
        rows = rows.to(device)
        return rows[:, :-1], rows[:, 1:]

    def eval_batches(n=None):
        return lm_batches(val, n or 64, T, B, device)

    return Task(
        name="gpt",
        options=opts,
        model=model,
        loss_fn=lm_loss,
        sample=sample,
        eval_batches=eval_batches,
        defaults=dict(
            lr=1e-3,
            betas=(0.9, 0.95),
            batch_size=B,
            schedule="cosine",
            warmup=None,
            eval_examples=64,
        ),
    )


def lm_batches(tokens, n: int, block_size: int, batch_size: int, device="cpu") -> list:
    """:func:`lm_windows` split into batches of ``batch_size`` sequences, on ``device``.

    Example:
        >>> [tuple(x.shape) for x, _ in lm_batches(list(range(100)), 5, 4, 2)]
        [(2, 4), (2, 4), (1, 4)]
    """
    x, y = lm_windows(tokens, n, block_size)
    x, y = x.to(device), y.to(device)
    return [(x[i : i + batch_size], y[i : i + batch_size]) for i in range(0, len(x), batch_size)]


def _classification_loss(outputs, targets):
    """Mean cross-entropy; bf16/fp16 logits are upcast to float32, float64 is kept."""
    if outputs.dtype in (torch.float16, torch.bfloat16):
        outputs = outputs.float()
    return F.cross_entropy(outputs, targets)


def _resnet(options, seed, dtype, device) -> Task:
    from hessnorm.train.data import load_cifar10, load_digits_split, random_crop_flip
    from hessnorm.train.resnet import ResNet

    opts = {
        "dataset": "digits",
        "data_dir": None,
        "width": 8,
        "stages": 2,
        "batch_size": 64,
    } | options
    if opts["dataset"] == "digits":
        x_tr, y_tr, x_ev, y_ev = load_digits_split()
        augment = False
    elif opts["dataset"] == "cifar10":
        if not opts["data_dir"]:
            raise ConfigError("dataset 'cifar10' needs data_dir: a folder with CIFAR-10 batches.")
        x_tr, y_tr, x_ev, y_ev = load_cifar10(opts["data_dir"])
        augment = True
    else:
        raise ConfigError(f"unknown resnet dataset {opts['dataset']!r}; use 'digits' or 'cifar10'.")
    model = seeded(
        seed,
        lambda: ResNet(
            in_channels=x_tr.shape[1], width=int(opts["width"]), stages=int(opts["stages"])
        ),
    ).to(device=device, dtype=dtype)
    B = int(opts["batch_size"])

    def sample(gen):
        idx = torch.randint(len(y_tr), (B,), generator=gen)
        x = x_tr[idx]
        if augment:
            x = random_crop_flip(x, gen)
        return x.to(device=device, dtype=dtype), y_tr[idx].to(device)

    def eval_batches(n=None):
        n = min(n or len(y_ev), len(y_ev))
        return [
            (
                x_ev[i : min(i + B, n)].to(device=device, dtype=dtype),
                y_ev[i : min(i + B, n)].to(device),
            )
            for i in range(0, n, B)
        ]

    return Task(
        name="resnet",
        options=opts,
        model=model,
        loss_fn=_classification_loss,
        sample=sample,
        eval_batches=eval_batches,
        defaults=dict(
            lr=1e-3,
            betas=(0.9, 0.99),
            batch_size=B,
            schedule="cosine",
            warmup=0,
            eval_examples=None,
        ),
    )


def build_task(
    name: str,
    options: dict | None = None,
    *,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
) -> Task:
    """Task ``name`` with ``options`` (see the module docstring); weights seeded by ``seed``.

    Example:
        >>> task = build_task("quadratic", {"d": 20}, seed=1, dtype=torch.float64)
        >>> task.options, task.model.x.dtype, task.model.x.shape
        ({'d': 20, 't': 0.0, 'rotation_seed': 0}, torch.float64, torch.Size([20]))
        >>> build_task("mnist")
        Traceback (most recent call last):
        ...
        hessnorm.errors.ConfigError: unknown task 'mnist'; choose one of quadratic, gpt, resnet.
    """
    builders = {"quadratic": _quadratic, "gpt": _gpt, "resnet": _resnet}
    if name not in builders:
        raise ConfigError(f"unknown task {name!r}; choose one of {', '.join(TASKS)}.")
    return builders[name](dict(options or {}), int(seed), dtype, torch.device(device))


def cosine_lr(step: int, *, lr: float, steps: int, warmup: int, min_ratio: float = 0.1) -> float:
    """nanoGPT's schedule: linear warmup to lr, cosine decay to lr·min_ratio at the end.

    Example:
        >>> [round(cosine_lr(s, lr=1.0, steps=10, warmup=2), 4) for s in (0, 1, 2, 6, 10)]
        [0.3333, 0.6667, 1.0, 0.55, 0.1]
    """
    if step < warmup:
        return lr * (step + 1) / (warmup + 1)
    if steps <= warmup:
        return lr
    ratio = min(1.0, (step - warmup) / max(1, steps - warmup))
    coeff = 0.5 * (1.0 + math.cos(math.pi * ratio))
    return lr * min_ratio + coeff * (lr - lr * min_ratio)
