"""Dimensions: layouts over atoms, the rules that couple them, and the graph they form."""

from __future__ import annotations

from . import rules
from .dimgraph import Binding, DimGraph, RuleContext, build_dim_graph
from .layout import AtomTable
from .rules import register_dim_rule

__all__ = ["AtomTable", "Binding", "DimGraph", "RuleContext", "build_dim_graph", "register_dim_rule", "rules"]
