"""Group magnitude importance: the Lp norm of every slice a unit of the group removes."""

from __future__ import annotations

import torch

from ..errors import PruningError

__all__ = ["GroupMagnitudeImportance"]


class GroupMagnitudeImportance:
    """Score each unit of a one-atom group by ``sum over slices of |w|^p`` (then ``^(1/p)``).

    Every parameter slice of the group contributes: producers' rows, biases, norm
    weights and consumers' columns, so the score measures all that pruning the
    unit removes. Buffers (running statistics) are not counted.

    Example:
        >>> import torch, anyprune as tp
        >>> model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
        >>> dg = tp.DependencyGraph().build_dependency(model, torch.randn(1, 3))
        >>> scores = tp.importance.GroupMagnitudeImportance(p=2)(dg.groups()[0])
        >>> scores.shape
        torch.Size([4])
    """

    def __init__(self, p: float = 2) -> None:
        if not p > 0:
            raise ValueError(f"p must be > 0, got {p}")
        self.p = p

    @torch.no_grad()
    def __call__(self, group) -> torch.Tensor:
        if len(group.atoms) != 1:
            raise PruningError("GroupMagnitudeImportance scores one-atom groups (from get_all_groups)")
        a = group.atoms[0]
        table = group.table
        scores = torch.zeros(table.atom_size(a), dtype=torch.float64)
        for s in group.slices:
            if not hasattr(s, "tensor") or not isinstance(s.tensor, torch.nn.Parameter):
                continue
            t = s.tensor.detach()
            if t.is_meta:
                continue
            idx = table.index_of(s.layout, a)
            rows = t.movedim(s.dim, 0).reshape(t.shape[s.dim], -1)
            if not rows.is_floating_point() or rows.dtype in (torch.float16, torch.bfloat16):
                rows = rows.float()
            per_pos = torch.linalg.vector_norm(rows, ord=self.p, dim=1).double().cpu().pow(self.p)
            keep = idx >= 0
            scores.index_add_(0, idx[keep], per_pos[keep])
        return scores.pow(1.0 / self.p)
