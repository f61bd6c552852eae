"""Pruners. ``BasePruningFunc`` is the protocol for customized layers."""

from __future__ import annotations

from .function import BasePruningFunc

__all__ = ["BasePruningFunc"]
