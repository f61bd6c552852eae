"""Gradient criteria: first-order Taylor (from ``.grad``) and diagonal Hessian (accumulated squared gradients)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError, PruningError
from .base import (
    GroupReduction,
    Normalizer,
    check_group,
    check_group_reduction,
    check_normalizer,
    normalize,
    per_unit,
    reduce_group,
    rows_of,
    unit_slices,
)

__all__ = ["GroupTaylorImportance", "GroupHessianImportance"]


class GroupTaylorImportance:
    """First-order Taylor: the loss change ``|w * dL/dw|`` of removing each unit's weights.

    Run your loss's ``backward()`` first; the score reads ``.grad``. Per slice and
    unit: ``sum |w * g|`` over the unit's positions, or ``|sum w * g|`` with
    ``multivariable=True`` (the joint first-order change of removing the unit).

    Args:
        group_reduction: how slices combine.
        normalizer: how a group's scores are normalised.
        multivariable: sum the signed products before taking the absolute value.
        bias: count bias vectors too.

    Raises:
        PruningError: when no parameter slice of the group has a gradient.
    """

    def __init__(self, group_reduction: GroupReduction = "mean", normalizer: Normalizer | Callable | None = "mean",
                 multivariable: bool = False, bias: bool = False) -> None:
        check_group_reduction(group_reduction)
        check_normalizer(normalizer)
        self.group_reduction = group_reduction
        self.normalizer = normalizer
        self.multivariable = multivariable
        self.bias = bias

    @torch.no_grad()
    def __call__(self, group: Any) -> torch.Tensor | None:
        per_slice = []
        found = False
        for s, idx in unit_slices(group, type(self).__name__, include_bias=self.bias):
            g = s.tensor.grad
            if g is None:
                continue
            found = True
            prod = rows_of(s.tensor, s.dim) * rows_of(g, s.dim)
            if self.multivariable:
                per_slice.append(per_unit(prod.sum(1), idx, group.size).abs())
            else:
                per_slice.append(per_unit(prod.abs().sum(1), idx, group.size))
        if not found:
            raise PruningError(
                f"{type(self).__name__} needs gradients, but no parameter of the group rooted at "
                f"{getattr(group.root, 'fqn', group.root)} has a .grad: run loss.backward() before pruning"
            )
        return normalize(reduce_group(per_slice, self.group_reduction), self.normalizer)


class GroupHessianImportance:
    """Diagonal second-order (OBD) criterion: ``sum w^2 * H`` with ``H`` the mean squared gradient.

    ``H`` (the Fisher approximation of the Hessian's diagonal) is accumulated over
    samples: call :meth:`zero_grad`, then for each sample (or small batch) run
    ``loss.backward()`` and :meth:`accumulate_grad` ``(model)``; then prune.

    Args:
        group_reduction: how slices combine.
        normalizer: how a group's scores are normalised.
        bias: count bias vectors too.

    Example:
        >>> import torch, anyprune as tp
        >>> model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
        >>> imp = tp.importance.GroupHessianImportance(normalizer=None, group_reduction="sum")
        >>> for x in torch.randn(5, 1, 3):
        ...     model.zero_grad()
        ...     model(x).sum().backward()
        ...     imp.accumulate_grad(model)
        >>> dg = tp.DependencyGraph().build_dependency(model, torch.randn(1, 3))
        >>> imp(dg.groups()[0]).shape
        torch.Size([4])
    """

    def __init__(self, group_reduction: GroupReduction = "mean", normalizer: Normalizer | Callable | None = "mean",
                 bias: bool = False) -> None:
        check_group_reduction(group_reduction)
        check_normalizer(normalizer)
        self.group_reduction = group_reduction
        self.normalizer = normalizer
        self.bias = bias
        self._acc: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self._count: dict[int, int] = {}

    def zero_grad(self) -> None:
        """Forget the accumulated squared gradients (call it again after pruning: shapes change)."""
        self._acc.clear()
        self._count.clear()

    @torch.no_grad()
    def accumulate_grad(self, model: nn.Module) -> None:
        """Add ``p.grad ** 2`` of every parameter of ``model`` that has a gradient."""
        if not isinstance(model, nn.Module):
            raise ConfigError(f"accumulate_grad expects the model (an nn.Module), got {type(model).__name__}")
        for p in model.parameters():
            if p.grad is None:
                continue
            key = id(p)
            sq = p.grad.detach().float().pow(2)
            if key in self._acc:
                _, acc = self._acc[key]
                if acc.shape != sq.shape:
                    raise PruningError(
                        f"a parameter changed shape {tuple(acc.shape)} -> {tuple(sq.shape)} since the last "
                        "accumulate_grad: call zero_grad() after pruning and accumulate again"
                    )
                acc.add_(sq)
                self._count[key] += 1
            else:
                self._acc[key] = (p, sq.clone())
                self._count[key] = 1

    @torch.no_grad()
    def __call__(self, group: Any) -> torch.Tensor | None:
        check_group(group, type(self).__name__)
        if not self._acc:
            raise PruningError(
                "GroupHessianImportance has no accumulated gradients: for each sample run loss.backward() "
                "and imp.accumulate_grad(model) before pruning"
            )
        per_slice = []
        for s, idx in unit_slices(group, type(self).__name__, include_bias=self.bias):
            entry = self._acc.get(id(s.tensor))
            if entry is None or entry[0] is not s.tensor:
                continue
            h = entry[1] / self._count[id(s.tensor)]
            if h.shape != s.tensor.shape:
                raise PruningError(
                    f"{s.fqn} has shape {tuple(s.tensor.shape)} but its accumulated gradients {tuple(h.shape)}: "
                    "call zero_grad() after pruning and accumulate again"
                )
            w = rows_of(s.tensor, s.dim)
            per_slice.append(per_unit((w.pow(2) * rows_of(h, s.dim)).sum(1), idx, group.size))
        if not per_slice:
            return None
        return normalize(reduce_group(per_slice, self.group_reduction), self.normalizer)
