"""Latency, throughput and memory of a model (latency with ``torch.utils.benchmark``: synchronised, robust)."""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from ..errors import ConfigError
from ..trace.recorder import run_model

__all__ = ["measure_fps", "measure_latency", "measure_memory", "measure_throughput"]


def measure_latency(model: torch.nn.Module, example_inputs: Any, repeat: int = 50, warmup: int = 5,
                    run_fn: Callable | None = None, num_threads: int | None = None) -> tuple[float, float]:
    """Mean and standard deviation, in milliseconds, of one forward pass under ``torch.no_grad()`` (or of one
    call of ``run_fn``, which may run a backward pass too).

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
        if run_fn is not None:  # the caller's function decides about gradients (it may call backward)
            run_fn(model, example_inputs)
            return
        with torch.no_grad():
            run_model(model, example_inputs)

    for _ in range(warmup):
        once()
    timer = _tb.Timer(stmt="once()", globals={"once": once},
                      num_threads=num_threads if num_threads is not None else torch.get_num_threads())
    times = torch.tensor([timer.timeit(1).raw_times[0] for _ in range(repeat)], dtype=torch.float64)
    return float(times.mean() * 1000), float(times.std(unbiased=False) * 1000)


def _batch_size(example_inputs: Any) -> int:
    from ..trace.opgraph import iter_tensors

    tensors = iter_tensors(example_inputs)
    return int(tensors[0].shape[0]) if tensors and tensors[0].ndim else 1


def measure_fps(model: torch.nn.Module, example_inputs: Any, repeat: int = 50, warmup: int = 5,
                run_fn: Callable | None = None) -> float:
    """Forward passes per second (``1000 / mean latency in ms``); see :func:`measure_latency`."""
    mean, _ = measure_latency(model, example_inputs, repeat=repeat, warmup=warmup, run_fn=run_fn)
    return 1000.0 / mean


def measure_throughput(model: torch.nn.Module, example_inputs: Any, repeat: int = 50, warmup: int = 5,
                       run_fn: Callable | None = None) -> float:
    """Samples per second: the batch size (dim 0 of the first input tensor) times :func:`measure_fps`."""
    return _batch_size(example_inputs) * measure_fps(model, example_inputs, repeat=repeat, warmup=warmup,
                                                     run_fn=run_fn)


def measure_memory(model: torch.nn.Module, example_inputs: Any, device: Any = None,
                   run_fn: Callable | None = None) -> float:
    """Peak memory, in MB, of one forward pass (``run_fn(model, inputs)`` instead if given), model and inputs
    included.

    On CUDA: the peak that torch allocated on ``device`` (default: the device of the model's first
    parameter). Elsewhere: the model's parameters and buffers, the inputs, and the peak of the tensors the
    call creates that are alive at once (counted by storage, through a ``TorchDispatchMode``; views share
    their base's bytes).

    Example:
        >>> import torch
        >>> round(measure_memory(torch.nn.Linear(1024, 1024, bias=False), torch.randn(256, 1024)), 1)
        6.0
    """
    from ..trace.opgraph import iter_tensors

    if device is None:
        first = next(iter(model.parameters()), None)
        device = first.device if first is not None else torch.device("cpu")
    device = torch.device(device)

    def call() -> None:
        if run_fn is not None:
            run_fn(model, example_inputs)
        else:
            with torch.no_grad():
                run_model(model, example_inputs)

    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        call()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) / 2**20
    held = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes()
            for t in [*model.parameters(), *model.buffers(), *iter_tensors(example_inputs)]}
    live = _LiveBytes(set(held))
    with live:
        call()
    return (sum(held.values()) + live.peak) / 2**20


class _LiveBytes(TorchDispatchMode):
    """Bytes of the tensor storages created under this mode that are alive, and their peak."""

    def __init__(self, known: set[int]) -> None:
        super().__init__()
        self.known = known
        self.refs: dict[int, int] = {}
        self.size: dict[int, int] = {}
        self.current = self.peak = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if not isinstance(t, torch.Tensor):
                continue
            storage = t.untyped_storage()
            key, n = storage.data_ptr(), storage.nbytes()
            if not n or key in self.known:
                continue
            if key in self.refs:
                self.refs[key] += 1
            else:
                self.refs[key], self.size[key] = 1, n
                self.current += n
                self.peak = max(self.peak, self.current)
            weakref.finalize(t, self._release, key)
        return out

    def _release(self, key: int) -> None:
        self.refs[key] -= 1
        if not self.refs[key]:
            del self.refs[key]
            self.current -= self.size.pop(key)
