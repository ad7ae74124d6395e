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

The spectrum estimators (``family="spectrum"``) describe H rather than bound a
smoothness; their rows go to the report's spectrum section, not the norms table:

======================== ========================================================
name                      row value (interval)
======================== ========================================================
trace                     tr(H) by Hutch++ (Student-t)
density                   tr(H) from the SLQ density (Student-t over probes); the
                          density itself (per-probe nodes and weights) goes to the
                          spectra sidecar, λ_max / λ_min / tr(H²)/d to ``details``
diagonal-share            Σᵢ|Hᵢᵢ| / ‖H‖₁,₁ (union bound); per-tensor shares in details
rotated-diagonal-share    the same for RᵀHR (rotation moves mass off the diagonal)
block-spectra:by_tensor   mean pairwise JS distance between the per-tensor SLQ
                          densities (bootstrap); the densities go to the sidecar
======================== ========================================================

The sidecar: :func:`hessnorm.analyze.write_results` writes ``<out>.spectra.json``
next to the results file (format ``hessnorm-spectra/1``, see
:data:`SPECTRA_FORMAT`) and names it in the row's ``details`` (``spectra_file``,
relative to the results file's folder, and ``spectra_key``).

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
    "EVAL_COLUMNS",
    "LOSS_CHECK_COLUMNS",
    "NUMERIC_COLUMNS",
    "parse_estimators",
    "per_dim_label",
    "is_spectrum",
    "SPECTRA_FORMAT",
]

