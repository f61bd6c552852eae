"""Attribute updaters: the static sizes that a module's forward code uses.

Attention code reshapes with sizes kept in attributes: ``view(B, N, -1,
self.head_dim)``, ``repeat_kv(k, self.num_key_value_groups)``,
``qkv.split(self.split_size)``. In the trace these are literal constants, and
a literal factor is normally pinned (pruning it would leave the code's
constant stale). A module type with a registered *updater* declares that its
forward takes every such constant from attributes the updater recomputes:
inside that module's forward the constants are released (their dims become
prunable), and after each pruning step the updater returns the attributes'
new values from the pruned sizes, which are written inside the same
transaction as the weights.

An updater is a function ``update(module, sizes) -> {attr: value}`` where
``sizes`` is a :class:`Sizes` view of the module's parameter dims *after* the
pruning step (and, at build time, before it: the graph checks that the
updater reproduces the module's current attributes; if it does not, the
module's constants stay pinned and the updater is not used).

Example:
    >>> import torch, anyprune as tp
    >>> class Heads(torch.nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.proj, self.out, self.head_dim = torch.nn.Linear(8, 12), torch.nn.Linear(12, 8), 3
    ...     def forward(self, x):
    ...         h = self.proj(x).view(*x.shape[:-1], -1, self.head_dim)   # a literal head_dim
    ...         return self.out(torch.relu(h).flatten(-2))
    >>> @tp.register_module_updater(Heads)
    ... def _heads(module, sizes):
    ...     return {"head_dim": sizes.factors("proj.weight", 0)[-1]}
    >>> model = torch.nn.Sequential(Heads())
    >>> dg = tp.DependencyGraph().build_dependency(model, torch.randn(2, 8))
    >>> [g.size for g in dg.get_all_groups()]   # 4 heads and 3 head positions
    [4, 3]
    >>> tp.unregister_module_updater(Heads)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from torch import nn

from ..errors import ConfigError

__all__ = ["ModuleUpdater", "Sizes", "register_module_updater", "unregister_module_updater", "updater_for",
           "managed_types", "UPDATERS"]


class Sizes:
    """Sizes of a module's parameter dims as a pruning step leaves them.

    ``size("q_proj.weight", 0)`` is the new size of that dim; ``factors("q_proj.weight", 0)`` the
    new sizes of the top-level factors of its layout (``[heads, head_dim]`` for a projection whose
    output the forward views as ``(…, heads, head_dim)``; ``[kv_heads, n_rep, head_dim]`` for
    grouped-query attention). Names are relative to the module.
    """

    def __init__(self, module: nn.Module, prefix: str, lookup: Callable[[str, int], tuple | None],
                 size_of: Callable[[tuple], int], factors_of: Callable[[tuple], list[int]]) -> None:
        self.module = module
        self.prefix = prefix
        self._lookup = lookup
        self._size_of = size_of
        self._factors_of = factors_of

    def _layout(self, name: str, dim: int) -> tuple | None:
        return self._lookup(f"{self.prefix}{name}", dim)

    def size(self, name: str, dim: int) -> int:
        lay = self._layout(name, dim)
        if lay is None:
            return int(_tensor(self.module, name).shape[dim])
        return self._size_of(lay)

    def factors(self, name: str, dim: int) -> list[int]:
        lay = self._layout(name, dim)
        if lay is None:
            return [int(_tensor(self.module, name).shape[dim])]
        return self._factors_of(lay)

    def has(self, name: str) -> bool:
        try:
            _tensor(self.module, name)
        except AttributeError:
            return False
        return True


def _tensor(module: nn.Module, name: str):
    obj: Any = module
    for part in name.split("."):
        obj = getattr(obj, part)
    if obj is None:
        raise AttributeError(name)
    return obj


@dataclasses.dataclass(frozen=True)
class ModuleUpdater:
    """A registered updater: ``update(module, sizes) -> {attr: new value}``.

    ``couple(module)``: pairs ``((param, dim), (param, dim))`` whose dims the forward keeps equal in size
    although no op couples them index by index (e.g. ``reshape(…, heads, C // heads)`` with ``C`` the
    input's width): they are unified at build time.
    ``model_level``: for whole-model updaters (e.g. a Hugging Face ``PreTrainedModel``), run once per pruning
    step after the module updaters, with the model itself.
    """

    module_type: type | str
    update: Callable[[nn.Module, Sizes], dict[str, Any]]
    model_level: bool = False
    couple: Callable[[nn.Module], list[tuple[tuple[str, int], tuple[str, int]]]] | None = None


UPDATERS: dict[type | str, ModuleUpdater] = {}
ROOT_TYPES: set[str] = set()  # qualified names of projection types that count as group roots by default


def extra_root_types(model: nn.Module) -> tuple[type, ...]:
    """Module types in ``model`` that an integration declared as projections (group roots)."""
    from . import load_builtin

    load_builtin()
    if not ROOT_TYPES:
        return ()
    found: dict[type, None] = {}
    for m in model.modules():
        cls = type(m)
        if f"{cls.__module__}.{cls.__qualname__}" in ROOT_TYPES:
            found[cls] = None
    return tuple(found)


def register_module_updater(module_type: type | str, update: Callable | None = None, *, model_level: bool = False,
                            couple: Callable | None = None):
    """Register ``update(module, sizes) -> {attr: value}`` for ``module_type`` (usable as a decorator).

    Inside the forward of a module of this type, sizes written as constants in reshapes, splits and
    expands are released (prunable); after each pruning step ``update`` gives the new values of the
    attributes those constants come from (dotted names such as ``"config.hidden_size"`` reach into
    attribute objects). ``module_type`` is a class, or its qualified name
    (``"package.module.ClassName"``) so that a table need not import the class. ``model_level=True``
    registers an updater for a whole model (run last, with the top-level model), e.g. to keep a
    configuration object in sync. ``couple(module)`` lists parameter dims that the forward keeps equal
    in size (see :class:`ModuleUpdater`).
    """
    if isinstance(module_type, str):
        if "." not in module_type:
            raise ConfigError(f"register_module_updater: a module type given by name must be qualified "
                              f"('pkg.mod.Class'), got {module_type!r}")
    elif not isinstance(module_type, type) or not issubclass(module_type, nn.Module):
        raise ConfigError(f"register_module_updater: module_type must be an nn.Module subclass (the class, not an "
                          f"instance) or its qualified name, got {module_type!r}")
    if couple is not None and not callable(couple):
        raise ConfigError(f"register_module_updater: couple must be a callable module -> [((param, dim), (param, "
                          f"dim)), ...] or None, got {couple!r}")

    def deco(fn: Callable) -> Callable:
        if not callable(fn):
            raise ConfigError(f"register_module_updater: update must be a callable (module, sizes) -> "
                              f"{{attr: value}}, got {fn!r}")
        UPDATERS[module_type] = ModuleUpdater(module_type, fn, model_level, couple)
        return fn

    return deco(update) if update is not None else deco


def unregister_module_updater(module_type: type | str) -> None:
    """Remove the updater registered for exactly ``module_type`` (no error if there is none)."""
    UPDATERS.pop(module_type, None)


def updater_for(module: nn.Module) -> ModuleUpdater | None:
    """The updater of the nearest registered type in ``type(module)``'s MRO, or ``None``."""
    from . import load_builtin

    load_builtin()
    for cls in type(module).__mro__:
        up = UPDATERS.get(cls) or UPDATERS.get(f"{cls.__module__}.{cls.__qualname__}")
        if up is not None:
            return up
    return None


def managed_types(model: nn.Module, model_level: bool = False) -> tuple[type, ...]:
    """The module types in ``model`` that have an updater of that level."""
    found: dict[type, None] = {}
    for m in model.modules():
        up = updater_for(m)
        if up is not None and up.model_level == model_level:
            found[type(m)] = None
    return tuple(found)
