"""Utilities: operation and parameter counts."""

from __future__ import annotations

from .flops import count_ops_and_params, count_params

__all__ = ["count_ops_and_params", "count_params"]
