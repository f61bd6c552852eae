"""Utilities: operation and parameter counts, latency."""

from __future__ import annotations

from . import benchmark
from .benchmark import measure_latency
from .flops import count_ops_and_params, count_params

__all__ = ["benchmark", "count_ops_and_params", "count_params", "measure_latency"]
