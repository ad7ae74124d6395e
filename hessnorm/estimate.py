"""The result type every estimator returns, and its table form."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["Estimate", "to_frame"]


@dataclasses.dataclass(frozen=True)
class Estimate:
    """A number with its error bar and its cost.

    Attributes:
        name: what was estimated, e.g. ``"spectral_norm"`` or ``"l11_norm"``.
        value: the point estimate.
        value_per_dim: ``value / d`` (the normalisation of paper 000, Table 1).
        low, high: the interval the estimator vouches for.
        confidence: the coverage the interval claims (1.0 for a deterministic bound,
            ``nan`` when no probability is attached).
        n_hvp: Hessian-vector products spent.
        seconds: wall-clock time spent.
        d: dimension of the parameter vector.
        details: estimator-specific extras (per-tensor breakdown, history, ...), a dict of
            plain values (numbers, strings, lists, dicts): what a results file stores.
        artifacts: richer objects the estimate carries besides its number (the
            :class:`~hessnorm.estimators.density.SpectralDensity` of each block for the
            density estimators); not part of the row, not compared, not serialised with it.

    Example:
        >>> e = Estimate("spectral_norm", 3.0, 2.5, 3.5, 0.95, n_hvp=10, seconds=0.0, d=4)
        >>> e.value_per_dim, e.half_width, e.covers(3.2), e.covers(4.0)
        (0.75, 0.5, True, False)
        >>> print(e)
        spectral_norm = 3  [2.5, 3.5, 95%]  (d=4, 10 HVPs, 0.00s)
    """

    name: str
    value: float
    low: float
    high: float
    confidence: float
    n_hvp: int
    seconds: float
    d: int
    details: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    artifacts: Mapping[str, Any] = dataclasses.field(
        default_factory=dict, compare=False, repr=False
    )

    @property
    def value_per_dim(self) -> float:
        return self.value / self.d if self.d else math.nan

    @property
    def half_width(self) -> float:
        return 0.5 * (self.high - self.low)

    def covers(self, x: float) -> bool:
        """Whether ``x`` lies in ``[low, high]``."""
        return self.low <= x <= self.high

    def to_dict(self, details: bool = True) -> dict[str, Any]:
        """Plain-dict form (JSON friendly when ``details`` holds plain values)."""
        out = {
            "name": self.name,
            "value": float(self.value),
            "value_per_dim": float(self.value_per_dim),
            "low": float(self.low),
            "high": float(self.high),
            "confidence": float(self.confidence),
            "n_hvp": int(self.n_hvp),
            "seconds": float(self.seconds),
            "d": int(self.d),
        }
        if details:
            out["details"] = dict(self.details)
        return out

    def __str__(self) -> str:
        conf = "" if math.isnan(self.confidence) else f", {self.confidence:.0%}"
        return (
            f"{self.name} = {self.value:.6g}  [{self.low:.6g}, {self.high:.6g}{conf}]"
            f"  (d={self.d}, {self.n_hvp} HVPs, {self.seconds:.2f}s)"
        )


def to_frame(estimates: Iterable[Estimate | Mapping[str, Any]], **extra_columns: Any):
    """Turn Estimates (or their dicts) into a :class:`pandas.DataFrame`, one row each.

    ``details`` are left out; keyword arguments become constant extra columns.

    Example:
        >>> e = Estimate("l11_norm", 6.0, 5.0, 7.0, 0.9, n_hvp=20, seconds=0.1, d=3)
        >>> df = to_frame([e, {"name": "trace", "value": 1.0}], step=5)
        >>> df.shape, df["value_per_dim"].tolist()[0], df["step"].tolist()
        ((2, 10), 2.0, [5, 5])
    """
    import pandas as pd

    rows = []
    for e in estimates:
        row = e.to_dict(details=False) if isinstance(e, Estimate) else dict(e)
        row.pop("details", None)
        row.update(extra_columns)
        rows.append(row)
    return pd.DataFrame(rows)
