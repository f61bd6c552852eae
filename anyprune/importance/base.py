"""The importance protocol, and the shared machinery that turns parameter slices into per-unit scores.

An importance is any callable ``imp(group) -> Tensor | None``. The group is a
one-atom group (as :meth:`anyprune.DependencyGraph.get_all_groups` and the
pruners hand out); the returned tensor holds one score per prunable index of
the group (``group.size`` scores, a higher score means *keep*). Returning
``None`` means "no opinion": the pruners leave that group alone.

Scores are computed per *atom index*, not per position of one layer: every
parameter dim of the group maps its positions onto the atom with
``group.table.index_of(slice.layout, atom)``, so the same code scores a plain
conv, the union of a concatenation, a residual stream, a grouped conv or a
factored (heads x head_dim) projection.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Literal, Protocol, runtime_checkable

import torch
from torch import nn

from ..errors import ConfigError, PruningError
from ..groups.group import Group, ParamSlice

__all__ = [
    "Importance",
    "GroupReduction",
    "Normalizer",
    "GROUP_REDUCTIONS",
    "NORMALIZERS",
    "unit_slices",
    "per_unit",
    "reduce_group",
    "normalize",
    "check_group_reduction",
    "check_normalizer",
]

GroupReduction = Literal["mean", "sum", "max", "prod", "first", "gate"]
Normalizer = Literal["mean", "max", "sum", "standarization", "gaussian", "lamp"]
GROUP_REDUCTIONS: tuple[str, ...] = ("mean", "sum", "max", "prod", "first", "gate")
NORMALIZERS: tuple[str, ...] = ("mean", "max", "sum", "standarization", "gaussian", "lamp")
_EPS = 1e-8


@runtime_checkable
class Importance(Protocol):
    """What a pruner needs from an importance criterion: one score per prunable index of a group.

    Any callable with this signature works; subclassing is not required.

    Example:
        >>> import torch, anyprune as tp
        >>> def first_layer_l1(group):  # a user criterion: L1 norm of the root slice only
        ...     s = group.root
        ...     rows = s.tensor.detach().movedim(s.dim, 0).flatten(1).abs().sum(1)
        ...     idx = group.table.index_of(s.layout, group.atoms[0])
        ...     return torch.zeros(group.size, dtype=torch.float64).index_add_(0, idx, rows.double())
        >>> model = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
        >>> pruner = tp.pruner.MetaPruner(model, torch.randn(1, 3), importance=first_layer_l1, pruning_ratio=0.25)
        >>> keep = first_layer_l1(pruner.DG.groups()[0]).argsort()[2:].sort().values  # the 6 best rows
        >>> expected = model[0].weight.detach()[keep]
        >>> _ = pruner.step()
        >>> model[0].out_features, torch.equal(model[0].weight.detach(), expected)
        (6, True)
    """

    def __call__(self, group: Any) -> torch.Tensor | None: ...


def check_p(p: Any, hint: str = "") -> None:
    """A norm order: a number > 0 (not a bool)."""
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not p > 0:
        raise ConfigError(f"p must be a number > 0{hint}, got {p!r}")


def check_group_reduction(value: Any) -> None:
    if value is not None and value not in GROUP_REDUCTIONS:
        raise ConfigError(f"group_reduction must be one of {list(GROUP_REDUCTIONS)} or None, got {value!r}")


def check_normalizer(value: Any) -> None:
    if value is not None and value not in NORMALIZERS and not callable(value):
        raise ConfigError(
            f"normalizer must be one of {list(NORMALIZERS)}, None, or a callable scores -> scores; got {value!r}"
        )


def check_group(group: Any, who: str) -> None:
    """Raise :class:`ConfigError` unless ``group`` is a :class:`~anyprune.groups.group.Group`."""
    if not isinstance(group, Group):
        raise ConfigError(
            f"{who} scores a Group (from DependencyGraph.get_all_groups, get_pruning_group or a pruner), "
            f"got {type(group).__name__}; e.g. imp(dg.get_all_groups()[0])"
        )


def _one_atom(group: Any, who: str) -> int:
    check_group(group, who)
    atoms = getattr(group, "atoms", None)
    if atoms is None or len(atoms) != 1:
        raise PruningError(
            f"{who} scores one-atom groups (from DependencyGraph.get_all_groups or a pruner); "
            f"got a group with {0 if atoms is None else len(atoms)} atoms"
        )
    return int(atoms[0])


def unit_slices(group: Any, who: str, *, include_bias: bool = True, module_types: tuple[type, ...] | None = None,
                allow_meta: bool = False) -> Iterator[tuple[ParamSlice, torch.Tensor]]:
    """Yield ``(slice, index)`` for every scorable parameter slice of a one-atom group, root first.

    ``index[k]`` is the atom index of position ``k`` of the slice's dim (``-1`` outside the atom).
    Buffers, non-floating and ``meta`` tensors are skipped (they carry no values to score); ``allow_meta`` keeps
    meta tensors (for criteria that read the values from elsewhere, e.g. a checkpoint on disk).
    """
    a = _one_atom(group, who)
    table = group.table
    root = group.root
    ordered = [root, *(s for s in group.slices if s is not root)]
    for s in ordered:
        if not isinstance(s, ParamSlice) or not isinstance(s.tensor, nn.Parameter):
            continue
        t = s.tensor
        if (t.is_meta and not allow_meta) or not t.is_floating_point():
            continue
        if not include_bias and s.attr == "bias":
            continue
        if module_types is not None and not isinstance(s.module, module_types):
            continue
        yield s, table.index_of(s.layout, a)


def rows_of(t: torch.Tensor, dim: int) -> torch.Tensor:
    """``t`` as ``[size of dim, everything else]`` in float32 (or float64 if ``t`` is)."""
    rows = t.detach().movedim(dim, 0).reshape(t.shape[dim], -1)
    if rows.dtype != torch.float64:
        rows = rows.float()
    return rows


def per_unit(per_position: torch.Tensor, index: torch.Tensor, size: int) -> torch.Tensor:
    """Sum per-position values into the atom's ``size`` units (float64, on the CPU)."""
    keep = index >= 0
    out = torch.zeros(size, dtype=torch.float64)
    return out.index_add_(0, index[keep], per_position.detach().double().cpu()[keep])


