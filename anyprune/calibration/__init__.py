"""Calibration: what the model's layers see on a little real data, for criteria and reconstruction.

Contract. For every *consumer* (a layer that sums over an input dim: linear, non-grouped conv, Hugging Face
``Conv1D``; see :mod:`~anyprune.calibration.consumers`) statistics of its input features are accumulated over
the calibration batches: the number of rows, their sum and their Gram matrix ``sum x x^T``, in float64
(products per batch in the input's dtype, float32 for half-precision models). A group's units map onto a
consumer's features through the dimension graph (``group.table.index_of``), so the same statistics serve
plain channels, concatenations, residual streams, heads, head_dim positions and flatten -> linear blocks.

Memory stays bounded: with a chain of blocks (decoder layers, ViT blocks, a CNN's ``features``), the data
runs one block at a time and only that block's statistics are held (:func:`stream_statistics`).

Example:
    >>> import torch, anyprune as tp
    >>> model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    >>> x = torch.randn(16, 3)
    >>> stats = tp.calibration.collect(model, [x])
    >>> h = torch.relu(model[0](x)).double()
    >>> torch.allclose(stats[model[2]].gram, h.T @ h), stats[model[2]].rows
    (True, 16)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from torch import nn

from ..errors import ConfigError
from .consumers import ConsumerSpec, consumer_spec, input_features, weight_matrix, write_weight_matrix
from .runner import BlockRunner, calibration_batches, find_blocks, stream_statistics
from .stats import InputStats, StatsCollector

__all__ = [
    "BlockRunner",
    "ConsumerSpec",
    "InputStats",
    "StatsCollector",
    "calibration_batches",
    "collect",
    "consumer_spec",
    "find_blocks",
    "input_features",
    "stream_statistics",
    "weight_matrix",
    "write_weight_matrix",
]


def collect(model: nn.Module, data: Any, modules: Iterable[nn.Module] | None = None, *,
            forward_fn: Callable | None = None, batch_size: int = 8, max_features: int = 8192,
            progress: bool = False) -> dict[nn.Module, InputStats]:
    """Input statistics of every consumer layer (or of ``modules``) over the calibration data, in one pass.

    Args:
        model: the model (run in ``eval()`` mode and under ``no_grad``; its modes are restored).
        data: calibration data (see :func:`calibration_batches`).
        modules: the consumers to record (default: every layer with a
            :func:`~anyprune.calibration.consumers.consumer_spec`).
        forward_fn: ``forward_fn(model, batch)`` instead of the default call.
        batch_size: rows per batch when ``data`` is one tensor.
        max_features: layers with more input features are skipped.
        progress: show a progress bar.

    Returns:
        ``{module: InputStats}``; consumers that share an input share one object.
    """
    if not isinstance(model, nn.Module):
        raise ConfigError(f"collect expects the model (an nn.Module), got {type(model).__name__}")
    batches = calibration_batches(data, batch_size)
    chosen = list(model.modules()) if modules is None else list(modules)
    out: dict[nn.Module, InputStats] = {}
    with evaluating(model):
        stream_statistics(model, batches, chosen, on_stats=lambda st, _k: out.update(st), forward_fn=forward_fn,
                          blocks=None, max_features=max_features, show_progress=progress)
    return out


class evaluating:
    """Context: the model in ``eval()`` mode under ``torch.no_grad()``; training flags restored after."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self._flags: dict[nn.Module, bool] = {}

    def __enter__(self) -> nn.Module:
        import torch

        self._flags = {m: m.training for m in self.model.modules()}
        self._grad = torch.is_grad_enabled()
        torch.set_grad_enabled(False)
        self.model.eval()
        return self.model

    def __exit__(self, *exc: Any) -> None:
        import torch

        torch.set_grad_enabled(self._grad)
        for m, flag in self._flags.items():
            m.training = flag
