"""Pruners: choose which indices of which groups to remove, and remove them.

``MetaPruner`` (alias ``BasePruner``) scores groups with an importance
criterion and prunes them to channel ratios or a MACs / parameter budget;
``BNScalePruner``, ``GroupNormPruner`` and ``GrowingRegPruner`` add sparse-
training regularisers. ``PruneConfig`` + ``prune_`` is the one-call API.
``BasePruningFunc`` is the protocol for customized layers.
"""

from __future__ import annotations

from .algorithms import BNScalePruner, GroupNormPruner, GrowingRegPruner, MagnitudePruner
from .base import BasePruner, MetaPruner
from .budget import PruneResult
from .config import PruneConfig, prune_
from .function import BasePruningFunc
from .schedule import linear_scheduler

__all__ = [
    "BasePruningFunc",
    "MetaPruner",
    "BasePruner",
    "MagnitudePruner",
    "BNScalePruner",
    "GroupNormPruner",
    "GrowingRegPruner",
    "PruneConfig",
    "PruneResult",
    "prune_",
    "linear_scheduler",
]