def reduce_group(per_slice: list[torch.Tensor], how: GroupReduction | str | None) -> torch.Tensor:
    """Combine the per-slice unit scores of a group: ``first`` is the root slice's scores, ``gate`` the last
    slice's, ``None`` no reduction (a ``[slices, units]`` tensor, for analysis; pruners need one score per
    unit)."""
    if how == "first":
        return per_slice[0]
    if how == "gate":
        return per_slice[-1]
    stacked = torch.stack(per_slice)
    if how is None:
        return stacked
    if how == "mean":
        return stacked.mean(0)
    if how == "sum":
        return stacked.sum(0)
    if how == "max":
        return stacked.max(0).values
    if how == "prod":
        return stacked.prod(0)
    raise ConfigError(f"group_reduction must be one of {list(GROUP_REDUCTIONS)}, got {how!r}")


def normalize(scores: torch.Tensor, how: Normalizer | Callable | str | None) -> torch.Tensor:
    """Normalise one group's scores so that groups can be ranked against each other.

    ``mean``/``max``/``sum`` divide by that statistic; ``standarization`` maps to
    ``[0, 1]`` by min and max; ``gaussian`` subtracts the mean and divides by the
    standard deviation; ``lamp`` divides each score by the sum of all scores
    that are not smaller (in sorted order, LAMP); ``None`` keeps the raw scores.
    """
    if how is None:
        return scores
    if callable(how):
        return how(scores)
    if how == "mean":
        return scores / (scores.mean() + _EPS)
    if how == "max":
        return scores / (scores.max() + _EPS)
    if how == "sum":
        return scores / (scores.sum() + _EPS)
    if how == "standarization":
        lo, hi = scores.min(), scores.max()
        return (scores - lo) / (hi - lo + _EPS)
    if how == "gaussian":
        return (scores - scores.mean()) / (scores.std(unbiased=False) + _EPS)
    if how == "lamp":
        order = scores.argsort()
        sorted_scores = scores[order]
        tail = sorted_scores.flip(0).cumsum(0).flip(0)
        out = torch.empty_like(scores)
        out[order] = sorted_scores / (tail + _EPS)
        return out
    raise ConfigError(f"normalizer must be one of {list(NORMALIZERS)} or None, got {how!r}")
