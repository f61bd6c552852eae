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
                         layer_wise: bool = False) -> Any:
    """``(MACs, params)`` of one forward pass on ``example_inputs``.

    MACs are half the FLOPs that ``torch.utils.flop_counter`` attributes to
    matrix products and convolutions (elementwise ops are not counted, as in
    the usual MAC convention). Works for models on the ``meta`` device.

    Args:
        model: the model, left untouched: it runs in its current mode, and its ``training`` flags,
            ``requires_grad`` flags and buffers (batch-norm statistics) are restored afterwards.
        example_inputs: a tensor, a tuple (unpacked), a list (one argument) or a dict (keywords).
        forward_fn: ``forward_fn(model, example_inputs)`` instead of the default call.
        layer_wise: also return ``{module: MACs}`` (each module's total, its children included) and
            ``{module: params}`` (its own and its children's); both also answer by qualified name.

    Returns:
        ``(macs, params)``, or ``(macs, params, layer_macs, layer_params)`` with ``layer_wise=True``.

    Example:
        >>> import torch
        >>> macs, params = count_ops_and_params(torch.nn.Linear(8, 4), torch.randn(2, 8))
        >>> macs, params
        (64, 36)
    """
    if not isinstance(model, torch.nn.Module):
        raise ConfigError(f"count_ops_and_params: model must be a torch.nn.Module, got {type(model).__name__}")
    counter = FlopCounterMode(display=False)
    training = {m: m.training for m in model.modules()}
    # nothing needs gradients here; parameters that require them make the counter's module tracker hook
    # autograd, which fails on parameters passed straight into a block (CaiT's class token, PiT)
    grads = [(p, p.requires_grad) for p in model.parameters()]
    buffers = [(b, b.detach().clone()) for b in model.buffers() if not b.is_meta]
    try:
        for p, _ in grads:
            p.requires_grad_(False)
        with torch.no_grad(), counter:
            run_model(model, example_inputs, forward_fn)
    except Exception as err:
        raise model_failed(model, err) from err
    finally:
        for p, flag in grads:
            p.requires_grad_(flag)
        for m, flag in training.items():
            m.training = flag
        with torch.no_grad():  # a forward in training mode updates batch-norm statistics: put them back
            for b, saved in buffers:
                if b.shape == saved.shape:
                    b.copy_(saved)
    macs, params = counter.get_total_flops() // 2, count_params(model)
    if not layer_wise:
        return macs, params
    root = type(model).__name__
    layer_macs: dict[str, int] = {}
    for key, ops in counter.get_flop_counts().items():
        if key == "Global":
            continue
        fqn = key[len(root) + 1:] if key.startswith(root + ".") else ("" if key == root else key)
        layer_macs[fqn] = sum(ops.values()) // 2
    layer_params = {name: sum(p.numel() for p in m.parameters()) for name, m in model.named_modules()}
    modules = dict(model.named_modules())
    return (macs, params, ByModule(modules, {modules[n]: v for n, v in layer_macs.items() if n in modules}),
            ByModule(modules, {modules[n]: v for n, v in layer_params.items()}))


class ByModule(dict):
    """``{module: count}`` (as the seed returns) that also answers by qualified name (``d["layer1.0"]``)."""

    def __init__(self, modules: dict[str, torch.nn.Module], data: dict) -> None:
        super().__init__(data)
        self._modules = modules

    def _key(self, key: Any) -> Any:
        return self._modules.get(key, key) if isinstance(key, str) else key

    def __getitem__(self, key: Any) -> Any:
        return super().__getitem__(self._key(key))

    def __contains__(self, key: object) -> bool:
        return super().__contains__(self._key(key))

    def get(self, key: Any, default: Any = None) -> Any:
        return super().get(self._key(key), default)
