"""Progress bars with a time projection, shared by the estimators.

Every estimator counts its work (HVPs, or gradients for local smoothness) in a tqdm
bar whose total is the planned count, so tqdm shows done / total and an ETA. At
the second update the bar also projects the whole run: the time so far plus the
remaining units at the rate of the second update (the first one carries one-off
costs such as building the gradient graph or the forward-mode trial, and would
overstate the rest). When the projection exceeds :data:`WARN_SECONDS` (10 minutes)
it emits one :class:`SlowRunWarning` naming it and how to cut it, whether or not the
bar is shown; a first update that alone passes :data:`WARN_SECONDS` warns at once.

Usage (one line around the loop that does the work)::

    with progress_bar(total, "trace (Hutch++)", enabled=progress,
                      advice="fewer probes (n_probes)") as bar:
        ...
        bar.update(k)  # after k HVPs
"""

from __future__ import annotations

import time
import warnings

__all__ = ["progress_bar", "ProgressBar", "SlowRunWarning", "WARN_SECONDS"]

WARN_SECONDS = 600.0
_clock = time.perf_counter  # module attribute so tests can substitute a fake clock


class SlowRunWarning(UserWarning):
    """An estimator projects a run longer than :data:`WARN_SECONDS`.

    Example:
        >>> import warnings
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     warnings.warn("slow", SlowRunWarning)
        >>> caught[0].category.__name__, issubclass(SlowRunWarning, UserWarning)
        ('SlowRunWarning', True)
    """


def _fmt_seconds(s: float) -> str:
    if s < 120:
        return f"{s:.0f} s"
    if s < 7200:
        return f"{s / 60:.0f} min"
    return f"{s / 3600:.1f} h"


class ProgressBar:
    """A tqdm bar over ``total`` units that warns once when the projection is long.

    Args:
        total: planned units (an upper bound when the estimator may stop early).
        desc: the estimator's name, shown in the bar and the warning.
        enabled: show the bar (the projection and warning happen either way).
        unit: what is counted (``"HVP"``, ``"grad"``).
        advice: how to make the run shorter, e.g. ``"fewer probes (n)"``.
        upper: whether ``total`` is only a cap (the run may stop early).

    Example:
        >>> bar = ProgressBar(10, "demo", enabled=False)
        >>> bar.update(2); bar.update(3); bar.set_total(5); bar.close()
        >>> bar.done, bar.total, bar.projected < WARN_SECONDS
        (5, 5, True)
    """

    def __init__(
        self,
        total: int,
        desc: str,
        *,
        enabled: bool = True,
        unit: str = "HVP",
        advice: str = "",
        upper: bool = False,
    ) -> None:
        from tqdm.auto import tqdm

        self.total = int(total)
        self.desc, self.unit, self.advice, self.upper = desc, unit, advice, upper
        self.bar = tqdm(total=self.total, desc=desc, disable=not enabled, leave=False, unit=unit)
        self.done = 0
        self.projected: float | None = None
        self._t0 = _clock()
        self._first: tuple[int, float] | None = None  # (units, clock) at the first update

    def update(self, n: int = 1) -> None:
        """Record ``n`` more units; at the second update, project the run and maybe warn."""
        if n <= 0:
            return
        self.done += int(n)
        self.bar.update(n)
        if self.projected is not None:
            return
        now = _clock()
        if self._first is None:
            self._first = (self.done, now)
            if now - self._t0 > WARN_SECONDS and self.done < self.total:
                self._project(now - self._t0, (now - self._t0) / self.done)
            return
        per = (now - self._first[1]) / (self.done - self._first[0])
        self._project(now - self._t0, per)

    def _project(self, elapsed: float, per: float) -> None:
        self.projected = elapsed + per * max(0, self.total - self.done)
        if self.projected > WARN_SECONDS:
            cap = " at most (it stops when converged)" if self.upper else ""
            warnings.warn(
                f"{self.desc}: {self.done} {self.unit}(s) took {_fmt_seconds(elapsed)} "
                f"({_fmt_seconds(per)} each), so the planned {self.total} would take about "
                f"{_fmt_seconds(self.projected)}{cap}. To cut it: "
                f"{self.advice or 'plan fewer ' + self.unit + 's'}.",
                SlowRunWarning,
                stacklevel=3,
            )

    def set_total(self, total: int) -> None:
        """Change the planned total (e.g. to the count actually done at the end)."""
        self.total = int(total)
        self.bar.total = self.total
        self.bar.refresh()

    def close(self) -> None:
        self.bar.close()

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def progress_bar(total: int, desc: str, **kwargs) -> ProgressBar:
    """A :class:`ProgressBar` (see there for the arguments).

    Example:
        >>> with progress_bar(3, "demo", enabled=False) as bar:
        ...     for _ in range(3):
        ...         bar.update(1)
        >>> bar.done, bar.projected < WARN_SECONDS
        (3, True)
    """
    return ProgressBar(total, desc, **kwargs)
