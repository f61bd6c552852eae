"""Batch-norm statistics re-estimated on calibration data."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ..calibration import calibration_batches
from ..calibration.runner import progress, run_batch
from ..errors import ConfigError

__all__ = ["reestimate_batchnorm"]


def reestimate_batchnorm(model: nn.Module, data: Any, forward_fn: Callable | None = None, batch_size: int = 8,
                         show_progress: bool = False) -> int:
    """Recompute ``running_mean`` / ``running_var`` of every batch-norm layer as the average over the batches.

    Only the batch-norm layers run in training mode (dropout and the rest stay in eval mode); no gradient is
    computed and no parameter changes. Momentum, modes and the ``num_batches_tracked`` counters are restored
    to what they were; the statistics are replaced on success only.

    Args:
        model: the model.
        data: calibration data (see :func:`anyprune.calibration.calibration_batches`).
        forward_fn: ``forward_fn(model, batch)`` instead of the default call.
        batch_size: rows per batch when ``data`` is one tensor.
        show_progress: show a progress bar.

    Returns:
        the number of batch-norm layers re-estimated (0 if the model has none).

    Example:
        >>> import torch
        >>> model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.BatchNorm2d(4)).eval()
        >>> x = torch.randn(16, 3, 5, 5) * 3 + 1
        >>> reestimate_batchnorm(model, [x])
        1
        >>> y = model[0](x)
        >>> torch.allclose(model[1].running_mean, y.mean((0, 2, 3)), atol=1e-5)
        True
    """
    if not isinstance(model, nn.Module):
        raise ConfigError(f"reestimate_batchnorm expects the model (an nn.Module), got {type(model).__name__}")
    bns: list[Any] = [m for m in model.modules()
                      if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not bns:
        return 0
    batches = calibration_batches(data, batch_size)
    flags = {m: m.training for m in model.modules()}
    saved = [(m.momentum, m.running_mean.clone(), m.running_var.clone(),  # type: ignore[union-attr]
              None if m.num_batches_tracked is None else m.num_batches_tracked.clone()) for m in bns]
    ok = False
    try:
        model.eval()
        for m in bns:
            m.reset_running_stats()
            m.momentum = None  # cumulative moving average: the mean over the batches
            m.train()
        with torch.no_grad():
            for j, batch in enumerate(progress(batches, len(batches), "batch-norm statistics", show_progress)):
                run_batch(model, batch, forward_fn, j)
        ok = True
    finally:
        for m, (momentum, mean, var, count) in zip(bns, saved):
            m.momentum = momentum
            if count is not None:
                m.num_batches_tracked.copy_(count)  # type: ignore[union-attr]
            if not ok:
                m.running_mean.copy_(mean)  # type: ignore[union-attr]
                m.running_var.copy_(var)  # type: ignore[union-attr]
        for m, flag in flags.items():
            m.training = flag
    return len(bns)
