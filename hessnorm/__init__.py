"""hessnorm: the Hessian geometry adaptive optimizers exploit, with error bars.

Flat public API, grouped as in ``__all__``. See README.md for a tour.
"""

__version__ = "0.1.0"

from hessnorm import errors, rotation
from hessnorm.analyze import analyze
from hessnorm.checkpoint import load
from hessnorm.estimate import Estimate, to_frame
from hessnorm.estimators import exact
from hessnorm.estimators.blockwise import blockwise_smoothness
from hessnorm.estimators.cauchy import l11_norm
from hessnorm.estimators.density import (
    SpectralDensity,
    block_heterogeneity,
    block_spectra,
    spectral_density,
)
from hessnorm.estimators.diagonal import Diagonal, diagonal, diagonal_share
from hessnorm.estimators.lanczos import spectral_norm, top_eigenpairs
from hessnorm.estimators.local_smoothness import (
    hessian_local_smoothness,
    local_smoothness,
    local_smoothness_along_run,
)
from hessnorm.estimators.trace import trace
from hessnorm.l0l1 import L0L1Fit, fit_l0l1, plot_l0l1
from hessnorm.operator import DenseOperator, HessianOperator, RotatedOperator, as_operator
from hessnorm.optim import AdaSGD, BlockwiseAdam, Rotated, SignGD
from hessnorm.partition import Partition
from hessnorm.report import make_report
from hessnorm.rotation import ExpSkew, Identity, RandPerm
from hessnorm.train import TrainConfig, rebuild, train

__all__ = [
    # core: the operator, results, errors
    "HessianOperator",
    "RotatedOperator",
    "DenseOperator",
    "as_operator",
    "Estimate",
    "to_frame",
    "errors",
    # Hessian norms (paper 000)
    "spectral_norm",
    "top_eigenpairs",
    "l11_norm",
    "blockwise_smoothness",
    "exact",
    # the whole spectrum: trace, density, diagonal, block spectra
    "trace",
    "spectral_density",
    "SpectralDensity",
    "diagonal",
    "Diagonal",
    "diagonal_share",
    "block_spectra",
    "block_heterogeneity",
    # partitions and rotations
    "Partition",
    "rotation",
    "Identity",
    "RandPerm",
    "ExpSkew",
    # local smoothness and the (L0, L1) condition (paper 003)
    "local_smoothness",
    "hessian_local_smoothness",
    "local_smoothness_along_run",
    "fit_l0l1",
    "L0L1Fit",
    "plot_l0l1",
    # optimizers and the reference trainer
    "AdaSGD",
    "BlockwiseAdam",
    "SignGD",
    "Rotated",
    "TrainConfig",
    "train",
    "rebuild",
    # checkpoints, analysis, reports
    "load",
    "analyze",
    "make_report",
]
