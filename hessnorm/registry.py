"""The estimator registry: one registration per estimator, everything else read from it.

An estimator is a plain function registered with :func:`register_estimator`::

    @register_estimator("spectral", metric="H(L, Φ_AdaSGD)", bound="d‖H‖₂", per_dim="value")
    def spectral(op, *, seed: int = 0, progress: bool = False, tol: float = 1e-4) -> Estimate:
        '''‖H‖₂ by Lanczos.

        Args:
            tol: relative interval width at which Lanczos stops.
        '''

Its keyword-only parameters other than ``seed``, ``progress`` and ``context`` are its
**options**: each option's type hint, default and ``Args:`` line become the
``hessnorm analyze`` flag (``--tol``) and its help, ``analyze(..., tol=...)`` is
validated against them, and ``hvp_cost(options, d)`` (when given) gives the ETA printed
before a run. The registry's order, labels and per-dimension rule are what the results
table and the report read; neither knows any estimator by name.

Names:

* ``NAME`` runs the estimator on the operator.
* ``rotated-NAME`` runs it on the rotated loss L∘R (operator ``op.rotated(R)`` for the
  ``rotation`` setting of analyze); every estimator has this form.
* ``NAME:ARG`` for an estimator registered with ``argument="option"``: the text after
  the colon is that option (``blockwise:by_tensor`` is ``blockwise`` with
  ``partition="by_tensor"``).

Built-in estimators register in their own modules (:data:`BUILTIN_MODULES`); installed
packages add theirs through the entry-point group ``hessnorm.estimators`` (each entry
point names a module, imported once, whose decorators register). This module imports
no torch.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import math
import re
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from hessnorm.cliutil import docstring_args, plain_text
from hessnorm.errors import ConfigError

__all__ = [
    "ENTRY_POINT_GROUP",
    "BUILTIN_MODULES",
    "Option",
    "EstimatorSpec",
    "Selection",
    "register_estimator",
    "estimators",
    "get_estimator",
    "parse_estimators",
    "estimator_options",
    "split_options",
    "describe",
]

ENTRY_POINT_GROUP = "hessnorm.estimators"
# modules whose decorators register the built-in estimators, in the registry's order
BUILTIN_MODULES = (
    "hessnorm.estimators.lanczos",
    "hessnorm.estimators.cauchy",
    "hessnorm.estimators.blockwise",
    "hessnorm.estimators.trace",
    "hessnorm.estimators.density",
    "hessnorm.estimators.diagonal",
    "hessnorm.estimators.preconditioned",
    "hessnorm.estimators.linf",
)
# keyword-only parameters every estimator may take that are not options
RESERVED = ("seed", "progress", "context")
FAMILIES = ("smoothness", "spectrum", "other")
ROTATED_PREFIX = "rotated-"


@dataclasses.dataclass(frozen=True)
class Option:
    """One option of an estimator: a keyword-only parameter of its function.

    Attributes:
        name: the parameter name (``n_cauchy``); the CLI flag is :attr:`flag`.
        type: ``int``, ``float``, ``str`` or ``bool`` (from the type hint).
        default: the parameter's default.
        help: the parameter's ``Args:`` line in the function's docstring.
        choices: the allowed values (from a ``Literal[...]`` hint), or ``()`` for any.

    Example:
        >>> o = Option("n_cauchy", int, 50, "Cauchy probes")
        >>> o.flag, o.convert("60"), o.convert(60.0)
        ('--n-cauchy', 60, 60)
    """

    name: str
    type: type
    default: Any
    help: str = ""
    choices: tuple = ()

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def convert(self, value: Any) -> Any:
        """``value`` (a Python value or CLI text) as this option's type.

        Raises:
            ConfigError: a value that is not of the option's type.
        """
        if value is None:
            return None
        try:
            if self.type is bool:
                if isinstance(value, str):
                    low = value.strip().lower()
                    if low not in ("1", "0", "true", "false", "yes", "no"):
                        raise ValueError(value)
                    return low in ("1", "true", "yes")
                return bool(value)
            if self.type is int:
                if isinstance(value, float) and not value.is_integer():
                    raise ValueError(value)
                out = int(value)
            elif self.type is float:
                out = float(value)
            else:
                out = self.type(value)
        except (TypeError, ValueError):
            raise ConfigError(
                f"option {self.name} ({self.flag}) takes a {self.type.__name__}, got {value!r}"
            ) from None
        if self.choices and out not in self.choices:
            raise ConfigError(
                f"option {self.name} ({self.flag}) must be one of "
                f"{', '.join(map(str, self.choices))}; got {value!r}"
            )
        return out


@dataclasses.dataclass(frozen=True)
class EstimatorSpec:
    """A registered estimator and everything derived from it.

    Attributes:
        name: the base name (``l11``); see the module docstring for ``rotated-`` and ``:``.
        fn: ``fn(op, *, seed, progress, [context], **options) -> Estimate``.
        metric: the quantity H(L, Φ) (or other) whose estimate the rows report.
        bound: the reported quantity as a formula of H (``‖H‖₁,₁``).
        metric_rotated, bound_rotated: the same labels on the rotated loss L∘R.
        description: the first line of ``fn``'s docstring.
        options: the function's options (:class:`Option`), in signature order.
        hvp_cost: ``hvp_cost(options, d) -> int`` (HVPs a call will spend), or None.
        family: ``"smoothness"`` (a surrogate of H(L, Φ): the report's norms table),
            ``"spectrum"`` (describes H: its spectrum section) or ``"other"``.
        per_dim: ``"d"`` (``bound_per_dim`` = value / d), ``"value"`` (the bound is d
            times the value, so per dimension it is the value: ``d‖H‖₂``) or
            ``"ratio"`` (a dimensionless value, its own per-dimension value).
        argument: the option set by ``NAME:ARG`` (None: no such form).
        columns: extra result columns the estimator fills from its ``details``.
        takes_context: ``fn`` takes ``context`` (what analyze knows of the checkpoint).

    Example:
        >>> spec = get_estimator("l11")
        >>> spec.metric, spec.family, spec.option_names, spec.resolve({"n_cauchy": "20"})
        ('H(L, Φ_Adam)', 'smoothness', ('n_cauchy',), {'n_cauchy': 20})
    """

    name: str
    fn: Callable[..., Any]
    metric: str
    bound: str
    metric_rotated: str
    bound_rotated: str
    description: str
    options: tuple[Option, ...]
    hvp_cost: Callable[[Mapping[str, Any], int], int] | None = None
    family: str = "smoothness"
    per_dim: str = "d"
    argument: str | None = None
    columns: tuple[str, ...] = ()
    takes_context: bool = False

    @property
    def option_names(self) -> tuple[str, ...]:
        return tuple(o.name for o in self.options)

    def defaults(self) -> dict[str, Any]:
        return {o.name: o.default for o in self.options}

    def resolve(self, options: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The full option dict: defaults overridden by ``options`` (converted).

        Raises:
            ConfigError: an option this estimator does not take, or a bad value.
        """
        options = dict(options or {})
        bad = [k for k in options if k not in self.option_names]
        if bad:
            raise ConfigError(
                f"estimator {self.name} takes no option {', '.join(bad)}; its options: "
                f"{', '.join(self.option_names) or 'none'}"
            )
        by_name = {o.name: o for o in self.options}
        out = self.defaults()
        for k, v in options.items():
            if v is not None:
                out[k] = by_name[k].convert(v)
        return out

    def cost(self, options: Mapping[str, Any], d: int) -> int | None:
        """HVPs one call will spend (``hvp_cost``), or None when the estimator gives none."""
        if self.hvp_cost is None:
            return None
        return int(self.hvp_cost(self.resolve(options), int(d)))

    def run(
        self,
        op,
        options: Mapping[str, Any] | None = None,
        *,
        seed: int = 0,
        progress: bool = False,
        context: Any = None,
    ):
        """Call the estimator on ``op`` with its options resolved; returns its Estimate."""
        kwargs = self.resolve(options)
        if self.takes_context:
            kwargs["context"] = context
        return self.fn(op, seed=seed, progress=progress, **kwargs)

    def labels(self, rotated: bool, options: Mapping[str, Any] | None = None) -> tuple[str, str]:
        """``(metric, bound)`` for the loss itself or for the rotated loss L∘R.

        ``{option}`` fields in the labels are filled from ``options`` (defaults otherwise):
        ``"H(L, Φ_{partition})"`` reads ``H(L, Φ_by_row)`` for ``blockwise:by_row``.
        """
        pair = (self.metric_rotated, self.bound_rotated) if rotated else (self.metric, self.bound)
        values = {**self.defaults(), **dict(options or {})}
        return tuple(_fill(x, values) for x in pair)  # type: ignore[return-value]

    def bound_per_dim(self, value: float, d: int) -> float:
        """The reported quantity divided by d, by the :attr:`per_dim` rule.

        Example:
            >>> get_estimator("spectral").bound_per_dim(2.0, 10), get_estimator("l11").bound_per_dim(2.0, 10)
            (2.0, 0.2)
        """
        if self.per_dim in ("value", "ratio"):
            return value
        return value / d if d else math.nan

    def per_dim_label(self, rotated: bool = False, options: Mapping[str, Any] | None = None) -> str:
        """Axis label of ``bound_per_dim``: ``‖H‖₂`` for ``d‖H‖₂``, else ``"<bound> / d"``."""
        bound = self.labels(rotated, options)[1]
        if self.per_dim == "ratio":
            return bound
        if self.per_dim == "value":
            return bound[1:] if bound.startswith("d") else bound
        return f"{bound} / d"


@dataclasses.dataclass(frozen=True)
class Selection:
    """One name of an ``--estimators`` list, resolved against the registry.

    Attributes:
        label: the name as given (the rows' ``estimator`` column), e.g. ``rotated-l11``.
        spec: the registered estimator.
        rotated: the name asks for the rotated loss L∘R (``rotated-`` prefix).
        fixed: options fixed by the name (``blockwise:by_row`` -> ``{"partition": "by_row"}``).

    Example:
        >>> (sel,) = parse_estimators(["rotated-spectral"])
        >>> sel.spec.name, sel.rotated, sel.labels()
        ('spectral', True, ('H(L∘R, Φ_AdaSGD)', 'd‖RᵀHR‖₂'))
    """

    label: str
    spec: EstimatorSpec
    rotated: bool = False
    fixed: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def resolve(self, options: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The estimator's options: defaults, then ``options``, then those the name fixes."""
        return self.spec.resolve({**dict(options or {}), **self.fixed})

    def labels(self, rotated_run: bool = False) -> tuple[str, str]:
        """``(metric, bound)`` of this selection's rows; ``rotated_run``: the operator is
        already the rotated one (a rotated-Adam run analysed in its own coordinates)."""
        return self.spec.labels(self.rotated or rotated_run, self.fixed)


_REGISTRY: dict[str, EstimatorSpec] = {}
_ORDER: dict[str, int] = {}  # name -> registration index
_LOADED = False


def _fill(label: str, values: Mapping[str, Any]) -> str:
    """``label`` with ``{name}`` fields replaced from ``values`` (unknown fields kept)."""

    def sub(m: re.Match) -> str:
        return str(values[m.group(1)]) if m.group(1) in values else m.group(0)

    return re.sub(r"\{([A-Za-z_][A-Za-z0-9_]*)\}", sub, label)


def _option_type(annotation: Any, default: Any, where: str) -> tuple[type, tuple]:
    if typing.get_origin(annotation) is typing.Literal:
        choices = typing.get_args(annotation)
        kinds = {type(c) for c in choices}
        if len(kinds) == 1 and kinds <= {int, float, str, bool}:
            return kinds.pop(), tuple(choices)
    if isinstance(annotation, str):
        annotation = {"int": int, "float": float, "str": str, "bool": bool}.get(
            annotation.replace(" ", "").split("|")[0], annotation
        )
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        annotation = args[0] if len(args) == 1 else annotation
    if annotation in (int, float, str, bool):
        return annotation, ()
    if annotation is inspect.Parameter.empty and isinstance(default, (int, float, str, bool)):
        return type(default), ()
    raise ConfigError(
        f"{where}: options must be int, float, str or bool (type hint or default), got "
        f"{annotation!r}"
    )


def _options_of(fn: Callable, name: str) -> tuple[tuple[Option, ...], bool]:
    sig = inspect.signature(fn)
    params = list(sig.parameters.values())
    if not params or params[0].kind not in (
        inspect.Parameter.POSITIONAL_ONLY,
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
    ):
        raise ConfigError(f"estimator {name}: the function's first parameter must be the operator")
    helps = docstring_args(fn.__doc__ or "", sections=("Args", "Arguments", "Options"))
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # unresolvable string annotations: fall back to the raw ones
        hints = {}
    opts, takes_context = [], False
    for p in params[1:]:
        if p.kind is not inspect.Parameter.KEYWORD_ONLY:
            raise ConfigError(
                f"estimator {name}: parameter {p.name!r} must be keyword-only (after `*`)"
            )
        if p.name == "context":
            takes_context = True
            continue
        if p.name in RESERVED:
            continue
        if p.default is inspect.Parameter.empty:
            raise ConfigError(f"estimator {name}: option {p.name!r} needs a default")
        kind, choices = _option_type(
            hints.get(p.name, p.annotation), p.default, f"estimator {name}, option {p.name}"
        )
        opts.append(Option(p.name, kind, p.default, helps.get(p.name, ""), choices))
    missing = [r for r in ("seed", "progress") if r not in sig.parameters]
    if missing:
        raise ConfigError(
            f"estimator {name}: the function must take keyword-only {' and '.join(missing)}"
        )
    return tuple(opts), takes_context


def register_estimator(
    name: str,
    *,
    metric: str,
    bound: str | None = None,
    hvp_cost: Callable[[Mapping[str, Any], int], int] | None = None,
    family: str = "smoothness",
    per_dim: str = "d",
    metric_rotated: str | None = None,
    bound_rotated: str | None = None,
    argument: str | None = None,
    columns: Iterable[str] = (),
) -> Callable[[Callable], Callable]:
    """Register ``fn(op, *, seed=0, progress=False, **options) -> Estimate`` under ``name``.

    Used as a decorator; returns the function unchanged.

    Args:
        name: what ``--estimators`` accepts (lower case, digits, ``-``, ``_``).
        metric: the quantity the rows report (``H(L, Φ_Adam)``, ``tr(H)``).
        bound: the value as a formula of H (default: ``metric``).
        hvp_cost: ``(options, d) -> HVPs`` of one call (an ETA before a run).
        family: ``"smoothness"``, ``"spectrum"`` or ``"other"`` (report section).
        per_dim: ``"d"``, ``"value"`` or ``"ratio"`` (see :class:`EstimatorSpec`).
        metric_rotated, bound_rotated: labels on the rotated loss (default: derived).
        argument: the option that ``NAME:ARG`` sets.
        columns: extra result columns, filled from ``details`` keys of the same name.

    Raises:
        ConfigError: a bad name, a second registration of a name by another function, or
            a function that does not follow the contract.

    Example:
        >>> from hessnorm.estimate import Estimate
        >>> @register_estimator("doc-diag-sum", metric="Σᵢ Hᵢᵢ (doctest)", family="other")
        ... def diag_sum(op, *, seed: int = 0, progress: bool = False, scale: float = 1.0):
        ...     '''Σᵢ Hᵢᵢ of a dense matrix, times ``scale``.
        ...
        ...     Args:
        ...         scale: factor applied to the sum.
        ...     '''
        ...     v = scale * float(op.diagonal().sum())
        ...     return Estimate("diag_sum", v, v, v, 1.0, n_hvp=0, seconds=0.0, d=op.shape[0])
        >>> spec = get_estimator("doc-diag-sum")
        >>> spec.options
        (Option(name='scale', type=<class 'float'>, default=1.0, help='factor applied to the sum.', choices=()),)
        >>> import torch
        >>> spec.run(torch.eye(3), {"scale": 2}).value
        6.0
        >>> _ = _REGISTRY.pop("doc-diag-sum")
    """
    if not re.fullmatch(r"[a-z][a-z0-9_-]*", name) or name.startswith(ROTATED_PREFIX):
        raise ConfigError(
            f"estimator name {name!r}: use lower-case letters, digits, '-' or '_', not starting "
            f"with {ROTATED_PREFIX!r} (that prefix asks for the rotated loss)"
        )
    if family not in FAMILIES:
        raise ConfigError(f"estimator {name}: family must be one of {FAMILIES}, got {family!r}")
    if per_dim not in ("d", "value", "ratio"):
        raise ConfigError(f"estimator {name}: per_dim must be 'd', 'value' or 'ratio'")

    def decorate(fn: Callable) -> Callable:
        options, takes_context = _options_of(fn, name)
        if argument is not None and argument not in {o.name for o in options}:
            raise ConfigError(f"estimator {name}: argument={argument!r} is not one of its options")
        b = bound or metric
        spec = EstimatorSpec(
            name=name,
            fn=fn,
            metric=metric,
            bound=b,
            metric_rotated=metric_rotated or f"{metric} of L∘R",
            bound_rotated=bound_rotated or f"{b} for RᵀHR",
            description=inspect.cleandoc(fn.__doc__ or "").split("\n", 1)[0].strip(),
            options=options,
            hvp_cost=hvp_cost,
            family=family,
            per_dim=per_dim,
            argument=argument,
            columns=tuple(columns),
            takes_context=takes_context,
        )
        old = _REGISTRY.get(name)
        if old is not None and (old.fn.__module__, old.fn.__qualname__) != (
            fn.__module__,
            fn.__qualname__,
        ):
            raise ConfigError(
                f"estimator {name!r} is already registered by {old.fn.__module__}."
                f"{old.fn.__qualname__}; choose another name"
            )
        _REGISTRY[name] = spec
        _ORDER.setdefault(name, len(_ORDER))
        return fn

    return decorate


def _load() -> None:
    global _LOADED
    if _LOADED:
        return
    _LOADED = True
    for module in BUILTIN_MODULES:
        importlib.import_module(module)
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            ep.load()
        except Exception as exc:  # a broken plug-in must not take the built-ins down
            import warnings

            warnings.warn(
                f"hessnorm: estimator plug-in {ep.name!r} ({ep.value}) failed to load: {exc}",
                stacklevel=2,
            )


def estimators() -> dict[str, EstimatorSpec]:
    """Every registered estimator, built-ins first (their modules' order), then plug-ins.

    Example:
        >>> list(estimators())[:3]
        ['spectral', 'l11', 'blockwise']
    """
    _load()

    def rank(item):
        module = item[1].fn.__module__
        i = BUILTIN_MODULES.index(module) if module in BUILTIN_MODULES else len(BUILTIN_MODULES)
        return i, _ORDER[item[0]]

    return dict(sorted(_REGISTRY.items(), key=rank))


def get_estimator(name: str) -> EstimatorSpec:
    """The registered estimator ``name`` (a base name, no prefix or argument).

    Raises:
        ConfigError: no such estimator.

    Example:
        >>> get_estimator("trace").family
        'spectrum'
    """
    specs = estimators()
    if name not in specs:
        raise ConfigError(f"unknown estimator {name!r}; choose from {', '.join(specs)}")
    return specs[name]


def _select(label: str) -> Selection:
    specs = estimators()
    base, rotated = label, False
    if base.startswith(ROTATED_PREFIX):
        base, rotated = base[len(ROTATED_PREFIX) :], True
    base, _, arg = base.partition(":")
    spec = specs.get(base)
    if spec is None:
        raise ConfigError(
            f"unknown estimator {label!r}; choose from {', '.join(names())} "
            f"(any of them as {ROTATED_PREFIX}NAME for the rotated loss; `hessnorm estimators` "
            "lists them)"
        )
    if arg and spec.argument is None:
        raise ConfigError(f"estimator {base} takes no ':' argument (got {label!r})")
    if spec.argument is not None and not arg:
        raise ConfigError(
            f"estimator {base} needs its {spec.argument} after a colon, e.g. {base}:"
            f"{spec.defaults()[spec.argument]}"
        )
    fixed = {spec.argument: arg} if arg else {}
    spec.resolve(fixed)  # a bad argument fails here, before any work
    return Selection(label, spec, rotated, fixed)


def parse_estimators(estimators_: str | Iterable[str]) -> list[Selection]:
    """Resolve a list or comma-separated string of estimator names.

    Raises:
        ConfigError: an unknown name, a repeated one, or none at all.

    Example:
        >>> [(s.label, s.spec.name, s.rotated, dict(s.fixed))
        ...  for s in parse_estimators("spectral, rotated-l11, blockwise:by_row")]
        [('spectral', 'spectral', False, {}), ('rotated-l11', 'l11', True, {}), ('blockwise:by_row', 'blockwise', False, {'partition': 'by_row'})]
    """
    items = estimators_.split(",") if isinstance(estimators_, str) else list(estimators_)
    labels = [str(e).strip() for e in items if str(e).strip()]
    if not labels:
        raise ConfigError(f"no estimator named; choose from {', '.join(names())}")
    dup = sorted({x for x in labels if labels.count(x) > 1})
    if dup:
        raise ConfigError(f"estimator(s) named twice: {', '.join(dup)}")
    return [_select(x) for x in labels]


def names() -> list[str]:
    """The accepted names in registry order (``blockwise:PARTITION`` for argument forms).

    Example:
        >>> names()[:3]
        ['spectral', 'l11', 'blockwise:PARTITION']
    """
    return [
        f"{s.name}:{s.argument.upper()}" if s.argument else s.name for s in estimators().values()
    ]


def estimator_options() -> dict[str, Option]:
    """Every option name any registered estimator takes -> its :class:`Option`.

    Estimators sharing an option name share its flag (``--n-cauchy`` sets it for each
    estimator that takes it); the returned Option's ``default`` is that of the first
    estimator declaring it.

    Raises:
        ConfigError: two estimators declare one option name with different types.

    Example:
        >>> opts = estimator_options()
        >>> opts["n_cauchy"].flag, opts["n_cauchy"].default, opts["tol"].type
        ('--n-cauchy', 50, <class 'float'>)
    """
    out: dict[str, Option] = {}
    owner: dict[str, str] = {}
    for spec in estimators().values():
        for o in spec.options:
            if o.name in out and out[o.name].type is not o.type:
                raise ConfigError(
                    f"option {o.name} is a {out[o.name].type.__name__} for estimator "
                    f"{owner[o.name]} but a {o.type.__name__} for {spec.name}; rename one"
                )
            out.setdefault(o.name, o)
            owner.setdefault(o.name, spec.name)
    return out


def split_options(
    selections: Iterable[Selection], options: Mapping[str, Any] | None
) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Per-selection option dicts from one mapping, and the names no selection takes.

    A key ``"option"`` applies to every selected estimator taking that option; a key
    ``"label.option"`` (``"l11.n_cauchy"``) to that estimator only. ``None`` values mean
    "the estimator's default".

    Raises:
        ConfigError: a key no registered estimator takes (a typo), or a bad value.

    Example:
        >>> sel = parse_estimators("spectral,l11")
        >>> per, unused = split_options(sel, {"n_cauchy": 20, "spectral.tol": 1e-3})
        >>> per["l11"]["n_cauchy"], per["spectral"]["tol"], unused
        (20, 0.001, [])
    """
    selections = list(selections)
    options = {k: v for k, v in dict(options or {}).items()}
    known = estimator_options()
    labels = {s.label for s in selections}
    per: dict[str, dict[str, Any]] = {}
    used: set[str] = set()
    for k in options:
        label, _, opt = k.rpartition(".")
        if label and label not in labels:
            raise ConfigError(f"option {k}: {label} is not among the selected estimators")
        if opt not in known:
            raise ConfigError(
                f"unknown option {k!r}; options of the registered estimators: "
                f"{', '.join(sorted(known)) or 'none'}"
            )
    for s in selections:
        mine = {}
        for k, v in options.items():
            label, _, opt = k.rpartition(".")
            if (not label or label == s.label) and opt in s.spec.option_names:
                if v is not None:
                    mine[opt] = v
                used.add(k)
        per[s.label] = s.resolve(mine)
    unused = [k for k, v in options.items() if k not in used and v is not None]
    return per, unused


def describe() -> list[str]:
    """One line per registered estimator: name, family, metric, cost, description.

    This is what ``hessnorm estimators`` prints.

    Example:
        >>> describe()[0].split()[:2]
        ['spectral', '[smoothness]']
    """
    lines = []
    specs = estimators()
    width = max(len(n) for n in names()) if specs else 0
    for n, spec in zip(names(), specs.values()):
        cost = "cost set by the model's blocks"
        if spec.hvp_cost is not None:
            try:
                cost = f"{spec.cost({}, 10**6)} HVPs at d=1e6 (defaults)"
            except Exception:
                cost = "cost: depends on the model"
        opts = ", ".join(f"{o.flag} {o.default}" for o in spec.options if o.name != spec.argument)
        lines.append(
            f"{n:<{width}}  [{spec.family}] {spec.metric} = {spec.bound}; {cost}; "
            f"{plain_text(spec.description)}" + (f" (options: {opts})" if opts else "")
        )
    return lines


def configure_parser(p) -> None:
    """``hessnorm estimators``: no options.

    Example:
        >>> import argparse
        >>> p = argparse.ArgumentParser()
        >>> configure_parser(p)
        >>> p.parse_args([])
        Namespace()
    """
    p.description = (
        "List the registered estimators (built-in and installed plug-ins of the entry-point "
        f"group {ENTRY_POINT_GROUP}): name, family, what it reports, HVP cost, description."
    )


def run(args) -> int:
    """Print :func:`describe`, one line per estimator; returns 0.

    Example:
        >>> import contextlib, io
        >>> with contextlib.redirect_stdout(io.StringIO()) as out:
        ...     code = run(None)
        >>> code, out.getvalue().startswith("spectral")
        (0, True)
    """
    for line in describe():
        print(line)
    print(
        f"any NAME as {ROTATED_PREFIX}NAME runs it on the rotated loss L∘R (analyze --rotation); "
        "options are `hessnorm analyze` flags"
    )
    return 0
