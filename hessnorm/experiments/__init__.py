"""Paper experiments: ``hessnorm reproduce NAME`` (never imported by the library).

Modules: :mod:`~hessnorm.experiments.table1` (paper 000 Table 1, both halves),
:mod:`~hessnorm.experiments.table2` (paper 000 Table 2 and Fig. 1 on CPU-sized GPTs),
:mod:`~hessnorm.experiments.resnet` (paper 000 Tables 3-4 and Fig. 2),
:mod:`~hessnorm.experiments.gpt` (tiny GPT optimizer comparison),
:mod:`~hessnorm.experiments.paper003` (paper 003's (L0, L1) experiments) and
:mod:`~hessnorm.experiments.demo` (``hessnorm demo``).

Each entry is ``"module:function"``; the function takes
``(out_dir: pathlib.Path, quick: bool, seed: int, progress: bool)`` and writes its
tables and figures under ``out_dir`` (default ``reports/NAME``). Experiments listed in
``SCALED`` also take ``scale=`` (``cpu`` or ``paper``) and ``data_dir=``.
"""

from __future__ import annotations

import argparse
import importlib
import pathlib

from hessnorm.errors import ConfigError

EXPERIMENTS: dict[str, tuple[str, str]] = {
    "table1": (
        "hessnorm.experiments.table1:reproduce_table1",
        "paper 000 Table 1, loss columns: Adam vs AdaSGD on rotated quadratics",
    ),
    "table1-l11": (
        "hessnorm.experiments.table1:reproduce_l11",
        "paper 000 Table 1, (1,1)-norm/d column, exact and by Cauchy medians",
    ),
    "gpt": (
        "hessnorm.experiments.gpt:reproduce_gpt",
        "tiny GPT: Adam vs AdaSGD vs rotated Adam vs SGD (paper 000 Fig. 1 ordering)",
    ),
    "l0l1": (
        "hessnorm.experiments.paper003:reproduce",
        "paper 003: Shi et al. problem vs beta2, and (S)GD divergence vs Adam",
    ),
    "table2": (
        "hessnorm.experiments.table2:reproduce",
        "paper 000 Table 2 + Fig. 1: GPT norms and losses (CPU sizes; --scale paper)",
    ),
    "resnet": (
        "hessnorm.experiments.resnet:reproduce",
        "paper 000 Tables 3-4 + Fig. 2: ResNet x batch size (digits; --data-dir CIFAR-10)",
    ),
    "adam-edge": (
        "hessnorm.experiments.adam_edge:reproduce",
        "Adam's preconditioned sharpness vs 38/eta, and the l-inf bracket (tiny GPT)",
    ),
}
# experiments that accept scale= and data_dir=
SCALED = ("table2", "resnet")


def resolve(name: str):
    """The function of experiment ``name`` (imported only now).

    Example:
        >>> resolve("table1").__name__
        'reproduce_table1'
    """
    if name not in EXPERIMENTS:
        raise ConfigError(f"unknown experiment {name!r}; choose from {sorted(EXPERIMENTS)}")
    target = EXPERIMENTS[name][0]
    module, func = target.split(":")
    return getattr(importlib.import_module(module), func)


def configure_parser(p: argparse.ArgumentParser) -> None:
    """Add the ``reproduce`` options to ``p`` (the experiment names are listed in its help).

    Example:
        >>> p = argparse.ArgumentParser()
        >>> configure_parser(p)
        >>> args = p.parse_args(["table2", "--quick", "--scale", "cpu"])
        >>> args.name, args.quick, args.out, args.seed
        ('table2', True, None, 0)
    """
    lines = "\n".join(f"  {k:<11} {v[1]}" for k, v in EXPERIMENTS.items())
    p.description = "Reproduce a paper experiment into reports/NAME.\n\n" + lines
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.add_argument("name", choices=sorted(EXPERIMENTS), help="which experiment")
    p.add_argument(
        "--out", type=pathlib.Path, default=None, help="output folder (default reports/NAME)"
    )
    p.add_argument("--quick", action="store_true", help="a small, fast version (for smoke tests)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument(
        "--scale",
        choices=("cpu", "paper"),
        default="cpu",
        help=f"{'/'.join(SCALED)} only: CPU-sized runs (default) or the paper's sizes (GPU)",
    )
    p.add_argument(
        "--data-dir",
        default=None,
        help=f"{'/'.join(SCALED)} only: nanoGPT .bin folder or CIFAR-10 folder",
    )


def run(args: argparse.Namespace) -> int:
    """Run ``hessnorm reproduce NAME`` with parsed ``args``; writes under ``--out``.

    Example:
        Even the ``--quick`` experiments take seconds (tests/test_cli.py runs them);
        here the cheapest call, which stops at the option check:

        >>> import tempfile
        >>> p = argparse.ArgumentParser()
        >>> configure_parser(p)
        >>> run(p.parse_args(["table1", "--out", tempfile.mkdtemp(), "--scale", "paper"]))
        Traceback (most recent call last):
        ...
        hessnorm.errors.ConfigError: --scale and --data-dir apply only to table2, resnet
    """
    fn = resolve(args.name)
    out = args.out or pathlib.Path("reports") / args.name
    out.mkdir(parents=True, exist_ok=True)
    scaled = {}
    if args.name in SCALED:
        scaled = {"scale": args.scale, "data_dir": args.data_dir}
    elif args.scale != "cpu" or args.data_dir is not None:
        raise ConfigError(f"--scale and --data-dir apply only to {', '.join(SCALED)}")
    fn(out, args.quick, args.seed, not args.quiet, **scaled)
    print(f"wrote {out}/")
    return 0
