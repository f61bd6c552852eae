"""Streaming input statistics of consumer layers: count, sum and Gram matrix of the input features."""

from __future__ import annotations

import dataclasses
import weakref
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from .consumers import ConsumerSpec, consumer_spec, input_features

__all__ = ["InputStats", "StatsCollector"]



@dataclasses.dataclass(eq=False)
class InputStats:
    """What a consumer saw on the calibration data, accumulated in float64.

    Attributes:
        rows: number of feature rows (tokens, or output positions of a convolution).
        sum: ``[features]`` sum of the rows.
        gram: ``[features, features]`` sum of ``x x^T`` over the rows.
    """

    rows: int
    sum: torch.Tensor
    gram: torch.Tensor

    @classmethod
    def empty(cls, features: int) -> InputStats:
        return cls(0, torch.zeros(features, dtype=torch.float64),
                   torch.zeros(features, features, dtype=torch.float64))

    @property
    def features(self) -> int:
        return int(self.sum.numel())

    def add(self, rows: torch.Tensor) -> None:
        """Accumulate ``rows`` (``[n, features]``): products in the rows' dtype (float32 or float64),
        sums in float64."""
        x = rows.detach()
        if not x.is_floating_point() or x.dtype in (torch.float16, torch.bfloat16):
            x = x.float()
        self.rows += int(x.shape[0])
        self.sum += x.sum(0, dtype=torch.float64).cpu()
        self.gram += (x.t() @ x).to(device="cpu", dtype=torch.float64)

    @property
    def mean(self) -> torch.Tensor:
        """Per-feature mean."""
        return self.sum / max(self.rows, 1)

    @property
    def second_moment(self) -> torch.Tensor:
        """``E[x x^T]`` (the Gram matrix per row)."""
        return self.gram / max(self.rows, 1)

    @property
    def variance(self) -> torch.Tensor:
        """Per-feature variance (population)."""
        return (self.gram.diagonal() / max(self.rows, 1) - self.mean.square()).clamp_min(0)


class StatsCollector:
    """Forward pre-hooks that accumulate :class:`InputStats` for chosen consumer modules.

    Consumers reading the same input tensor in one forward pass (q/k/v projections, gate/up projections)
    share one :class:`InputStats` object, so the Gram matrix is computed and stored once.

    Args:
        modules: the consumer modules (those without a :func:`~anyprune.calibration.consumers.consumer_spec`
            are skipped).
        max_features: consumers with more input features than this (e.g. a 3x3 conv over 1024 channels:
            9216) are skipped, as their Gram matrix would not fit a sensible memory budget.
    """

    def __init__(self, modules: Iterable[nn.Module], max_features: int = 8192) -> None:
        self.stats: dict[nn.Module, InputStats] = {}
        self.specs: dict[nn.Module, ConsumerSpec] = {}
        self.skipped: dict[nn.Module, str] = {}
        for m in modules:
            spec = consumer_spec(m)
            if spec is None:
                continue
            if spec.features(m) > max_features:
                self.skipped[m] = f"{spec.features(m)} input features > max_features={max_features}"
                continue
            self.specs[m] = spec
        self._handles: list[Any] = []
        self._seen: dict[tuple, tuple[weakref.ref, InputStats]] = {}

    def __enter__(self) -> StatsCollector:
        for m in self.specs:
            self._handles.append(m.register_forward_pre_hook(self._hook))
        return self

    def __exit__(self, *exc: Any) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self._seen.clear()

    def new_batch(self) -> None:
        """Forget which inputs were seen (call between forward passes)."""
        self._seen.clear()

    def _hook(self, module: nn.Module, args: tuple) -> None:
        if not args or not isinstance(args[0], torch.Tensor):
            return
        x = args[0]
        spec = self.specs[module]
        key = (id(x), x._version, spec, getattr(module, "kernel_size", None), getattr(module, "stride", None),
               getattr(module, "padding", None), getattr(module, "dilation", None))
        mine = self.stats.get(module)
        entry = self._seen.get(key)
        seen = entry[1] if entry is not None and entry[0]() is x else None  # a freed tensor's id can be reused
        if seen is not None and (mine is None or mine is seen):
            self.stats[module] = seen
            return
        feats = input_features(module, spec, x)
        if mine is None:
            mine = self.stats[module] = InputStats.empty(feats.shape[1])
        if feats.shape[1] != mine.features:
            raise RuntimeError(f"{type(module).__name__} got {feats.shape[1]} input features, "
                               f"{mine.features} before; the model changed during calibration")
        mine.add(feats)
        self._seen[key] = (weakref.ref(x), mine)
