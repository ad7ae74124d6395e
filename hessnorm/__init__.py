"""hessnorm: the Hessian geometry adaptive optimizers exploit, with error bars.

Flat public API, grouped as in ``__all__``. See README.md for a tour. Names are
imported on first use (PEP 562), so ``import hessnorm`` and ``hessnorm --help``
load neither torch nor pandas until something needs them.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

__version__ = "0.1.0"

# public name -> module defining it
_EXPORTS = {
    # core: the operator, results, errors
    "HessianOperator": "hessnorm.operator",
    "RotatedOperator": "hessnorm.operator",
    "DenseOperator": "hessnorm.operator",
    "HessianLike": "hessnorm.operator",
    "LossOperator": "hessnorm.operator",
    "as_operator": "hessnorm.operator",
    "Estimate": "hessnorm.estimate",
    "to_frame": "hessnorm.estimate",
    # Hessian norms (paper 000)
    "spectral_norm": "hessnorm.estimators.lanczos",
    "top_eigenpairs": "hessnorm.estimators.lanczos",
    "l11_norm": "hessnorm.estimators.cauchy",
    "blockwise_smoothness": "hessnorm.estimators.blockwise",
    # the geometry Adam sees: preconditioned sharpness, l-inf / Phi brackets (issue 22)
    "preconditioned_sharpness": "hessnorm.estimators.preconditioned",
    "stability_threshold": "hessnorm.estimators.preconditioned",
    "Preconditioner": "hessnorm.preconditioner",
    "linf_smoothness": "hessnorm.estimators.linf",
    "phi_smoothness": "hessnorm.estimators.linf",
    # the whole spectrum: trace, density, diagonal, block spectra
    "trace": "hessnorm.estimators.trace",
    "spectral_density": "hessnorm.estimators.density",
    "SpectralDensity": "hessnorm.estimators.density",
    "block_spectra": "hessnorm.estimators.density",
    "block_heterogeneity": "hessnorm.estimators.density",
    "diagonal": "hessnorm.estimators.diagonal",
    "Diagonal": "hessnorm.estimators.diagonal",
    "diagonal_share": "hessnorm.estimators.diagonal",
    # partitions and rotations
    "Partition": "hessnorm.partition",
    "Identity": "hessnorm.rotation",
    "RandPerm": "hessnorm.rotation",
    "ExpSkew": "hessnorm.rotation",
    # local smoothness and the (L0, L1) condition (paper 003)
    "local_smoothness": "hessnorm.estimators.local_smoothness",
    "hessian_local_smoothness": "hessnorm.estimators.local_smoothness",
    "smoothness_along_run": "hessnorm.analyze",
    "fit_l0l1": "hessnorm.l0l1",
    "L0L1Fit": "hessnorm.l0l1",
    "plot_l0l1": "hessnorm.report.figures",
    # optimizers and the reference trainer
    "AdaSGD": "hessnorm.optim",
    "BlockwiseAdam": "hessnorm.optim",
    "SignGD": "hessnorm.optim",
    "Rotated": "hessnorm.optim",
    "TrainConfig": "hessnorm.train.loop",
    "train": "hessnorm.train.loop",
    "rebuild": "hessnorm.train.runs",
    # checkpoints, analysis, reports
    "load": "hessnorm.checkpoint",
    "lm_windows": "hessnorm.train.tasks",
    "analyze": "hessnorm.analyze",
    "make_report": "hessnorm.report",
    # the estimator contract
    "register_estimator": "hessnorm.registry",
    "AnalyzeOptions": "hessnorm.inputs",
    "EvalSet": "hessnorm.inputs",
    "CheckpointInfo": "hessnorm.inputs",
}
# public subpackages and modules, reachable as ``hessnorm.<name>`` (``hessnorm.train`` and
# ``hessnorm.analyze`` are the functions; their modules import as usual)
_MODULES = (
    "estimators",
    "optim",
    "report",
    "registry",
    "inputs",
    "results",
    "operator",
    "partition",
    "rotation",
    "checkpoint",
    "distributed",
    "hf",
    "errors",
    "exact",
    "testing",
)

__all__ = [*_EXPORTS, *_MODULES]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
    elif name == "exact":
        value = importlib.import_module("hessnorm.estimators.exact")
    elif name in _MODULES:
        value = importlib.import_module(f"hessnorm.{name}")
    else:
        raise AttributeError(f"module 'hessnorm' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


class _Package(types.ModuleType):
    """``hessnorm.analyze`` and ``hessnorm.train`` name functions, not their modules.

    Importing the submodules ``hessnorm.analyze`` / ``hessnorm.train`` would bind
    them as package attributes over the functions of the same name; this keeps the
    functions (the modules stay reachable with ``from hessnorm.train import ...``).
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if name in ("analyze", "train") and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
