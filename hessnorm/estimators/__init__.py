"""Estimators: each a function (operator, ..., seed) -> Estimate; ``exact`` is the dense ground truth."""

from hessnorm.estimators import exact
from hessnorm.estimators.blockwise import blockwise_smoothness
from hessnorm.estimators.cauchy import cauchy_scale_bias, l11_norm
from hessnorm.estimators.density import (
    SpectralDensity,
    block_heterogeneity,
    block_spectra,
    spectral_density,
)
from hessnorm.estimators.diagonal import Diagonal, diagonal, diagonal_share
from hessnorm.estimators.lanczos import Eigenpairs, lanczos, spectral_norm, top_eigenpairs
from hessnorm.estimators.trace import trace

__all__ = [
    "exact",
    "spectral_norm",
    "top_eigenpairs",
    "Eigenpairs",
    "lanczos",
    "l11_norm",
    "cauchy_scale_bias",
    "blockwise_smoothness",
    # the whole spectrum (issue 12)
    "trace",
    "spectral_density",
    "SpectralDensity",
    "diagonal",
    "Diagonal",
    "diagonal_share",
    "block_spectra",
    "block_heterogeneity",
]