# Format tag of the spectra sidecar ``<results stem>.spectra.json``: a JSON object
# {"format", "results", "spectra": {key: {"checkpoint", "step", "estimator", "rotation",
# "run", "optimizer", "blocks": {block name: SpectralDensity.to_dict()}}}}, key =
# "<checkpoint> | <estimator> | <rotation>" (also in the row's details as spectra_key).
SPECTRA_FORMAT = "hessnorm-spectra/1"

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
            rotated) operator. Spectrum estimators put their densities (block name ->
            ``SpectralDensity``) in the Estimate's ``details["spectra"]``; analyze moves
            them out of the row into the sidecar.
        family: ``"smoothness"`` (a bound H(L, Φ) of paper 000: the norms table) or
            ``"spectrum"`` (trace, density, diagonal share, block spectra: the spectrum
            section of the report).
        ratio: the value is a dimensionless ratio (a share, a JS distance): its "per
            dimension" value is the value itself, not value / d.

    Example:
        >>> spec = ESTIMATORS["l11"]
        >>> spec.name, spec.bound, spec.family, spec.rotated
        ('l11', '‖H‖₁,₁', 'smoothness', False)
        >>> import torch
        >>> est = spec.run(torch.eye(4, dtype=torch.float64), n_cauchy=20, seed=0, tol=1e-4,
        ...                progress=False)
        >>> est.name, est.covers(4.0)  # ‖I₄‖₁,₁ = 4
        ('l11_norm', True)
    """

    name: str
    metric: str
    bound: str
    metric_rotated_run: str
    bound_rotated_run: str
    bound_is_d_times_value: bool
    rotated: bool
    run: Callable[..., Any]
    family: str = "smoothness"
    ratio: bool = False

    def bound_per_dim(self, value: float, d: int) -> float:
        """The surrogate divided by d, from the estimate ``value`` and the dimension ``d``.

        Example:
            >>> ESTIMATORS["spectral"].bound_per_dim(2.0, 10), ESTIMATORS["l11"].bound_per_dim(2.0, 10)
            (2.0, 0.2)
        """
        return value if self.bound_is_d_times_value or self.ratio else value / d


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


def _trace(op, *, n_cauchy, seed, tol, progress):
    from hessnorm.estimators.trace import trace

    return trace(op, seed=seed, progress=progress)


def _density(op, *, n_cauchy, seed, tol, progress):
    from hessnorm.estimators.density import spectral_density

    sd = spectral_density(op, seed=seed, progress=progress)
    est = sd.to_estimate()
    details = {k: v for k, v in est.details.items() if k not in ("nodes", "weights")}
    t2 = sd.trace_power(2)
    details["second_moment_interval"] = (t2.low / op.d, t2.high / op.d)
    details["spectra"] = {sd.name: sd}
    return dataclasses.replace(est, name="density", details=details)


def _diagonal_share(op, *, n_cauchy, seed, tol, progress):
    from hessnorm.estimators.diagonal import diagonal_share

    return diagonal_share(op, n_l11=n_cauchy, seed=seed, progress=progress)


def _block_spectra(kind: str):
    def run(op, *, n_cauchy, seed, tol, progress):
        from hessnorm.errors import SelectionError
        from hessnorm.estimators.density import block_heterogeneity, block_spectra
        from hessnorm.operator import HessianOperator
        from hessnorm.partition import Partition

        if not isinstance(op, HessianOperator):
            raise SelectionError(
                f"block-spectra:{kind} needs the model's named parameters, but this Hessian acts "
                f"on unnamed coordinates ({type(op).__name__}: e.g. a rotated-adam run, analysed "
                "in its rotated coordinates); drop block-spectra for such runs"
            )

        # 4 probes x 24 steps per block (the SLQ default is 8 x 32): a by_tensor partition of
        # GPT-2 (148 tensors) then costs about 148 * 96 = 14k HVPs.
        spectra = block_spectra(
            op, Partition.named(kind, op), n_probes=4, steps=24, seed=seed, progress=progress
        )
        est = block_heterogeneity(spectra, seed=seed)
        details = dict(est.details, n_blocks=est.d, partition=kind, spectra=spectra)
        # d is the operator's dimension in every row (the estimate's d counts blocks)
        return dataclasses.replace(est, name="block_spectra", d=op.d, details=details)

    return run


def _spec(
    name,
    metric,
    bound,
    metric_rot,
    bound_rot,
    d_times,
    rotated,
    run,
    family="smoothness",
    ratio=False,
) -> EstimatorSpec:
    return EstimatorSpec(
        name, metric, bound, metric_rot, bound_rot, d_times, rotated, run, family, ratio
    )


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
        _spec("trace", "tr(H)", "tr(H)", "tr(RᵀHR)", "tr(RᵀHR)", False, False, _trace, "spectrum"),
        _spec(
            "density",
            "tr(H) by SLQ",
            "tr(H)",
            "tr(RᵀHR) by SLQ",
            "tr(RᵀHR)",
            False,
            False,
            _density,
            "spectrum",
        ),
        _spec(
            "diagonal-share",
            "diagonal share",
            "Σᵢ|Hᵢᵢ| / ‖H‖₁,₁",
            "diagonal share of RᵀHR",
            "Σᵢ|(RᵀHR)ᵢᵢ| / ‖RᵀHR‖₁,₁",
            False,
            False,
            _diagonal_share,
            "spectrum",
            True,
        ),
        _spec(
            "rotated-diagonal-share",
            "diagonal share of RᵀHR",
            "Σᵢ|(RᵀHR)ᵢᵢ| / ‖RᵀHR‖₁,₁",
            "diagonal share of RᵀHR",
            "Σᵢ|(RᵀHR)ᵢᵢ| / ‖RᵀHR‖₁,₁",
            False,
            True,
            _diagonal_share,
            "spectrum",
            True,
        ),
        _spec(
            "block-spectra:by_tensor",
            "block heterogeneity (per tensor)",
            "mean pairwise JS distance",
            "block heterogeneity of RᵀHR (per tensor)",
            "mean pairwise JS distance",
            False,
            False,
            _block_spectra("by_tensor"),
            "spectrum",
            True,
        ),
    )
}

# The columns of an analyze row, in order (``hessnorm analyze --out`` writes them).
# ``loss``/``grad_norm``: the mean loss and ‖∇L‖₂ at the checkpoint over the evaluation
# set; ``data``..``data_seed``: that evaluation set (file, split, windows × tokens, the
# rule choosing them and its seed). Every interval (low, high) is conditional on that
# set; ``eval_sd``/``eval_min``/``eval_max`` are the spread of the estimate over
# ``eval_resamples`` independent evaluation sets (``analyze --eval-resamples K``).
EVAL_COLUMNS = [
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
]
#: nanoGPT checkpoints: the best_val_loss check (hessnorm.checkpoint.LossCheck.columns).
LOSS_CHECK_COLUMNS = ["best_val_loss", "loss_check", "loss_check_tol", "loss_check_detectable"]
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
    *EVAL_COLUMNS,
    *LOSS_CHECK_COLUMNS,
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
    "best_val_loss",
    "loss_check_tol",
    "loss_check_detectable",
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
        >>> per_dim_label("d‖H‖₂"), per_dim_label("‖H‖₁,₁"), per_dim_label("Σᵢ|Hᵢᵢ| / ‖H‖₁,₁")
        ('‖H‖₂', '‖H‖₁,₁ / d', 'Σᵢ|Hᵢᵢ| / ‖H‖₁,₁')
    """
    bound = bound or "estimate"
    for spec in ESTIMATORS.values():
        if spec.ratio and bound in (spec.bound, spec.bound_rotated_run):
            return bound  # a ratio is its own per-dimension value
        for b in (spec.bound, spec.bound_rotated_run):
            if b == bound and spec.bound_is_d_times_value:
                return b[1:]
    return f"{bound} / d"


def is_spectrum(name: str) -> bool:
    """Whether ``name`` is a registered spectrum estimator (trace, density, ...).

    Example:
        >>> is_spectrum("trace"), is_spectrum("l11"), is_spectrum("unknown")
        (True, False, False)
    """
    spec = ESTIMATORS.get(name)
    return spec is not None and spec.family == "spectrum"
