"""Exceptions raised by hessnorm.

Every error names the problem and, where there is one, the fix. They all derive
from :class:`HessnormError`, so ``except hessnorm.errors.HessnormError`` catches
anything the library raises on purpose. Each also derives from the matching builtin
(``ValueError``, ``MemoryError``, ...), so callers that catch those keep working.

Example:
    >>> from hessnorm.errors import ConfigError, HessnormError
    >>> from hessnorm.optim.factory import make_optimizer
    >>> import torch
    >>> try:
    ...     make_optimizer("lion", [("w", torch.zeros(2, requires_grad=True))], lr=0.1)
    ... except HessnormError as exc:
    ...     print(type(exc).__name__, isinstance(exc, ValueError), str(exc)[:28])
    ConfigError True unknown optimizer 'lion'; ch
"""

from __future__ import annotations


class HessnormError(Exception):
    """Base class of every deliberate hessnorm error."""


class NonFiniteError(HessnormError, FloatingPointError):
    """A loss, gradient or Hessian-vector product contains NaN or Inf."""


class EmptyDataError(HessnormError, ValueError):
    """The evaluation data holds no example."""


class ShapeError(HessnormError, ValueError):
    """A vector has the wrong length, dtype or device for the operator."""


class StochasticModelError(HessnormError, RuntimeError):
    """The model is random (dropout active in train mode): its Hessian is undefined."""


class SelectionError(HessnormError, ValueError):
    """A parameter selection or partition is empty or does not cover the parameters."""


class TooLargeError(HessnormError, MemoryError):
    """A dense computation was asked for a dimension above its configured limit."""


class CheckpointError(HessnormError, ValueError):
    """A checkpoint cannot be read safely or does not match the model."""


class ConfigError(HessnormError, ValueError):
    """An unknown task, optimizer, estimator or malformed option."""


class MissingDependencyError(HessnormError, ImportError):
    """An optional dependency is not installed (the message names the pip extra)."""


class DistributedError(HessnormError, RuntimeError):
    """Ranks of a torch.distributed analysis disagree, hold no data, or one of them failed."""
