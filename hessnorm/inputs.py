"""Typed inputs: the evaluation-set choice, what a checkpoint says about itself, analyze's settings.

* :class:`EvalSet` — which examples the Hessian averages over (one default for every
  checkpoint format: :data:`DEFAULT_LM_WINDOWS` windows for language models).
* :class:`CheckpointInfo` — what :func:`hessnorm.checkpoint.load` learned about a
  checkpoint and its evaluation data; every result row names these.
* :class:`AnalyzeOptions` — every setting of :func:`hessnorm.analyze.analyze`, shared by
  the Python API and ``hessnorm analyze`` (whose flags and help are derived from the
  fields here and from the estimator registry).

This module imports no torch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from hessnorm.errors import ConfigError

__all__ = [
    "DEFAULT_LM_WINDOWS",
    "EVAL_BATCH",
    "EvalSet",
    "EvalData",
    "CheckpointInfo",
    "EstimatorContext",
    "AnalyzeOptions",
]

# Language-model evaluation windows when the user names none: the same for hessnorm gpt
# runs, nanoGPT ckpt.pt files and Hugging Face folders.
DEFAULT_LM_WINDOWS = 64
# windows per batch when a language-model evaluation set is cut into batches
EVAL_BATCH = 16


def _field(default: Any, help: str, **kw: Any) -> Any:
    """A dataclass field carrying its CLI help (``metadata["help"]``)."""
    if callable(default) and not isinstance(default, type):
        return dataclasses.field(default_factory=default, metadata={"help": help, **kw})
    return dataclasses.field(default=default, metadata={"help": help, **kw})


@dataclasses.dataclass(frozen=True)
class EvalSet:
    """The evaluation set a checkpoint's Hessian is taken over (the user's choice).

    Attributes:
        windows: evaluation examples: windows for language models (None: the default,
            :data:`DEFAULT_LM_WINDOWS`), examples of the task's evaluation split otherwise
            (None: the task's own default).
        data: state_dicts: ``"module:function"`` returning the batches; nanoGPT:
            ``"builtin"`` for the bundled byte-level corpus (never used unless asked).
        data_dir: nanoGPT data folder holding ``val.bin``, or a task's data folder.
        text: Hugging Face folders: the UTF-8 text file windows are cut from.
        block_size: Hugging Face folders: tokens per window (None: the context length,
            at most 1024).
        data_seed: language models: None keeps the deterministic evenly spaced
            ``lm_windows`` starts (offset 0); an int shifts every start by one random
            offset drawn with it (the rule ``--eval-resamples`` draws from).

    Example:
        >>> EvalSet().lm_windows(), EvalSet(windows=8).lm_windows()
        (64, 8)
        >>> EvalSet(windows=0)
        Traceback (most recent call last):
        ...
        hessnorm.errors.ConfigError: --eval-examples must be >= 1, got 0 (leave it out for the default: 64 windows for language models, the task's evaluation split otherwise)
    """

    windows: int | None = _field(None, "evaluation examples", metavar="N")
    data: Any = None
    data_dir: str | None = None
    text: str | None = None
    block_size: int | None = None
    data_seed: int | None = None

    def __post_init__(self) -> None:
        if self.windows is not None and int(self.windows) < 1:
            raise ConfigError(
                f"--eval-examples must be >= 1, got {self.windows} (leave it out for the "
                f"default: {DEFAULT_LM_WINDOWS} windows for language models, the task's "
                "evaluation split otherwise)"
            )
        if self.block_size is not None and int(self.block_size) < 1:
            raise ConfigError(f"--block-size must be >= 1, got {self.block_size}")

    def lm_windows(self) -> int:
        """Windows of a language-model evaluation set."""
        return DEFAULT_LM_WINDOWS if self.windows is None else int(self.windows)


@dataclasses.dataclass(frozen=True)
class EvalData:
    """The evaluation set actually used, as every row names it.

    Attributes:
        data: the file or source (``d/val.bin``, ``task resnet``, ``user data (--data)``).
        split: the split (``val``, ``eval``, ``text``).
        windows: examples (windows for language models).
        tokens: tokens per window (None for non-sequence data).
        rule: how the examples were chosen (``lm_windows: evenly spaced ...``).
        data_seed: the seed of random window offsets (None: deterministic).

    Example:
        >>> EvalData("task resnet", "eval", 512, None, "fixed split").columns()["eval_windows"]
        512
    """

    data: str
    split: str
    windows: int | None
    tokens: int | None
    rule: str
    data_seed: int | None = None

    def describe(self) -> str:
        """One line: ``'d/val.bin (split val), 64 windows × 256 tokens, lm_windows: ...'``.

        Example:
            >>> EvalData("d/val.bin", "val", 64, 256, "lm_windows: evenly spaced").describe()
            'd/val.bin (split val), 64 windows × 256 tokens, lm_windows: evenly spaced'
        """
        size = f"{self.windows} examples"
        if self.tokens:
            size = f"{self.windows} windows × {self.tokens} tokens"
        return f"{self.data} (split {self.split}), {size}, {self.rule}"

    def columns(self) -> dict[str, Any]:
        """The evaluation-set columns of a result row."""
        return {
            "data": self.data,
            "split": self.split,
            "eval_windows": self.windows,
            "eval_tokens": self.tokens,
            "eval_rule": self.rule,
            "data_seed": self.data_seed,
        }


# the keys loaders put in their metadata dicts that CheckpointInfo has fields for
_EVAL_KEYS = {
    "data": "data",
    "split": "split",
    "eval_windows": "windows",
    "eval_tokens": "tokens",
    "eval_rule": "rule",
    "data_seed": "data_seed",
}


@dataclasses.dataclass(frozen=True)
class CheckpointInfo:
    """What a checkpoint says about itself, and the evaluation data it was loaded with.

    Attributes:
        checkpoint: the path as given.
        kind: ``hessnorm-run``, ``nanogpt``, ``state_dict`` or ``hf``.
        task: the trainer task (``gpt``, ``resnet``, ``quadratic``, ``user``, ``causal-lm``).
        optimizer: the optimizer that produced it (``unknown`` when the file does not say).
        step: the training step (None when unknown).
        rotation: the rotation spec of a rotated-Adam run (its Hessian is analysed in the
            run's rotated coordinates), else None.
        eval: the evaluation set used (:class:`EvalData`).
        notes: messages for the user (checks that warned, substitutions made).
        resample: ``k -> batches`` of the k-th independent evaluation set (language
            models), or None when the evaluation set is fixed.
        extra: kind-specific facts (nanoGPT ``model_args`` and ``best_val_loss``, the run's
            ``task_options``, a Hugging Face ``architecture``, ...).

    ``info["kind"]`` and ``info.get("best_val_loss")`` read fields and ``extra`` alike
    (a read-only mapping view, for code written against the former metadata dict).

    Example:
        >>> info = CheckpointInfo.from_loader({"checkpoint": "c.pt", "kind": "nanogpt",
        ...     "task": "gpt", "step": 5, "data": "d/val.bin", "split": "val",
        ...     "eval_windows": 64, "eval_tokens": 256, "eval_rule": "lm_windows",
        ...     "best_val_loss": 2.5})
        >>> info.kind, info.eval.windows, info.extra["best_val_loss"], info["eval_tokens"]
        ('nanogpt', 64, 2.5, 256)
    """

    checkpoint: str
    kind: str
    task: str | None
    optimizer: str
    step: int | None
    rotation: Any
    eval: EvalData
    notes: tuple[str, ...] = ()
    resample: Callable[[int], list] | None = dataclasses.field(default=None, compare=False)
    extra: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    @classmethod
    def from_loader(cls, meta: Mapping[str, Any]) -> CheckpointInfo:
        """Build from a loader's metadata dict (every key not a field goes to ``extra``)."""
        meta = dict(meta)
        ev = EvalData(**{f: meta.pop(k, None) for k, f in _EVAL_KEYS.items()})
        names = {f.name for f in dataclasses.fields(cls)} - {"eval", "extra"}
        own = {k: meta.pop(k) for k in list(meta) if k in names}
        own["notes"] = tuple(own.get("notes") or ())
        own.setdefault("optimizer", "unknown")
        own["optimizer"] = own["optimizer"] or "unknown"
        for key in ("task", "step", "rotation"):
            own.setdefault(key, None)
        return cls(eval=ev, extra=meta, **own)

    def with_notes(self, *notes: str) -> CheckpointInfo:
        return dataclasses.replace(self, notes=(*self.notes, *notes))

    # read-only mapping view
    def __getitem__(self, key: str) -> Any:
        if key in _EVAL_KEYS:
            return getattr(self.eval, _EVAL_KEYS[key])
        if key in self.extra:
            return self.extra[key]
        if key in {f.name for f in dataclasses.fields(self)}:
            value = getattr(self, key)
            return list(value) if key == "notes" else value
        raise KeyError(key)

    def get(self, key: str, default: Any = None) -> Any:
        try:
            return self[key]
        except KeyError:
            return default

    def __contains__(self, key: object) -> bool:
        return self.get(str(key), _MISSING) is not _MISSING

    def keys(self) -> Iterator[str]:
        names = [f.name for f in dataclasses.fields(self) if f.name not in ("eval", "extra")]
        return iter([*names, *_EVAL_KEYS, *self.extra])


_MISSING = object()


@dataclasses.dataclass(frozen=True)
class EstimatorContext:
    """What an estimator that takes ``context`` may read besides the operator.

    Attributes:
        checkpoint: the checkpoint's :class:`CheckpointInfo` (None off a checkpoint).
        path: the checkpoint file (None off a checkpoint).
        model: the loaded model (its named parameters map the operator's coordinates).
        preconditioner: ``op -> Preconditioner`` read from the checkpoint's optimizer
            state (None off a checkpoint); estimators call it only when they need P.

    Example:
        >>> EstimatorContext().checkpoint is None
        True
    """

    checkpoint: CheckpointInfo | None = None
    path: Any = None
    model: Any = None
    preconditioner: Callable[[Any], Any] | None = None


@dataclasses.dataclass(frozen=True)
class AnalyzeOptions:
    """Every setting of ``hessnorm analyze``: the Python API and the CLI share this object.

    The CLI flags are the field names with ``-`` for ``_`` (``--eval-resamples``), their
    help the ``help`` metadata below; estimator options (``--n-cauchy``, ``--tol``, ...)
    come from the estimator registry and travel in ``estimator_options``.

    Example:
        >>> o = AnalyzeOptions(estimators="spectral,l11", estimator_options={"n_cauchy": 20})
        >>> [s.label for s in o.selections()], o.per_estimator()["l11"]["n_cauchy"]
        (['spectral', 'l11'], 20)
    """

    estimators: str | Sequence[str] = _field(
        "spectral,l11", "comma-separated estimators (`hessnorm estimators` lists them)"
    )
    estimator_options: Mapping[str, Any] = _field(
        dict, "estimator options: name -> value, or 'estimator.name' -> value for one estimator"
    )
    rotation: str = _field(
        "randperm:depth=2,seed=0", "rotation R of the rotated-NAME estimators (rotated loss L∘R)"
    )
    seed: int = _field(
        0,
        "seeds the estimators' random probes only; every interval is conditional on the "
        "evaluation set (see --data-seed, --eval-resamples)",
    )
    eval: EvalSet = _field(EvalSet, "the evaluation set (EvalSet)")
    eval_resamples: int = _field(
        0,
        "also run each estimator on K >= 2 independent evaluation sets (random offsets drawn "
        "from --data-seed) and report their spread (eval_sd, eval_min, eval_max): the "
        "variation the estimator interval does not include; costs K times more",
        metavar="K",
    )
    device: str | None = _field(None, "cpu or cuda (default: where the checkpoint loads)")
    dtype: Any = _field(None, "float32 or float64 (default: the checkpoint's)")
    batchnorm: str = _field(
        "batch", "BatchNorm layers: batch statistics (as in training) or frozen running stats"
    )
    model: Any = _field(None, "state_dicts: 'module:factory' building the model")
    loss: Any = _field(None, "'module:function' batch-mean loss (default cross-entropy)")
    task: str | None = _field(None, "state_dicts: a trainer task instead of --model/--data")
    strict: bool = _field(
        False,
        "nanoGPT: refuse a checkpoint whose recomputed loss differs from its best_val_loss by "
        "more than the printed tolerance (default: warn)",
    )
    progress: bool = _field(True, "progress bars")
    log: Any = _field(None, "where notes go (default stderr; False: nowhere)")

    def __post_init__(self) -> None:
        if int(self.eval_resamples) < 0 or int(self.eval_resamples) == 1:
            raise ConfigError(
                "--eval-resamples must be 0 (off) or >= 2 evaluation sets, got "
                f"{self.eval_resamples}"
            )
        if self.batchnorm not in ("batch", "frozen"):
            raise ConfigError(f"batchnorm must be 'batch' or 'frozen', got {self.batchnorm!r}")
        if isinstance(self.dtype, str) and self.dtype not in ("float32", "float64"):
            raise ConfigError(f"dtype must be float32 or float64, got {self.dtype!r}")
        self.selections()  # unknown estimators fail here, before any checkpoint is read
        self.per_estimator()

    def selections(self):
        """The estimators, resolved against the registry."""
        from hessnorm.registry import parse_estimators

        return parse_estimators(self.estimators)

    def per_estimator(self) -> dict[str, dict[str, Any]]:
        """label -> the full option dict of that estimator."""
        from hessnorm.registry import split_options

        return split_options(self.selections(), self.estimator_options)[0]

    def unused_options(self) -> list[str]:
        """Options given that none of the selected estimators takes."""
        from hessnorm.registry import split_options

        return split_options(self.selections(), self.estimator_options)[1]

    @classmethod
    def build(cls, **settings: Any) -> AnalyzeOptions:
        """Options from flat keywords: fields, :class:`EvalSet` fields (``eval_examples``
        for ``windows``) and estimator options, in any mix.

        Raises:
            ConfigError: a keyword that is none of these.

        Example:
            >>> o = AnalyzeOptions.build(estimators=["l11"], n_cauchy=10, eval_examples=8)
            >>> o.eval.windows, o.per_estimator()["l11"]["n_cauchy"]
            (8, 10)
        """
        from hessnorm.registry import estimator_options

        own = {f.name for f in dataclasses.fields(cls)}
        ev_fields = {f.name for f in dataclasses.fields(EvalSet)}
        base, ev, est = {}, {}, dict(settings.pop("estimator_options", None) or {})
        known_opts = estimator_options()
        for k, v in settings.items():
            if k == "eval_examples":
                ev["windows"] = v
            elif k in ev_fields:
                ev[k] = v
            elif k in own:
                base[k] = v
            elif k in known_opts or "." in k:
                est[k] = v
            else:
                raise ConfigError(
                    f"analyze got an unknown setting {k!r}; settings: "
                    f"{', '.join(sorted(own | ev_fields | {'eval_examples'}))}; estimator "
                    f"options: {', '.join(sorted(known_opts))}"
                )
        if ev:
            if "eval" in base:
                raise ConfigError("pass either eval=EvalSet(...) or its fields, not both")
            base["eval"] = EvalSet(**ev)
        return cls(estimator_options=est, **base)

    def replace(self, **changes: Any) -> AnalyzeOptions:
        return dataclasses.replace(self, **changes)
