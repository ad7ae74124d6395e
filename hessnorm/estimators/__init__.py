"""Estimators: each a function (operator, ..., seed) -> Estimate; ``exact`` is the dense ground truth."""

from hessnorm.estimators import exact
from hessnorm.estimators.blockwise import blockwise_smoothness
from hessnorm.estimators.cauchy import cauchy_scale_bias, l11_norm
from hessnorm.estimators.lanczos import Eigenpairs, lanczos, spectral_norm, top_eigenpairs

__all__ = [
    "exact",
    "spectral_norm",
    "top_eigenpairs",
    "Eigenpairs",
    "lanczos",
    "l11_norm",
    "cauchy_scale_bias",
    "blockwise_smoothness",
]
