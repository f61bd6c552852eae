"""Groups: coupled parameter slices that are pruned together."""

from __future__ import annotations

from .group import Dependency, Group, GroupIndex, Node, ParamSlice

__all__ = ["Dependency", "Group", "GroupIndex", "Node", "ParamSlice"]
