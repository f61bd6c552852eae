"""Importance criteria: a callable that takes a group and returns one score per prunable index.

The contract (:class:`Importance`): ``imp(group)`` gets a one-atom group and
returns ``group.size`` scores (higher means keep), or ``None`` to leave the group
alone. Scores are per atom index, so they hold for plain layers as well as for
concatenations, residual streams, grouped convs and factored projections.
Group-level criteria combine every parameter slice of the group with a
``group_reduction`` and make groups comparable with a ``normalizer``.
"""

from __future__ import annotations

from .activation import ActivationImportance
from .base import Importance
from .calibrated import CalibratedImportance, FluctuationImportance, OBSImportance, WandaSPImportance
from .gradient import GroupHessianImportance, GroupTaylorImportance, OBDCImportance
from .magnitude import BNScaleImportance, GroupMagnitudeImportance, LAMPImportance
from .other import FPGMImportance, RandomImportance

# the seed's names for the same criteria (all permanent)
GroupNormImportance = GroupMagnitudeImportance
MagnitudeImportance = GroupMagnitudeImportance
TaylorImportance = GroupTaylorImportance
HessianImportance = GroupHessianImportance

__all__ = [
    "Importance",
    "GroupMagnitudeImportance",
    "GroupNormImportance",
    "MagnitudeImportance",
    "BNScaleImportance",
    "LAMPImportance",
    "FPGMImportance",
    "RandomImportance",
    "GroupTaylorImportance",
    "TaylorImportance",
    "GroupHessianImportance",
    "HessianImportance",
    "OBDCImportance",
    "ActivationImportance",
    "CalibratedImportance",
    "WandaSPImportance",
    "FluctuationImportance",
    "OBSImportance",
]
