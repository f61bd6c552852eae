"""Tracing: record one forward pass as an op graph of values and calls."""

from __future__ import annotations

from .opgraph import Call, OpGraph, Value
from .recorder import run_model, trace

__all__ = ["Call", "OpGraph", "Value", "run_model", "trace"]
