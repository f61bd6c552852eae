"""Random and geometric-median (FPGM) criteria."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from .base import (
    GroupReduction,
    Normalizer,
    check_group,
    check_group_reduction,
    check_normalizer,
    check_p,
    normalize,
    reduce_group,
    rows_of,
    unit_slices,
)

__all__ = ["RandomImportance", "FPGMImportance"]


class RandomImportance:
    """Uniform random scores: the baseline every criterion should beat.

    Args:
        seed: seed of a private generator (``None``: torch's global generator).
    """

    def __init__(self, seed: int | None = None) -> None:
        self._gen = None if seed is None else torch.Generator().manual_seed(int(seed))

    def __call__(self, group: Any) -> torch.Tensor:
        check_group(group, "RandomImportance")
        return torch.rand(group.size, generator=self._gen, dtype=torch.float64)


def unit_matrix(rows: torch.Tensor, index: torch.Tensor, size: int) -> torch.Tensor:
    """One feature row per unit: the positions of each unit concatenated (summed if units own unequal counts)."""
    keep = index >= 0
    idx, rows = index[keep], rows[keep]
    counts = torch.bincount(idx, minlength=size)
    if idx.numel() and bool((counts == counts[0]).all()) and int(counts[0]) > 0:
        order = torch.argsort(idx, stable=True)
        return rows[order].reshape(size, -1)
    return torch.zeros(size, rows.shape[1], dtype=rows.dtype).index_add_(0, idx, rows)


class FPGMImportance:
    """Filter pruning via geometric median: a unit close to all others is redundant.

    Per slice, each unit's weights form a vector; its score is the sum of its
    Lp distances to the other units' vectors. Slice scores are reduced and
    normalised like :class:`GroupMagnitudeImportance`.

    Args:
        p: the distance's norm.
        group_reduction: how slices combine.
        normalizer: how a group's scores are normalised.
    """

    def __init__(self, p: float = 2, group_reduction: GroupReduction = "mean",
                 normalizer: Normalizer | Callable | None = "mean") -> None:
        check_p(p)
        check_group_reduction(group_reduction)
        check_normalizer(normalizer)
        self.p = p
        self.group_reduction = group_reduction
        self.normalizer = normalizer

    @torch.no_grad()
    def __call__(self, group: Any) -> torch.Tensor | None:
        per_slice = []
        for s, idx in unit_slices(group, "FPGMImportance"):
            m = unit_matrix(rows_of(s.tensor, s.dim).double().cpu(), idx, group.size)
            per_slice.append(torch.cdist(m[None], m[None], p=self.p)[0].sum(1))
        if not per_slice:
            return None
        return normalize(reduce_group(per_slice, self.group_reduction), self.normalizer)
