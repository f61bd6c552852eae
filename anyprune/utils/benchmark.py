"""Latency measurement with ``torch.utils.benchmark`` (synchronises CUDA, reports robust statistics)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ..errors import ConfigError
from ..trace.recorder import run_model

__all__ = ["measure_latency"]


def measure_latency(model: torch.nn.Module, example_inputs: Any, repeat: int = 50, warmup: int = 5,
                    run_fn: Callable | None = None, num_threads: int | None = None) -> tuple[float, float]:
    """Mean and standard deviation, in milliseconds, of one forward pass under ``torch.no_grad()``.

    Each of the ``repeat`` samples is one ``torch.utils.benchmark.Timer.timeit(1)``, which runs the model
    twice untimed (its own warm-up) and once timed, synchronising CUDA around the timed run.

    Args:
        model: the model (run as it is: put it in ``eval()`` first for inference numbers).
        example_inputs: a tensor, a tuple (unpacked), a list (one argument) or a dict (keywords).
        repeat: timed runs.
        warmup: untimed runs first.
        run_fn: ``run_fn(model, example_inputs)`` instead of the default call.
        num_threads: torch intra-op threads while timing (default: the current setting).

    Example:
        >>> import torch
        >>> mean, std = measure_latency(torch.nn.Linear(8, 4), torch.randn(2, 8), repeat=5, warmup=1)
        >>> mean > 0 and std >= 0
        True
    """
    for name, v, lo in (("repeat", repeat, 1), ("warmup", warmup, 0)):
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise ConfigError(f"{name} must be an int >= {lo}, got {v!r}")

    from torch.utils import benchmark as _tb  # imported on use: it loads the C++ extension machinery

    def once() -> None:
        with torch.no_grad():
            run_model(model, example_inputs, run_fn)

    for _ in range(warmup):
        once()
    timer = _tb.Timer(stmt="once()", globals={"once": once},
                      num_threads=num_threads if num_threads is not None else torch.get_num_threads())
    times = torch.tensor([timer.timeit(1).raw_times[0] for _ in range(repeat)], dtype=torch.float64)
    return float(times.mean() * 1000), float(times.std(unbiased=False) * 1000)
