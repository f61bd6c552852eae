"""Utilities: operation and parameter counts, latency, pictures of the dependency graph."""

from __future__ import annotations

from typing import Any

import torch

from . import benchmark
from .benchmark import measure_fps, measure_latency, measure_memory, measure_throughput
from .draw import draw_computational_graph, draw_dependency_graph, draw_groups, print_tool
from .flops import count_ops_and_params, count_params

__all__ = ["benchmark", "count_ops_and_params", "count_params", "draw_computational_graph", "draw_dependency_graph",
           "draw_groups", "flatten_as_list", "measure_fps", "measure_latency", "measure_memory", "measure_throughput",
           "print_tool"]


def flatten_as_list(obj: Any) -> list[torch.Tensor]:
    """Every tensor nested in ``obj`` (tuples, lists, dicts, dataclasses, model outputs), in order.

    Example:
        >>> import torch
        >>> [t.shape for t in flatten_as_list({"a": torch.zeros(2), "b": (torch.ones(3), [torch.ones(1)])})]
        [torch.Size([2]), torch.Size([3]), torch.Size([1])]
    """
    from ..trace.opgraph import iter_tensors

    return iter_tensors(obj)
