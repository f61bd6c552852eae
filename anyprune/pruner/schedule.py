"""Iterative pruning schedules: ``scheduler(pruning_ratio, steps) -> [ratio after step 0, 1, ..., steps]``."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

from ..errors import ConfigError

__all__ = ["linear_scheduler", "check_schedule"]


def linear_scheduler(pruning_ratio: float, steps: int) -> list[float]:
    """``steps + 1`` ratios rising linearly from 0 to ``pruning_ratio``.

    Example:
        >>> linear_scheduler(0.5, 4)
        [0.0, 0.125, 0.25, 0.375, 0.5]
    """
    return [pruning_ratio * i / steps for i in range(steps + 1)]


def check_schedule(scheduler: Callable[[float, int], Sequence[float]], ratio: float, steps: int,
                   what: str = "pruning_ratio") -> list[float]:
    """Call ``scheduler(ratio, steps)`` and check what it returns; raises :class:`ConfigError` with the fix."""
    try:
        values = [float(v) for v in scheduler(ratio, steps)]
    except (TypeError, ValueError) as err:
        raise ConfigError(
            f"iterative_pruning_ratio_scheduler({ratio}, {steps}) must return a sequence of {steps + 1} numbers "
            f"(the ratio reached after each step, starting with 0): {err}"
        ) from err
    if len(values) != steps + 1:
        raise ConfigError(
            f"iterative_pruning_ratio_scheduler({ratio}, {steps}) returned {len(values)} values; it must return "
            f"steps + 1 = {steps + 1} (the ratio after step 0, 1, ..., {steps}) for {what}"
        )
    if any(not 0.0 <= v <= 1.0 for v in values):
        raise ConfigError(f"iterative_pruning_ratio_scheduler({ratio}, {steps}) returned {values}: every ratio "
                          "must lie in [0, 1]")
    if any(b < a - 1e-12 for a, b in itertools.pairwise(values)):
        raise ConfigError(f"iterative_pruning_ratio_scheduler({ratio}, {steps}) returned {values}: ratios must not "
                          "decrease (pruned channels cannot come back)")
    return values
