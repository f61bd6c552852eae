"""Cheap estimates of MACs and parameters after a pruning plan, for budget targets.

Parameters are exact: every parameter dim has a layout over atoms, so its size
after removing ``n[a]`` indices of each atom ``a`` is known without touching a
tensor. MACs are estimated per module from one measured forward pass
(``torch.utils.flop_counter``): a module's own MACs scale with the element
count of its largest parameter (exact for convolutions and linear layers, whose
MACs are ``weight.numel()`` times the output positions); MACs outside any
parameterised module (e.g. attention products) are kept constant. The pruner
measures the real result afterwards.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ..groups.group import ParamSlice
from ..trace.recorder import run_model

__all__ = ["CostModel", "PruneResult", "module_macs"]


@dataclasses.dataclass
class PruneResult:
    """What pruning achieved so far: ``*_before`` when the pruner was built, ``*_after`` after this step.

    MACs are measured (one forward pass each) only when a MACs target is set.
    """

    step: int
    groups_pruned: int
    indices_pruned: int
    params_before: int
    params_after: int
    macs_before: int | None = None
    macs_after: int | None = None
    target_macs: float | None = None
    target_params: float | None = None

    def __str__(self) -> str:
        parts = [f"step {self.step}: pruned {self.indices_pruned} indices in {self.groups_pruned} groups",
                 f"params {self.params_before:,} -> {self.params_after:,}"]
        if self.macs_before is not None and self.macs_after is not None:
            parts.append(f"MACs {self.macs_before:,} -> {self.macs_after:,}")
        if self.target_macs is not None:
            parts.append(f"target MACs {self.target_macs:,.0f}")
        if self.target_params is not None:
            parts.append(f"target params {self.target_params:,.0f}")
        return "; ".join(parts)


def module_macs(model: nn.Module, example_inputs: Any,
                forward_fn: Callable | None = None) -> tuple[int, dict[str, int]]:
    """``(total MACs, {module fqn: MACs of its own ops, children excluded})`` of one forward pass."""
    counter = FlopCounterMode(display=False)
    training = {m: m.training for m in model.modules()}
    try:
        with torch.no_grad(), counter:
            run_model(model, example_inputs, forward_fn)
    finally:
        for m, flag in training.items():
            m.training = flag
    total = counter.get_total_flops() // 2
    inclusive: dict[str, int] = {}
    for key, ops in counter.get_flop_counts().items():
        if key == "Global":
            continue
        fqn = key.split(".", 1)[1] if "." in key else ""
        inclusive[fqn] = sum(ops.values()) // 2
    own = dict(inclusive)
    for fqn, v in inclusive.items():
        if fqn:
            parent = fqn.rpartition(".")[0]
            if parent in own:
                own[parent] -= v
    return total, {k: v for k, v in own.items() if v > 0}


class CostModel:
    """Parameters and MACs of the model after removing ``counts[a]`` indices of each atom ``a``."""

    def __init__(self, dg: Any, macs: tuple[int, dict[str, int]] | None = None) -> None:
        self.table = dg.dims.atoms
        model = dg.model
        tensors: dict[int, tuple[torch.Tensor, dict[int, tuple]]] = {}
        for s in dg.index.slices:
            if isinstance(s, ParamSlice) and isinstance(s.tensor, nn.Parameter):
                tensors.setdefault(id(s.tensor), (s.tensor, {}))[1][s.dim] = s.layout
        self._tensors = list(tensors.values())
        self.params_now = sum(p.numel() for p in model.parameters())
        self._params_fixed = self.params_now - sum(t.numel() for t, _ in self._tensors)
        self.macs_now: int | None = None
        self._modules: list[tuple[int, torch.Tensor, dict[int, tuple]]] = []
        self._macs_fixed = 0
        if macs is not None:
            total, own = macs
            self.macs_now = total
            mods = dict(model.named_modules())
            scaled = 0
            for fqn, v in own.items():
                m = mods.get(fqn)
                params = [p for p in (m.parameters(recurse=False) if m is not None else ()) if id(p) in tensors]
                if not params:
                    continue
                p = max(params, key=lambda q: q.numel())
                self._modules.append((v, p, tensors[id(p)][1]))
                scaled += v
            self._macs_fixed = total - scaled

    def _numel_after(self, t: torch.Tensor, layouts: dict[int, tuple], counts: dict[int, int]) -> int:
        n = 1
        for d, size in enumerate(t.shape):
            lay = layouts.get(d)
            n *= self.table.size_after(lay, counts) if lay is not None else size
        return n

    def params(self, counts: dict[int, int]) -> int:
        return self._params_fixed + sum(self._numel_after(t, lays, counts) for t, lays in self._tensors)

    def macs(self, counts: dict[int, int]) -> float:
        if self.macs_now is None:
            return math.nan
        out = float(self._macs_fixed)
        for v, p, lays in self._modules:
            out += v * self._numel_after(p, lays, counts) / max(p.numel(), 1)
        return out
