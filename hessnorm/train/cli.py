"""``hessnorm train``: command-line front end of :func:`hessnorm.train.train`.

Examples::

    hessnorm train --task gpt --optimizer adam --steps 300 --lr 1e-3 --out runs/adam
    hessnorm train --task gpt --optimizer rotated-adam --rotation randperm:depth=2,seed=0 \
        --steps 300 --out runs/rot
    hessnorm train --task gpt --optimizer adam --steps 300 --out runs/adam --resume
"""

from __future__ import annotations

import argparse
import json

from hessnorm.cliutil import add_dataclass_arguments, values_for
from hessnorm.errors import ConfigError
from hessnorm.optim.factory import OPTIMIZERS
from hessnorm.partition import PARTITIONS
from hessnorm.train.loop import TrainConfig, train
from hessnorm.train.tasks import TASKS

__all__ = ["configure_parser", "run", "main"]


def configure_parser(p: argparse.ArgumentParser) -> None:
    """Add the ``train`` options to ``p``: one flag per :class:`TrainConfig` field.

    Defaults and help come from ``TrainConfig`` itself (its fields and its docstring's
    ``Attributes``), so they are never restated here.

    Example:
        >>> p = argparse.ArgumentParser()
        >>> configure_parser(p)
        >>> args = p.parse_args(["--out", "runs/a", "--optimizer", "signgd", "--steps", "7"])
        >>> args.task, args.optimizer, args.steps, args.progress
        ('gpt', 'signgd', 7, True)
    """
    p.description = "Train a reference model; writes config.json, metrics.csv, ckpt_*.pt."
    add_dataclass_arguments(
        p,
        TrainConfig,
        exclude=("progress",),
        choices={
            "task": TASKS,
            "optimizer": OPTIMIZERS,
            "partition": PARTITIONS,
            "dtype": ("float32", "float64"),
            "schedule": ("cosine", "constant"),
        },
        required=("out",),
    )
    g = p.add_mutually_exclusive_group()
    g.add_argument("--progress", dest="progress", action="store_true", default=True)
    g.add_argument("--quiet", dest="progress", action="store_false", help="no progress bar")


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The :class:`TrainConfig` of parsed ``hessnorm train`` flags.

    Raises:
        ConfigError: ``--task-options`` that is not a JSON object.

    Example:
        >>> p = argparse.ArgumentParser()
        >>> configure_parser(p)
        >>> cfg = config_from_args(p.parse_args(["--out", "r", "--task-options", '{"d": 5}']))
        >>> cfg.task_options, cfg.steps, cfg.bias_correction
        ({'d': 5}, 200, True)
    """
    values = values_for(TrainConfig, args)
    raw = values.get("task_options")
    if isinstance(raw, str):
        try:
            values["task_options"] = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"--task-options must be a JSON object, got {raw!r}: {exc}") from exc
    if not isinstance(values.get("task_options", {}), dict):
        raise ConfigError(f"--task-options must be a JSON object, got {raw!r}")
    return TrainConfig(**values)


def run(args: argparse.Namespace) -> int:
    """Run ``hessnorm train`` with parsed ``args``; returns the exit code.

    Example:
        >>> import contextlib, io, pathlib, tempfile
        >>> p = argparse.ArgumentParser()
        >>> configure_parser(p)
        >>> out = tempfile.mkdtemp()
        >>> args = p.parse_args(["--task", "quadratic", "--task-options", '{"d": 20}',
        ...                      "--steps", "2", "--out", out, "--device", "cpu", "--quiet"])
        >>> with contextlib.redirect_stdout(io.StringIO()):
        ...     code = run(args)
        >>> code, (pathlib.Path(out) / "ckpt_000002.pt").is_file()
        (0, True)
    """
    result = train(config_from_args(args))
    print(
        f"done: step {result['step']}, train loss {result['train_loss']:.4f}, "
        f"eval loss {result['eval_loss']:.4f}; checkpoint {result['checkpoint']}"
    )
    print(f"wrote run folder {args.out} (config.json, metrics.csv, checkpoints)")
    return 0


def main(argv=None) -> int:
    """Stand-alone entry point: ``python -m hessnorm.train.cli ...``.

    Example:
        >>> import contextlib, io, json, pathlib, tempfile
        >>> out = tempfile.mkdtemp()
        >>> with contextlib.redirect_stdout(io.StringIO()):
        ...     code = main(["--task", "quadratic", "--task-options", '{"d": 20}', "--steps", "1",
        ...                  "--out", out, "--device", "cpu", "--quiet"])
        >>> code, json.loads((pathlib.Path(out) / "config.json").read_text())["task"]
        (0, 'quadratic')
    """
    parser = argparse.ArgumentParser(prog="hessnorm train")
    configure_parser(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
