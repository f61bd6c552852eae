"""MACs and parameter counts, from ``torch.utils.flop_counter`` (no per-layer table)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from ..errors import ConfigError
from ..trace.recorder import model_failed, run_model

__all__ = ["count_ops_and_params", "count_params"]


def count_params(model: torch.nn.Module) -> int:
    """Number of distinct parameter elements (tied weights counted once)."""
    return sum(p.numel() for p in model.parameters())


def count_ops_and_params(model: torch.nn.Module, example_inputs: Any, forward_fn: Callable | None = None,
                         layer_wise: bool = False) -> tuple[int, int]:
    """``(MACs, params)`` of one forward pass on ``example_inputs``.

    MACs are half the FLOPs that ``torch.utils.flop_counter`` attributes to
    matrix products and convolutions (elementwise ops are not counted, as in
    the usual MAC convention). Works for models on the ``meta`` device.
    """
    if not isinstance(model, torch.nn.Module):
        raise ConfigError(f"count_ops_and_params: model must be a torch.nn.Module, got {type(model).__name__}")
    counter = FlopCounterMode(display=False)
    training = {m: m.training for m in model.modules()}
    try:
        with torch.no_grad(), counter:
            run_model(model, example_inputs, forward_fn)
    except Exception as err:
        raise model_failed(model, err) from err
    finally:
        for m, flag in training.items():
            m.training = flag
    return counter.get_total_flops() // 2, count_params(model)
