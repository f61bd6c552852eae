"""Importance criteria: a callable that takes a group and returns one score per prunable unit."""

from __future__ import annotations

from .magnitude import GroupMagnitudeImportance

__all__ = ["GroupMagnitudeImportance"]
