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

from hessnorm.optim.factory import OPTIMIZERS
from hessnorm.partition import PARTITIONS
from hessnorm.train.loop import TrainConfig, train
from hessnorm.train.tasks import TASKS

__all__ = ["configure_parser", "run", "main"]


def configure_parser(p: argparse.ArgumentParser) -> None:
    """Add the ``train`` options to ``p``.

    Example:
        >>> p = argparse.ArgumentParser()
        >>> configure_parser(p)
        >>> args = p.parse_args(["--out", "runs/a", "--optimizer", "signgd", "--steps", "7"])
        >>> args.task, args.optimizer, args.steps, args.progress
        ('gpt', 'signgd', 7, True)
    """
    p.description = "Train a reference model; writes config.json, metrics.csv, ckpt_*.pt."
    p.add_argument("--task", choices=TASKS, default="gpt")
    p.add_argument("--optimizer", choices=OPTIMIZERS, default="adam")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--lr", type=float, default=None, help="peak learning rate (task default)")
    p.add_argument("--out", required=True, help="run folder")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    p.add_argument("--ckpt-every", type=int, default=0, help="0: only the final checkpoint")
    p.add_argument("--eval-every", type=int, default=0, help="0: every steps/10")
    p.add_argument("--beta1", type=float, default=None)
    p.add_argument("--beta2", type=float, default=None)
    p.add_argument("--eps", type=float, default=1e-8)
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--partition", choices=PARTITIONS, default="by_tensor")
    p.add_argument("--rotation", default="randperm:depth=2,seed=0")
    p.add_argument("--record-smoothness-every", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--schedule", choices=("cosine", "constant"), default=None)
    p.add_argument("--warmup", type=int, default=None)
    p.add_argument("--eval-examples", type=int, default=None)
    p.add_argument("--data-dir", default=None, help="nanoGPT data folder or CIFAR-10 folder")
    p.add_argument("--task-options", default="{}", help="JSON, e.g. '{\"n_layer\": 4}'")
    p.add_argument("--no-bias-correction", action="store_true", help="paper Alg. 1-3 as written")
    p.add_argument("--eps-inside", action="store_true", help="sqrt(v + eps) as in the paper")
    p.add_argument("--v0", type=float, default=0.0)
    p.add_argument("--compile", action="store_true", help="torch.compile on CUDA")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--progress", dest="progress", action="store_true", default=True)
    g.add_argument("--quiet", dest="progress", action="store_false")


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
    cfg = TrainConfig(
        task=args.task,
        optimizer=args.optimizer,
        steps=args.steps,
        lr=args.lr,
        out=args.out,
        device=args.device,
        seed=args.seed,
        resume=args.resume,
        dtype=args.dtype,
        ckpt_every=args.ckpt_every,
        eval_every=args.eval_every,
        beta1=args.beta1,
        beta2=args.beta2,
        eps=args.eps,
        weight_decay=args.weight_decay,
        partition=args.partition,
        rotation=args.rotation,
        record_smoothness_every=args.record_smoothness_every,
        progress=args.progress,
        batch_size=args.batch_size,
        schedule=args.schedule,
        warmup=args.warmup,
        eval_examples=args.eval_examples,
        data_dir=args.data_dir,
        task_options=json.loads(args.task_options),
        bias_correction=not args.no_bias_correction,
        eps_inside=args.eps_inside,
        v0=args.v0,
        compile=args.compile,
    )
    result = train(cfg)
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
