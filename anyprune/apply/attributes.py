"""Keep the sizes that forward code reads from attributes in sync with the pruned weights.

:class:`AttributeSync` holds the modules of one graph that have a registered
updater (:func:`anyprune.register_module_updater`). At build time it checks
each updater against the unpruned module: an updater that does not reproduce
the module's current attributes is not trusted, and the constants released in
that module's forward are pinned again. After each pruning step it runs the
updaters of the modules the step touched (then the model-level ones) and writes
the attributes that changed through the step's transaction.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import nn

from ..errors import PinnedDimWarning
from ..integrations.registry import ModuleUpdater, Sizes, updater_for

__all__ = ["AttributeSync"]


def _same(a: Any, b: Any) -> bool:
    """Attribute equality; tensors (e.g. a buffer the traced forward never reads) compare by shape and values."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == b.shape
                and a.dtype == b.dtype and (a.is_meta or b.is_meta or torch.equal(a.cpu(), b.cpu())))
    return bool(a == b)


def _resolve(obj: Any, dotted: str) -> tuple[Any, str]:
    *path, last = dotted.split(".")
    for part in path:
        obj = getattr(obj, part)
    return obj, last


class AttributeSync:
    def __init__(self, model: nn.Module, modules: list[tuple[str, nn.Module]], dims) -> None:
        self.model = model
        self.dims = dims
        table = dims.atoms
        self.layout_of: dict[tuple[str, int], tuple] = {}
        for v in dims.param_values():
            for name in v.names:
                for d, lay in enumerate(dims.layouts(v)):
                    self.layout_of[(name, d)] = lay
        self.modules: dict[str, tuple[nn.Module, ModuleUpdater]] = {}
        self.model_level: list[tuple[str, nn.Module, ModuleUpdater]] = []
        seen: set[int] = set()
        for name, m in modules:
            if id(m) in seen:
                continue
            seen.add(id(m))
            up = updater_for(m)
            if up is None:
                continue
            if up.model_level:
                if m is model:
                    self.model_level.append((name, m, up))
            else:
                self.modules[name] = (m, up)
        self._couple()
        self._unify_released()
        # atoms each managed module depends on: its parameters' dims and the constants released in it
        self.atoms_of: dict[str, set[int]] = {}
        for (fqn, _d), lay in self.layout_of.items():
            owner = self._managed_owner(fqn)
            if owner is not None:
                self.atoms_of.setdefault(owner, set()).update(table.atoms(lay))
        for r in dims.released:
            if r.scope in self.modules:
                self.atoms_of.setdefault(r.scope, set()).update(table.atoms(r.layout))
        self._check()

    def _managed_owner(self, fqn: str) -> str | None:
        name = fqn.rpartition(".")[0]
        while True:
            if name in self.modules:
                return name
            if not name:
                return None
            name = name.rpartition(".")[0]

    # ----------------------------------------------------------- build
    def _couple(self) -> None:
        table = self.dims.atoms
        for name, (m, up) in self.modules.items():
            if up.couple is None:
                continue
            prefix = f"{name}." if name else ""
            for (pa, da), (pb, db) in up.couple(m):
                a, b = self.layout_of.get((prefix + pa, da)), self.layout_of.get((prefix + pb, db))
                if a is not None and b is not None:
                    table.unify(a, b, f"sizes kept equal by {type(m).__name__}")

    def _unify_released(self) -> None:
        """Constants of equal value in the same slot of one module's forward (e.g. the last size of the
        q, k and v views) come from one attribute: they move together."""
        table = self.dims.atoms
        first: dict[tuple, tuple] = {}
        for r in self.dims.released:
            key = (r.scope, r.value, r.slot)
            if key in first:
                table.unify(first[key], r.layout, f"the constant {r.value} in {r.scope or 'the model'}")
            else:
                first[key] = r.layout

    def _sizes(self, name: str, module: nn.Module, counts: dict[int, int]) -> Sizes:
        table = self.dims.atoms
        prefix = f"{name}." if name else ""

        def size_of(lay: tuple) -> int:
            return table.size_after(lay, counts)

        def factors_of(lay: tuple) -> list[int]:
            n = table.norm(lay)
            parts = n[1] if n[0] == "p" else (n,)
            return [table.size_after(p, counts) for p in parts]

        return Sizes(module, prefix, lambda fqn, d: self.layout_of.get((fqn, d)), size_of, factors_of)

    def _check(self) -> None:
        table = self.dims.atoms
        for name in list(self.modules):
            m, up = self.modules[name]
            problem = None
            try:
                predicted = up.update(m, self._sizes(name, m, {}))
                for attr, value in predicted.items():
                    obj, last = _resolve(m, attr)
                    current = getattr(obj, last, None)
                    if not _same(current, value):
                        problem = f"it computes {attr}={value!r}, the module has {current!r}"
                        break
            except Exception as err:  # an updater that cannot read this module is not trusted
                problem = f"{type(err).__name__}: {err}"
            if problem is None:
                continue
            del self.modules[name]
            self.atoms_of.pop(name, None)
            for r in self.dims.released:
                if r.scope == name:
                    table.pin(r.layout, f"{r.reason}; the attribute updater for {type(m).__name__} does not fit "
                                        f"this module ({problem})")
            warnings.warn(
                f"the attribute updater for {type(m).__name__} does not fit module {name!r} ({problem}); the sizes "
                "its forward writes as constants stay pinned.",
                PinnedDimWarning,
                stacklevel=5,
            )

    # ----------------------------------------------------------- apply
    def apply(self, removed_counts: dict[int, int], tx, model_level: bool = True) -> list[tuple[Any, str, Any]]:
        """Run the updaters touched by a step that removes ``removed_counts`` (atom -> count); with
        ``model_level=False`` only the per-module ones (see :meth:`apply_model_level`)."""
        if not self.modules and not self.model_level:
            return []
        touched = set(removed_counts)
        changes: list[tuple[Any, str, Any]] = []
        for name, (m, up) in self.modules.items():
            if touched.isdisjoint(self.atoms_of.get(name, ())):
                continue
            changes.extend(self._write(m, up.update(m, self._sizes(name, m, removed_counts)), tx))
        if model_level:
            changes.extend(self.apply_model_level(tx, removed_counts))
        return changes

    def apply_model_level(self, tx, removed_counts: dict[int, int] | None = None) -> list[tuple[Any, str, Any]]:
        """Run the whole-model updaters (e.g. a Hugging Face config) for the sizes after ``removed_counts``
        (default: the sizes now). Within a step they run once, after all its groups, not once per group."""
        changes: list[tuple[Any, str, Any]] = []
        for name, m, up in self.model_level:
            changes.extend(self._write(m, up.update(m, self._sizes(name, m, removed_counts or {})), tx))
        return changes

    @staticmethod
    def _write(module: nn.Module, values: dict[str, Any], tx) -> list[tuple[Any, str, Any]]:
        out = []
        for attr, value in values.items():
            obj, last = _resolve(module, attr)
            if not _same(getattr(obj, last, None), value):
                tx.set_attr(obj, last, value)
                out.append((obj, last, value))
        return out
