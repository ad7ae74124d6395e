"""Command-line flags derived from typed settings: dataclass fields and estimator options.

One rule for every command: a field ``eval_resamples: int = 0`` is the flag
``--eval-resamples`` (type ``int``, default 0), its help the field's ``help`` metadata or
its line in the class docstring's ``Attributes:`` section; ``bool`` fields are switches
(``--resume``, or ``--no-bias-correction`` for a field that defaults to True). Imports no
torch.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import re
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["docstring_args", "plain_text", "flag_name", "add_dataclass_arguments", "values_for"]


def docstring_args(doc: str | None, sections: Iterable[str] = ("Args", "Attributes")) -> dict:
    """``name -> description`` (continuation lines joined) from Google-style docstring sections.

    Example:
        >>> docstring_args('''Thing.
        ...
        ... Attributes:
        ...     steps: optimizer steps.
        ...     lr (float): peak learning rate;
        ...         None: the task's default.
        ... ''')
        {'steps': 'optimizer steps.', 'lr': "peak learning rate; None: the task's default."}
    """
    out: dict[str, str] = {}
    heads = "|".join(map(re.escape, sections))
    inside, indent, last = False, None, None
    for line in inspect.cleandoc(doc or "").splitlines():
        if re.fullmatch(rf"({heads}):\s*", line):
            inside, indent, last = True, None, None
            continue
        if not inside:
            continue
        if line and not line[0].isspace():
            inside = False
            continue
        m = re.match(
            r"^(\s+)([A-Za-z_][A-Za-z0-9_]*(?:,\s*[A-Za-z_][A-Za-z0-9_]*)*)(\s*\([^)]*\))?:\s*(.*)$",
            line,
        )
        if m and (indent is None or len(m.group(1)) == indent):
            indent = len(m.group(1))
            names = [n.strip() for n in m.group(2).split(",")]
            for n in names:
                out[n] = m.group(4).strip()
            last = names
        elif line.strip() and last:
            for n in last:
                out[n] = (out[n] + " " + line.strip()).strip()
    return out


def plain_text(text: str) -> str:
    """Docstring markup removed for terminal help: ``:func:`~a.b``` -> ``b``, no double backquotes.

    Example:
        >>> plain_text("see :func:`~hessnorm.load` and ``data``")
        'see load and data'
    """
    text = re.sub(r":[a-z]+:`~[^`]*?([^.`]+)`", r"\1", text)
    text = re.sub(r":[a-z]+:`([^`]+)`", r"\1", text)
    return text.replace("``", "")


def flag_name(field: str) -> str:
    """``eval_resamples`` -> ``--eval-resamples``.

    Example:
        >>> flag_name("eval_resamples")
        '--eval-resamples'
    """
    return "--" + field.replace("_", "-")


def _base_type(hint: Any) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return args[0] if len(args) == 1 else str
    return hint


def add_dataclass_arguments(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    cls: type,
    *,
    exclude: Iterable[str] = (),
    flags: Mapping[str, str] | None = None,
    choices: Mapping[str, Iterable[Any]] | None = None,
    helps: Mapping[str, str] | None = None,
    required: Iterable[str] = (),
) -> list[str]:
    """Add one flag per field of the dataclass ``cls``; returns the field names added.

    Args:
        parser: the parser (or argument group) to extend.
        cls: the settings dataclass; defaults are read from it, never restated.
        exclude: fields that get no flag.
        flags: field -> flag name, where it is not :func:`flag_name` of the field.
        choices: field -> allowed values.
        helps: field -> help, overriding the docstring / metadata.
        required: fields whose flag must be given.

    Example:
        >>> @dataclasses.dataclass
        ... class C:
        ...     '''Attributes:
        ...         steps: optimizer steps.
        ...         fast: skip checks.
        ...     '''
        ...     steps: int = 3
        ...     fast: bool = False
        >>> p = argparse.ArgumentParser()
        >>> add_dataclass_arguments(p, C)
        ['steps', 'fast']
        >>> a = p.parse_args(["--steps", "5", "--fast"])
        >>> values_for(C, a)
        {'steps': 5, 'fast': True}
    """
    flags, choices, helps = dict(flags or {}), dict(choices or {}), dict(helps or {})
    documented = docstring_args(cls.__doc__)
    hints = typing.get_type_hints(cls)
    added = []
    for f in dataclasses.fields(cls):
        if f.name in exclude:
            continue
        default = (
            f.default
            if f.default is not dataclasses.MISSING
            else (f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        )
        text = plain_text(helps.get(f.name) or f.metadata.get("help") or documented.get(f.name, ""))
        kind = _base_type(hints.get(f.name, str))
        flag = flags.get(f.name, flag_name(f.name))
        kw: dict[str, Any] = {"dest": f.name}
        if kind is bool:
            if default:
                flag = flags.get(f.name, "--no-" + f.name.replace("_", "-"))
                kw.update(action="store_false", default=True)
            else:
                kw.update(action="store_true", default=False)
            parser.add_argument(flag, help=text, **kw)
            added.append(f.name)
            continue
        if kind in (int, float, str):
            kw["type"] = kind
        if f.name in choices:
            kw["choices"] = tuple(choices[f.name])
        if "metavar" in f.metadata:
            kw["metavar"] = f.metadata["metavar"]
        shown = default if not isinstance(default, (dict, list)) else None
        if f.name in required:
            kw["required"] = True
        else:
            kw["default"] = default
            if shown is not None and "default" not in text:
                end = "." if text.endswith(".") else ""
                text = (
                    f"{text[: len(text) - len(end)]} (default {shown}){end}"
                    if text
                    else f"default {shown}"
                )
        parser.add_argument(flag, help=text, **kw)
        added.append(f.name)
    return added


def values_for(cls: type, args: argparse.Namespace, names: Iterable[str] | None = None) -> dict:
    """The parsed values of ``cls``'s fields present in ``args`` (or only ``names``).

    Example:
        >>> @dataclasses.dataclass
        ... class C:
        ...     a: int = 1
        ...     b: int = 2
        >>> values_for(C, argparse.Namespace(a=5, other=0)), values_for(C, argparse.Namespace(a=5, b=6), ["b"])
        ({'a': 5}, {'b': 6})
    """
    wanted = set(names) if names is not None else {f.name for f in dataclasses.fields(cls)}
    return {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(cls)
        if f.name in wanted and hasattr(args, f.name)
    }
