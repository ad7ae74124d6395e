"""Optimizers of paper 000 as ``torch.optim.Optimizer`` subclasses.

``AdaSGD`` (Alg. 2), ``BlockwiseAdam`` (Alg. 3), ``SignGD`` and the ``Rotated``
wrapper (any optimizer on L∘R). Adam, RMSProp and SGD come from ``torch.optim``;
``make_optimizer`` builds any of them by name.
"""

from hessnorm.optim.adasgd import AdaSGD
from hessnorm.optim.blockwise import BlockwiseAdam
from hessnorm.optim.factory import OPTIMIZERS, make_optimizer
from hessnorm.optim.rotated import Rotated
from hessnorm.optim.signgd import SignGD

__all__ = ["AdaSGD", "BlockwiseAdam", "SignGD", "Rotated", "make_optimizer", "OPTIMIZERS"]
