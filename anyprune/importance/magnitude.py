"""Magnitude criteria: the Lp norm of every slice a unit of the group removes (and BN scales, LAMP)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError
from .base import (
    GroupReduction,
    Normalizer,
    check_group_reduction,
    check_normalizer,
    check_p,
    normalize,
    per_unit,
    reduce_group,
    unit_slices,
)

__all__ = ["GroupMagnitudeImportance", "BNScaleImportance", "LAMPImportance"]


class GroupMagnitudeImportance:
    """Group magnitude: per slice, ``sum |w|^p`` over the positions of each unit; then reduced and normalised.

    For a one-atom group with unit ``u`` and parameter slices ``s`` (producers'
    rows, biases if ``bias=True``, norm weights, consumers' columns), the score is
    ``normalize(reduce_s(sum_{positions of u in s} |w|^p))``. Buffers (running
    statistics) are not counted. ``GroupNormImportance`` and ``MagnitudeImportance``
    are the same class.

    Args:
        p: the norm's exponent (``p > 0``): 1 for L1, 2 for L2.
        group_reduction: how slices combine: ``mean``, ``sum``, ``max``, ``prod`` or ``first`` (root only).
        normalizer: ``mean``, ``max``, ``sum``, ``standarization``, ``gaussian``, ``lamp``, ``None`` or a callable.
        bias: count bias vectors too.
        target_types: count only slices whose module is one of these types (``None``: all).

    Example:
        >>> import torch, anyprune as tp
        >>> model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
        >>> dg = tp.DependencyGraph().build_dependency(model, torch.randn(1, 3))
        >>> imp = tp.importance.GroupMagnitudeImportance(p=2, group_reduction="sum", normalizer=None)
        >>> scores = imp(dg.groups()[0])
        >>> expected = model[0].weight.pow(2).sum(1) + model[2].weight.pow(2).sum(0)
        >>> torch.allclose(scores, expected.double())
        True
    """

    def __init__(self, p: float = 2, group_reduction: GroupReduction = "mean",
                 normalizer: Normalizer | Callable | None = "mean", bias: bool = False,
                 target_types: Sequence[type] | None = None) -> None:
        check_p(p, ' (1 for L1, 2 for L2)')
        check_group_reduction(group_reduction)
        check_normalizer(normalizer)
        if target_types is not None:
            target_types = tuple(target_types)
            if not all(isinstance(t, type) for t in target_types):
                raise ConfigError(f"target_types must be module classes, got {target_types!r}")
        self.p = p
        self.group_reduction = group_reduction
        self.normalizer = normalizer
        self.bias = bias
        self.target_types: tuple[type, ...] | None = target_types

    def _local(self, t: torch.Tensor, dim: int) -> torch.Tensor:
        """``sum |w|^p`` over every dim but ``dim`` (one fused norm, no copy of ``t``)."""
        t = t.detach()
        if t.dtype not in (torch.float32, torch.float64):
            t = t.float()
        if t.dim() == 1:
            return t.abs().pow(self.p)
        # reduce the trailing (contiguous) dims first, then the leading ones: much faster than one strided pass
        if dim + 1 < t.dim():
            t = torch.linalg.vector_norm(t, ord=self.p, dim=list(range(dim + 1, t.dim()))).pow(self.p)
            return t.sum(list(range(dim))) if dim > 0 else t
        # ``dim`` is the last one: a strided norm over the leading dims is slow; an elementwise power and a
        # plain sum vectorise along the contiguous dim (several times faster on linear weights' columns)
        powered = t.square() if self.p == 2 else (t.abs() if self.p == 1 else t.abs().pow(self.p))
        return powered.sum(list(range(dim)))

    @torch.no_grad()
    def __call__(self, group: Any) -> torch.Tensor | None:
        per_slice = [per_unit(self._local(s.tensor, s.dim), idx, group.size)
                     for s, idx in unit_slices(group, type(self).__name__, include_bias=self.bias,
                                               module_types=self.target_types)]
        if not per_slice:
            return None
        return normalize(reduce_group(per_slice, self.group_reduction), self.normalizer)


class BNScaleImportance(GroupMagnitudeImportance):
    """``|gamma|`` of the batch-norm layers in the group (Network Slimming); ``None`` for groups without one.

    Example:
        >>> import torch, anyprune as tp
        >>> model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.BatchNorm2d(4), torch.nn.Conv2d(4, 2, 1))
        >>> with torch.no_grad():
        ...     _ = model[1].weight.copy_(torch.tensor([0.5, -2.0, 1.0, -0.25]))
        >>> dg = tp.DependencyGraph().build_dependency(model, torch.randn(1, 3, 4, 4))
        >>> tp.importance.BNScaleImportance()(dg.groups()[0]).tolist()
        [0.5, 2.0, 1.0, 0.25]
    """

    def __init__(self, group_reduction: GroupReduction = "mean",
                 normalizer: Normalizer | Callable | None = None) -> None:
        super().__init__(p=1, group_reduction=group_reduction, normalizer=normalizer,
                         target_types=(nn.modules.batchnorm._BatchNorm,))


class LAMPImportance(GroupMagnitudeImportance):
    """Layer-adaptive magnitude (LAMP): group magnitude with the ``lamp`` normalizer.

    Each unit's score is its magnitude divided by the sum of the magnitudes of
    all units that are at least as large, which makes scores comparable across
    groups for global ranking.
    """

    def __init__(self, p: float = 2, group_reduction: GroupReduction = "mean", bias: bool = False) -> None:
        super().__init__(p=p, group_reduction=group_reduction, normalizer="lamp", bias=bias)
