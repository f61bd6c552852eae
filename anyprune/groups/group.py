"""Groups: the coupled slices of parameters that must be pruned together.

A group is one or more unpinned atoms of the dimension graph together with
every parameter/buffer dimension (a :class:`ParamSlice`) whose layout contains
them. Pruning indices ``I`` of the group removes, from each slice, the
positions that map to ``I``; nothing else in the model changes size.

A group is *exact* when no op normalises or averages over its atoms: then the
pruned model computes exactly what the model with those slices zeroed (the
masked model) computes. Otherwise it is *approximate* (e.g. channels under a
LayerNorm) and the pruned model only keeps its shapes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from ..dims.dimgraph import Binding, DimGraph
from ..errors import PruningError
from ..trace.opgraph import Value

__all__ = ["ParamSlice", "Group", "GroupIndex", "Dependency", "Node"]


@dataclasses.dataclass(frozen=True, eq=False)
class ParamSlice:
    """Dim ``dim`` of parameter/buffer ``value``, as touched by a group."""

    value: Value
    dim: int
    layout: tuple
    tensor: torch.Tensor
    module: nn.Module | None
    module_name: str
    attr: str

    @property
    def fqn(self) -> str:
        return self.value.names[0]


@dataclasses.dataclass(frozen=True, eq=False)
class LeafSlice:
    """The in or out channels of a module handled by a customized pruner."""

    module: nn.Module
    module_name: str
    role: str  # "in" | "out"
    layout: tuple
    pruner: Any


@dataclasses.dataclass(eq=False)
class Node:
    """Seed-compatible ``dep.target``: the module (or parameter) a dependency acts on."""

    module: Any
    name: str

    def __repr__(self) -> str:
        return f"{self.name} ({type(self.module).__name__})"


@dataclasses.dataclass(eq=False)
class Dependency:
    """Seed-compatible dependency: ``dep.target.module`` and ``dep.handler(module, idxs)``."""

    target: Node
    handler: Any
    slices: list = dataclasses.field(default_factory=list)

    @property
    def source(self) -> Node:
        return self.target

    def __call__(self, idxs) -> Any:
        return self.handler(self.target.module, idxs)

    def __repr__(self) -> str:
        return f"{getattr(self.handler, '__name__', self.handler)} on {self.target!r}"


def _is_output_dim(sl) -> bool:
    """Whether a slice is the output dim of a projection (conv / linear / Conv1D / packed attention)."""
    if not isinstance(sl, ParamSlice) or sl.module is None:
        return False
    m = sl.module
    if isinstance(m, nn.modules.conv._ConvNd):
        return sl.attr == "weight" and sl.dim == (1 if m.transposed else 0)
    if isinstance(m, nn.Linear):
        return sl.attr == "weight" and sl.dim == 0
    if isinstance(m, nn.MultiheadAttention):
        return sl.attr in ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight") and sl.dim == 0
    if type(m).__name__ == "Conv1D":  # Hugging Face GPT-2 style: weight is [in, out]
        return sl.attr == "weight" and sl.dim == 1
    return False


class GroupIndex:
    """Which parameter dims, bindings and leaf modules each atom reaches (built once per graph)."""

    def __init__(self, dg: DimGraph, tensors: dict[str, torch.Tensor]) -> None:
        self.dg = dg
        self._rank = {name: i for i, name in enumerate(tensors)}
        self.slices: list[ParamSlice | LeafSlice] = []
        self.by_atom: dict[int, list[int]] = {}
        self.bindings_by_atom: dict[int, list[Binding]] = {}
        modules = dg._modules
        for v in dg.param_values():
            t = tensors.get(v.names[0])
            if t is None:
                continue
            owner, _, attr = v.names[0].rpartition(".")
            for d, lay in enumerate(dg.layouts(v)):
                self._add(ParamSlice(v, d, lay, t, modules.get(owner), owner, attr))
        for name, (in_lay, out_lay) in dg.leaf_dims.items():
            mod = modules[name]
            pruner = dg.leaf_pruners[type(mod)]
            if in_lay is not None and in_lay is not out_lay:
                self._add(LeafSlice(mod, name, "in", in_lay, pruner))
            if out_lay is not None:
                self._add(LeafSlice(mod, name, "out", out_lay, pruner))
        for b in dg.bindings:
            for lay in b.layouts:
                for a in dg.atoms.atoms(lay):
                    self.bindings_by_atom.setdefault(a, []).append(b)

    def _add(self, s) -> None:
        k = len(self.slices)
        self.slices.append(s)
        for a in self.dg.atoms.atoms(s.layout):
            self.by_atom.setdefault(a, []).append(k)

    def slices_of(self, atoms: list[int]) -> list:
        seen: set[int] = set()
        out = []
        for a in atoms:
            for k in self.by_atom.get(self.dg.atoms.find(a), []):
                if k not in seen:
                    seen.add(k)
                    out.append(self.slices[k])
        out.sort(key=self._order_key)
        return out

    def _order_key(self, s) -> tuple:
        if isinstance(s, ParamSlice):
            return (self._rank.get(s.fqn, len(self._rank)), s.dim)
        return (len(self._rank), 0)

    def bindings_of(self, atoms: list[int]) -> list[Binding]:
        out: list[Binding] = []
        seen: set[int] = set()
        for a in atoms:
            for b in self.bindings_by_atom.get(self.dg.atoms.find(a), []):
                if id(b) not in seen:
                    seen.add(id(b))
                    out.append(b)
        return out


class Group:
    """A set of atoms with the parameter slices they reach, and (optionally) chosen indices.

    ``indices`` are indices of the group's unit space: for a group found by
    :meth:`anyprune.DependencyGraph.get_all_groups` (one atom), the atom's
    indices, which are also the root dim's positions whenever the root is a
    plain producer dim; for a group from ``get_pruning_group``, the positions
    requested on the root dim.
    """

    def __init__(self, owner: Any, atoms: list[int], slices: list, root, root_positions: torch.Tensor | None,
                 removed: dict[int, torch.Tensor] | None = None) -> None:
        self._owner = owner
        self.atoms = list(atoms)
        self.slices = slices
        self.root = root
        self._root_positions = root_positions
        self._removed = removed
        self._deps: list[tuple[Dependency, list[int]]] | None = None
        # the sizes its positions refer to: a group holding positions is stale once its dims change
        self._sizes = {a: owner.dims.atoms.atom_size(a) for a in self.atoms} \
            if removed is not None or root_positions is not None else None

    # --------------------------------------------------------------- facts
    @property
    def table(self):
        return self._owner.dims.atoms

    @property
    def size(self) -> int:
        """Number of prunable units (the atom's size for a one-atom group)."""
        return sum(self.table.atom_size(a) for a in self.atoms)

    @property
    def exact(self) -> bool:
        return all(self.table.mix_reason(a) is None for a in self.atoms)

    @property
    def mixing_reasons(self) -> list[str]:
        return [r for a in self.atoms if (r := self.table.mix_reason(a)) is not None]

    @property
    def structure(self) -> str:
        """What one unit of the group is, read off the output dims of the layers it prunes: ``"heads"`` (an
        outer factor of a layer's output: whole attention heads, KV groups, query heads per KV head, conv
        groups), ``"head_dim"`` (the innermost factor: the same position in every head or group) or
        ``"channels"`` (plain channels/features; a flatten -> linear block is channels too, as the factoring
        is on the consumer's input side)."""
        table = self.table
        mine = set(self.atoms)
        found = "channels"

        def walk(node, role: str) -> None:
            nonlocal found
            if node[0] == "a":
                if node[1] in mine and role != "channels" and (found == "channels" or role == "heads"):
                    found = role
                return
            kids = node[1]
            for k, kid in enumerate(kids):
                if node[0] == "p":
                    walk(kid, "head_dim" if k == len(kids) - 1 and role != "heads" else "heads")
                else:
                    walk(kid, role)

        for sl in self.slices:
            if not _is_output_dim(sl):
                continue
            lay = table.norm(sl.layout)
            if lay[0] in ("p", "s"):
                walk(lay, "channels")
            if found == "heads":
                break
        return found

    @property
    def idxs(self) -> list[int] | None:
        return None if self._root_positions is None else self._root_positions.tolist()

    def check_fresh(self) -> None:
        """Raise :class:`~anyprune.PruningError` if this group holds positions and its dims changed since it was
        made (it was pruned already, or another group shrank the same dims)."""
        if self._sizes is None:
            return
        table = self.table
        if any(table.atom_size(a) != n for a, n in self._sizes.items()):
            raise PruningError(
                "this group holds positions of dims that have been pruned since it was made (was it pruned "
                "already?); pruning it again would remove the wrong positions. Get a fresh group: "
                "DG.get_pruning_group(layer, fn, idxs) or DG.get_all_groups()"
            )

    def removal(self, idxs=None) -> dict[int, torch.Tensor]:
        """Boolean masks per atom of what pruning ``idxs`` (or the group's own indices) removes.

        For a group from ``get_all_groups`` (no root positions), ``idxs`` are indices of its atom,
        ``0 .. group.size - 1``; for a group from ``get_pruning_group``, positions in the root dim.
        """
        if idxs is not None and self._root_positions is None and len(self.atoms) == 1:
            from ..apply.slicing import validate_indices

            a = self.atoms[0]
            n = self.table.atom_size(a)
            chosen = validate_indices(idxs, n, "Group.prune")
            mask = torch.zeros(n, dtype=torch.bool)
            mask[chosen] = True
            return {a: mask}
        if idxs is None:
            if self._removed is not None:
                return self._removed
            if self._root_positions is None:
                raise PruningError(
                    "this group has no indices to prune: pass them, e.g. group.prune(idxs=[0, 3]); "
                    "groups from get_all_groups() cover every index of their dims"
                )
            idxs = self._root_positions
        return self._owner._removal_for(self, idxs)

    # ---------------------------------------------------------- seed surface
    def prune(self, idxs=None, record_history: bool = True) -> None:
        """Prune the group (transactionally): all slices change or none does."""
        self._owner._prune_group(self, idxs, record_history=record_history)

    def _dependencies(self) -> list[tuple[Dependency, list[int]]]:
        if self._deps is None:
            self._deps = self._owner._dependencies(self)
        return self._deps

    def __iter__(self) -> Iterator[tuple[Dependency, list[int]]]:
        return iter(self._dependencies())

    def __len__(self) -> int:
        return len(self._dependencies())

    def __getitem__(self, k: int) -> tuple[Dependency, list[int]]:
        return self._dependencies()[k]

    @property
    def items(self) -> list[tuple[Dependency, list[int]]]:
        return self._dependencies()

    def has_dep(self, dep: Dependency) -> bool:
        return any(d.target.module is dep.target.module and d.handler is dep.handler for d, _ in self)

    def details(self) -> str:
        return self._owner._describe(self)

    def __str__(self) -> str:
        return self.details()

    def __repr__(self) -> str:
        kind = "exact" if self.exact else "approximate"
        return f"<Group {kind} size={self.size} slices={len(self.slices)}>"
