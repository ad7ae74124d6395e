"""The estimator registry: everything analyze and report know about an estimator.

One entry per name accepted by ``hessnorm analyze --estimators``; :mod:`hessnorm.analyze`
runs them and :mod:`hessnorm.report` reads their rows, and both take every label,
rule and column list from here (nothing is re-derived from label strings).

==================== =============================================== ===================
name                  quantity                                       surrogate for
==================== =============================================== ===================
spectral              ‖H‖₂ (Lanczos)                                  Φ_AdaSGD: d‖H‖₂
l11                   ‖H‖₁,₁ (Cauchy medians, paper 000 Alg. 4)       Φ_Adam
blockwise:by_tensor   S(H, Φ) with one block per parameter tensor     Φ_tensor
blockwise:by_row      S(H, Φ) with one block per output row           Φ_row
rotated-l11           ‖RᵀHR‖₁,₁ for the ``rotation`` given            Φ_Adam on L∘R
rotated-spectral      ‖RᵀHR‖₂ (= ‖H‖₂; a consistency check)           Φ_AdaSGD on L∘R
==================== =============================================== ===================

The "bound" column names the surrogate H(L, Φ) of paper 000 (Def. 3.9, Lemma C.3):
a diagonal A with −A ⪯ H ⪯ A whose trace is the bound; it is not claimed to be the
smallest such quantity. This module imports no torch at import time.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from typing import Any

from hessnorm.errors import ConfigError

__all__ = [
    "EstimatorSpec",
    "ESTIMATORS",
    "DEFAULT_ESTIMATORS",
    "DEFAULT_ROTATION",
    "COLUMNS",
    "NUMERIC_COLUMNS",
    "parse_estimators",
    "per_dim_label",
]

DEFAULT_ESTIMATORS = ("spectral", "l11")
DEFAULT_ROTATION = "randperm:depth=2,seed=0"


@dataclasses.dataclass(frozen=True)
class EstimatorSpec:
    """One estimator of the registry.

    Attributes:
        name: the name ``analyze`` accepts.
        metric: the quantity H(L, Φ) whose surrogate the row reports.
        bound: the surrogate as a formula of the Hessian (``d‖H‖₂``, ``‖H‖₁,₁``, ...).
        metric_rotated_run, bound_rotated_run: the same labels for a run trained with
            rotated Adam, whose checkpoints are analysed in the run's own rotated
            coordinates (the Hessian RᵀHR of L∘R).
        bound_is_d_times_value: True when the bound is d times the estimate (spectral:
            bound d‖H‖₂, estimate ‖H‖₂), so the bound per dimension is the value itself;
            otherwise the bound is the estimate and per dimension it is value / d.
        rotated: the estimator acts on L∘R for the ``rotation`` argument of analyze.
        run: ``run(op, n_cauchy=, seed=, tol=, progress=) -> Estimate`` on the (possibly
            rotated) operator.
    """

    name: str
    metric: str
    bound: str
    metric_rotated_run: str
    bound_rotated_run: str
    bound_is_d_times_value: bool
    rotated: bool
    run: Callable[..., Any]

    def bound_per_dim(self, value: float, d: int) -> float:
        """The surrogate divided by d, from the estimate ``value`` and the dimension ``d``.

        Example:
            >>> ESTIMATORS["spectral"].bound_per_dim(2.0, 10), ESTIMATORS["l11"].bound_per_dim(2.0, 10)
            (2.0, 0.2)
        """
        return value if self.bound_is_d_times_value else value / d


def _spectral(op, *, n_cauchy, seed, tol, progress):
    from hessnorm.estimators.lanczos import spectral_norm

    return spectral_norm(op, tol=tol, seed=seed, progress=progress)


def _l11(op, *, n_cauchy, seed, tol, progress):
    from hessnorm.estimators.cauchy import l11_norm

    return l11_norm(op, n=n_cauchy, seed=seed, progress=progress)


def _blockwise(kind: str):
    def run(op, *, n_cauchy, seed, tol, progress):
        from hessnorm.estimators.blockwise import blockwise_smoothness
        from hessnorm.partition import Partition

        return blockwise_smoothness(op, Partition.named(kind, op), seed=seed, progress=progress)

    return run


def _spec(name, metric, bound, metric_rot, bound_rot, d_times, rotated, run) -> EstimatorSpec:
    return EstimatorSpec(name, metric, bound, metric_rot, bound_rot, d_times, rotated, run)


ESTIMATORS: dict[str, EstimatorSpec] = {
    s.name: s
    for s in (
        _spec(
            "spectral",
            "H(L, Φ_AdaSGD)",
            "d‖H‖₂",
            "H(L∘R, Φ_AdaSGD)",
            "d‖RᵀHR‖₂",
            True,
            False,
            _spectral,
        ),
        _spec("l11", "H(L, Φ_Adam)", "‖H‖₁,₁", "H(L∘R, Φ_Adam)", "‖RᵀHR‖₁,₁", False, False, _l11),
        _spec(
            "blockwise:by_tensor",
            "H(L, Φ_tensor)",
            "S(H, Φ)",
            "H(L∘R, Φ_tensor)",
            "S(RᵀHR, Φ)",
            False,
            False,
            _blockwise("by_tensor"),
        ),
        _spec(
            "blockwise:by_row",
            "H(L, Φ_row)",
            "S(H, Φ)",
            "H(L∘R, Φ_row)",
            "S(RᵀHR, Φ)",
            False,
            False,
            _blockwise("by_row"),
        ),
        _spec(
            "rotated-l11",
            "H(L∘R, Φ_Adam)",
            "‖RᵀHR‖₁,₁",
            "H(L∘R, Φ_Adam)",
            "‖RᵀHR‖₁,₁",
            False,
            True,
            _l11,
        ),
        _spec(
            "rotated-spectral",
            "H(L∘R, Φ_AdaSGD)",
            "d‖RᵀHR‖₂",
            "H(L∘R, Φ_AdaSGD)",
            "d‖RᵀHR‖₂",
            True,
            True,
            _spectral,
        ),
    )
}

# The columns of an analyze row, in order (``hessnorm analyze --out`` writes them).
# ``loss``/``grad_norm``: the mean loss and ‖∇L‖₂ at the checkpoint over the evaluation
# set; ``data``..``data_seed``: that evaluation set (file, split, windows × tokens, the
# rule choosing them and its seed). Every interval (low, high) is conditional on that
# set; ``eval_sd``/``eval_min``/``eval_max`` are the spread of the estimate over
# ``eval_resamples`` independent evaluation sets (``analyze --eval-resamples K``).
COLUMNS = [
    "checkpoint",
    "kind",
    "run",
    "task",
    "optimizer",
    "step",
    "loss",
    "grad_norm",
    "estimator",
    "metric",
    "bound",
    "rotation",
    "value",
    "value_per_dim",
    "low",
    "high",
    "confidence",
    "bound_per_dim",
    "n_hvp",
    "seconds",
    "d",
    "data",
    "split",
    "eval_windows",
    "eval_tokens",
    "eval_rule",
    "data_seed",
    "eval_resamples",
    "eval_sd",
    "eval_min",
    "eval_max",
    "details",
]
NUMERIC_COLUMNS = (
    "step",
    "loss",
    "grad_norm",
    "eval_windows",
    "eval_tokens",
    "data_seed",
    "eval_resamples",
    "eval_sd",
    "eval_min",
    "eval_max",
    "value",
    "value_per_dim",
    "low",
    "high",
    "confidence",
    "bound_per_dim",
    "n_hvp",
    "seconds",
    "d",
)


def parse_estimators(estimators: str | Iterable[str]) -> list[str]:
    """Estimator names from a list or a comma-separated string, checked against the registry.

    Raises:
        ConfigError: an unknown name, or none at all.

    Example:
        >>> parse_estimators("spectral, l11")
        ['spectral', 'l11']
    """
    names = [
        e.strip() for e in (estimators.split(",") if isinstance(estimators, str) else estimators)
    ]
    names = [e for e in names if e]
    bad = [e for e in names if e not in ESTIMATORS]
    if bad or not names:
        raise ConfigError(
            f"unknown estimator(s) {bad or names}; choose from {', '.join(ESTIMATORS)}"
        )
    return names


def per_dim_label(bound: str) -> str:
    """Axis label of the surrogate divided by d: ``"d‖H‖₂"`` -> ``"‖H‖₂"``, else ``"<bound> / d"``.

    Example:
        >>> per_dim_label("d‖H‖₂"), per_dim_label("‖H‖₁,₁")
        ('‖H‖₂', '‖H‖₁,₁ / d')
    """
    bound = bound or "estimate"
    for spec in ESTIMATORS.values():
        for b in (spec.bound, spec.bound_rotated_run):
            if b == bound and spec.bound_is_d_times_value:
                return b[1:]
    return f"{bound} / d"
