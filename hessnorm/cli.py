"""The ``hessnorm`` command: ``train | analyze | estimators | report | reproduce | demo``.

Each sub-command lives in its own module exposing ``configure_parser(parser)`` and
``run(args) -> int``; modules are imported only when their command runs, so
``hessnorm --help`` is instant.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from hessnorm.errors import HessnormError

COMMANDS = {
    "train": ("hessnorm.train.cli", "train a reference model with a chosen optimizer"),
    "analyze": ("hessnorm.analyze", "estimate Hessian norms of checkpoints"),
    "estimators": ("hessnorm.registry", "list the registered estimators, their options and cost"),
    "report": ("hessnorm.report", "turn runs and analysis results into tables and figures"),
    "reproduce": ("hessnorm.experiments", "reproduce a paper experiment into reports/"),
    "demo": (
        "hessnorm.experiments.demo",
        "estimate norms of a small real model and compare with exact values",
    ),
}


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    """The ``hessnorm`` parser; only the sub-command named in ``argv`` gets its options.

    The other sub-commands' modules are not imported, which keeps ``--help`` fast.

    Example:
        >>> args = build_parser(["train"]).parse_args(["train", "--out", "r", "--steps", "3"])
        >>> args.command, args.steps, args.out
        ('train', 3, 'r')
    """
    parser = argparse.ArgumentParser(
        prog="hessnorm", description="Hessian geometry of neural-network losses, with error bars."
    )
    from hessnorm import __version__

    parser.add_argument("--version", action="version", version=f"hessnorm {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    chosen = next((a for a in argv if not a.startswith("-")), None)
    for name, (module, help_) in COMMANDS.items():
        p = sub.add_parser(name, help=help_)
        if name == chosen:
            importlib.import_module(module).configure_parser(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``hessnorm COMMAND ...`` (``argv`` defaults to ``sys.argv[1:]``); the exit code.

    0 on success, 1 on a :class:`~hessnorm.errors.HessnormError` (printed without a
    traceback), 2 when no command is given (the help is printed), 130 on Ctrl-C.

    Example:
        >>> import contextlib, io, pathlib, tempfile
        >>> out = tempfile.mkdtemp()
        >>> with contextlib.redirect_stdout(io.StringIO()) as log:
        ...     code = main(["train", "--task", "quadratic", "--task-options", '{"d": 20}',
        ...                  "--steps", "2", "--out", out, "--device", "cpu", "--quiet"])
        >>> code, sorted(p.name for p in pathlib.Path(out).iterdir())
        (0, ['ckpt_000002.pt', 'config.json', 'metrics.csv'])
        >>> log.getvalue().startswith("done: step 2")
        True
        >>> with contextlib.redirect_stderr(io.StringIO()) as err:
        ...     main(["train", "--task", "quadratic", "--steps", "0", "--out", out])
        1
        >>> print(err.getvalue().strip())
        hessnorm train: error: steps must be >= 1, got 0.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    module = importlib.import_module(COMMANDS[args.command][0])
    try:
        return int(module.run(args) or 0)
    except HessnormError as exc:
        print(f"hessnorm {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
