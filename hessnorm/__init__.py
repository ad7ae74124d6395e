"""hessnorm: the Hessian geometry adaptive optimizers exploit, with error bars.

Flat public API; see README.md for a tour and DESIGN notes in docs/.
"""

__version__ = "0.1.0"

# core: the operator, results, errors
from hessnorm import errors
from hessnorm.estimate import Estimate, to_frame
from hessnorm.operator import DenseOperator, HessianOperator, RotatedOperator, as_operator

__all__ = [
    # core
    "errors",
    "Estimate",
    "to_frame",
    "HessianOperator",
    "RotatedOperator",
    "DenseOperator",
    "as_operator",
]

# estimators (appended below by each module's owner)
