"""The seed facade: ``DependencyGraph().build_dependency(model, example_inputs)``.

``build_dependency`` = trace (:mod:`anyprune.trace`) + dimension rules
(:mod:`anyprune.dims`) + an index of which parameter slices each atom reaches
(:mod:`anyprune.groups`). Groups prune through :mod:`anyprune.apply`.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar, cast

import torch
from torch import nn

from .apply.attributes import AttributeSync
from .apply.slicing import apply_removal, validate_indices
from .apply.transaction import Transaction
from .dims.dimgraph import DimGraph
from .errors import ConfigError, PinnedDimWarning, PruningError
from .functional import PruningFunction, handler_for, prune_parameter_out_channels, root_dim
from .groups.group import Dependency, Group, GroupIndex, LeafSlice, Node, ParamSlice
from .integrations.registry import extra_root_types, managed_types
from .trace.opgraph import OpGraph
from .trace.recorder import MetaShadow, paused_gc, raised_at, to_meta, trace

__all__ = ["DependencyGraph", "DEFAULT_ROOT_TYPES"]

DEFAULT_ROOT_TYPES: tuple[type, ...] = (nn.modules.conv._ConvNd, nn.Linear, nn.RNNBase)

_V = TypeVar("_V")


class DependencyGraph:
    """Build the dependency graph of a model and hand out pruning groups.

    Example:
        >>> import torch, anyprune as tp
        >>> model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
        ...                             torch.nn.Conv2d(8, 4, 3))
        >>> DG = tp.DependencyGraph().build_dependency(model, example_inputs=torch.randn(1, 3, 8, 8))
        >>> group = DG.get_pruning_group(model[0], tp.prune_conv_out_channels, idxs=[2, 6])
        >>> group.prune()
        >>> (model[0].out_channels, model[1].num_features, model[3].in_channels)
        (6, 6, 6)
    """

    def __init__(self) -> None:
        self._model: nn.Module | None = None
        self._ops: OpGraph | None = None
        self._dims: DimGraph | None = None
        self._index: GroupIndex | None = None
        self.customized_pruners: dict[type, Any] = {}
        self._history: list[tuple[str, str, list[int]]] = []
        self._module_names: dict[nn.Module, str] = {}
        self._producers: dict[int, list[nn.Module]] = {}
        self._module_outputs: dict[nn.Module, list[tuple]] = {}
        self._example: tuple[Any, Callable | None, Callable | None] | None = None
        self._step: tuple[Transaction, list[Callable[[], None]]] | None = None
        self._pending_model_update = False  # whole-model updaters put off inside transaction()
        self._registered_pruners: dict[type, Any] = {}
        self.removal_log: list[tuple[str, int, torch.Tensor]] | None = None
        """When a list: every pruning appends ``(tensor name, dim, removed-positions mask)`` per parameter slice it
        cuts, in order (a later mask is relative to what earlier ones kept); out-of-core pruning replays it."""

    # ------------------------------------------------------------ state
    @staticmethod
    def _built(value: _V | None) -> _V:
        if value is None:
            raise ConfigError("call build_dependency(model, example_inputs) first")
        return value

    @property
    def model(self) -> nn.Module:
        """The model the graph was built for."""
        return self._built(self._model)

    @property
    def ops(self) -> OpGraph:
        """The traced op graph."""
        return self._built(self._ops)

    @property
    def dims(self) -> DimGraph:
        """The dimension graph."""
        return self._built(self._dims)

    @property
    def index(self) -> GroupIndex:
        """Which parameter slices each atom reaches."""
        return self._built(self._index)

    # ------------------------------------------------------------- build
    def build_dependency(
        self,
        model: nn.Module,
        example_inputs: Any,
        forward_fn: Callable | None = None,
        output_transform: Callable | None = None,
        unwrapped_parameters: Iterable | None = None,
        customized_pruners: dict[type, Any] | None = None,
        ignored_layers: Iterable | None = None,
        verbose: bool = True,
        check_groups: bool = True,
    ) -> DependencyGraph:
        """Trace ``model`` on ``example_inputs`` and build its dimension graph.

        Args:
            model: the model; it may live on the ``meta`` device, in any dtype and mode.
            example_inputs: a tensor, a tuple (unpacked), a list (one argument) or a dict (keywords).
            forward_fn: ``forward_fn(model, example_inputs)`` instead of the default call.
            output_transform: applied to the outputs; what it returns is pinned too.
            unwrapped_parameters: accepted for compatibility (``[(param, dim), …]`` or params); parameters
                used directly in ``forward`` are discovered by the trace, so this only checks they belong
                to the model.
            customized_pruners: ``{LayerType: pruner}`` for layers recorded whole; the pruner has
                ``prune_out_channels``, ``prune_in_channels``, ``get_out_channels``, ``get_in_channels``.
            ignored_layers: modules, module types or parameters whose output dims must not be pruned.
            verbose: kept for compatibility; warnings are never silenced by it.
            check_groups: try every group on meta twins of the parameters (shapes only, all groups at once)
                and pin those whose pruning breaks the forward pass, so that only working groups are offered
                (see :meth:`check_groups`). Models that need real values to run are not tried here; call
                :meth:`check_groups` for them.

        Returns:
            ``self``.
        """
        if not isinstance(model, nn.Module):
            raise ConfigError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        for name, fn in (("forward_fn", forward_fn), ("output_transform", output_transform)):
            if fn is not None and not callable(fn):
                raise ConfigError(f"{name} must be a callable or None, got {type(fn).__name__}")
        with paused_gc():
            self._build(model, example_inputs, forward_fn, output_transform, unwrapped_parameters, customized_pruners,
                        ignored_layers)
            if check_groups:
                self.check_groups([g for g in self.get_all_groups(root_module_types=None) if self._shapes_checkable(g)])
        return self

    def _build(self, model, example_inputs, forward_fn, output_transform, unwrapped_parameters, customized_pruners,
               ignored_layers) -> None:
        if isinstance(customized_pruners, dict) or customized_pruners is None:
            customized_pruners = {**self._registered_pruners, **(customized_pruners or {})}
        self.customized_pruners = self._check_pruners(customized_pruners)
        self._check_unwrapped(model, unwrapped_parameters)
        ignored = self._resolve_ignored(model, ignored_layers)
        self._model = model
        self._module_names_list = list(model.named_modules(remove_duplicate=False))
        self._module_names = {}
        for n, m in self._module_names_list:
            self._module_names.setdefault(m, n)
        self._ops = trace(model, example_inputs, forward_fn, output_transform,
                          leaf_modules=tuple(self.customized_pruners), scope_modules=managed_types(model))
        dims = DimGraph(self.ops, model, modules={n: m for n, m in self._module_names_list})
        dims.leaf_pruners = dict(self.customized_pruners)
        dims.run_rules(check_sizes=False)
        self._dims = dims
        self._attrs = AttributeSync(model, self._module_names_list, dims)
        dims.check_sizes()  # after the updaters' couplings: sizes they keep equal move together
        self._example = (example_inputs, forward_fn, output_transform)
        self._collect_module_outputs()
        for m in ignored:
            for lay in self._outputs_of(m):
                dims.atoms.pin(lay, f"ignored layer {self._module_names.get(m, m)}")
        for p in self._ignored_params:
            v = self._value_of_tensor(p)
            if v is not None:
                for lay in dims.layouts(v):
                    dims.atoms.pin(lay, f"ignored parameter {v.name}")
        tensors: dict[str, torch.Tensor] = {}
        for mname, m in self._module_names_list:
            prefix = f"{mname}." if mname else ""
            tensors.update((prefix + n, t) for n, t in m._parameters.items() if t is not None)
            tensors.update((prefix + n, t) for n, t in m._buffers.items() if t is not None)
        self._index = GroupIndex(dims, tensors)
        if self.ops.unused_params:
            shown = ", ".join(self.ops.unused_params[:5])
            more = f" and {len(self.ops.unused_params) - 5} more" if len(self.ops.unused_params) > 5 else ""
            warnings.warn(
                f"{len(self.ops.unused_params)} parameter(s) were not used by the traced forward pass ({shown}{more}); "
                "they are not coupled to anything and are left unpruned. If they run in another mode (e.g. "
                "auxiliary heads in training), trace in that mode or list their layers in ignored_layers.",
                PinnedDimWarning,
                stacklevel=4,
            )

    @staticmethod
    def _check_pruners(customized_pruners) -> dict[type, Any]:
        if customized_pruners is None:
            return {}
        if not isinstance(customized_pruners, dict):
            raise ConfigError("customized_pruners must be a dict {LayerType: pruner}")
        for k, p in customized_pruners.items():
            if not isinstance(k, type):
                raise ConfigError(f"customized_pruners keys must be module types, got {k!r}")
            for meth in ("prune_out_channels", "prune_in_channels", "get_out_channels", "get_in_channels"):
                if not callable(getattr(p, meth, None)):
                    raise ConfigError(f"customized pruner for {k.__name__} has no method {meth}()")
        return dict(customized_pruners)

    @staticmethod
    def _check_unwrapped(model, unwrapped) -> None:
        if unwrapped is None:
            return
        params = {id(p) for p in model.parameters()}
        for item in unwrapped:
            p = item[0] if isinstance(item, (tuple, list)) else item
            if not isinstance(p, torch.Tensor) or id(p) not in params:
                raise ConfigError(
                    f"unwrapped_parameters entry {item!r} is not a parameter of the model; pass (param, dim) pairs"
                )

    def _resolve_ignored(self, model, ignored_layers) -> list[nn.Module]:
        self._ignored_params: list[torch.Tensor] = []
        if ignored_layers is None:
            return []
        if isinstance(ignored_layers, (nn.Module, type)):
            ignored_layers = [ignored_layers]
        if isinstance(ignored_layers, (str, torch.Tensor)) or not isinstance(ignored_layers, Iterable):
            raise ConfigError(
                f"ignored_layers must be a list of modules, module types or parameters, got "
                f"{type(ignored_layers).__name__}"
            )
        modules = list(model.modules())
        ids = {id(m) for m in modules}
        params = {id(p) for p in model.parameters()}
        out: list[nn.Module] = []
        for item in ignored_layers:
            if isinstance(item, type):
                out.extend(m for m in modules if issubclass(type(m), item))
            elif isinstance(item, nn.Module):
                if id(item) not in ids:
                    raise ConfigError(f"ignored_layers: {type(item).__name__} is not a submodule of the model")
                out.extend(m for m in item.modules())
            elif isinstance(item, torch.Tensor) and id(item) in params:
                self._ignored_params.append(item)
            else:
                raise ConfigError(f"ignored_layers entries must be modules, module types or parameters, got {item!r}")
        return out

    def _collect_module_outputs(self) -> None:
        dims = self.dims
        table = dims.atoms
        for call in self.ops.calls:
            owners: list[nn.Module] = []
            if call.leaf_module is not None:
                m = dims._modules.get(call.leaf_module)
                if m is not None:
                    owners.append(m)
            for v in call.inputs:
                m = dims.module_of(v)
                if m is not None and m not in owners:
                    owners.append(m)
            for m in owners:
                lst = self._module_outputs.setdefault(m, [])
                for o in call.outputs:
                    lst.extend(dims.layouts(o))
        for m, lays in self._module_outputs.items():
            for lay in lays:
                for a in table.atoms(lay):
                    prods = self._producers.setdefault(a, [])
                    if m not in prods:
                        prods.append(m)

    def _outputs_of(self, module: nn.Module) -> list[tuple]:
        return self._module_outputs.get(module, [])

    def _value_of_tensor(self, t: torch.Tensor):
        names = {n for n, p in self.model.named_parameters(remove_duplicate=False) if p is t}
        names |= {n for n, b in self.model.named_buffers(remove_duplicate=False) if b is t}
        for v in self.ops.values:
            if v.kind in ("param", "buffer") and names.intersection(v.names):
                return v
        return None

    def _require_built(self) -> None:
        self._built(self._dims)

    # ------------------------------------------------------------- groups
    def get_pruning_group(self, module: Any, pruning_fn: Callable, idxs) -> Group:
        """The group that pruning ``idxs`` of ``module`` with ``pruning_fn`` sets off.

        Args:
            module: a layer of the model (or an ``nn.Parameter`` for ``prune_parameter_*``).
            pruning_fn: one of the ``prune_*`` functions, or a customized pruner's method.
            idxs: positions in the dim that ``pruning_fn`` acts on.
        """
        self._require_built()
        table = self.dims.atoms
        root: ParamSlice | LeafSlice
        if isinstance(module, torch.Tensor):
            v = self._value_of_tensor(module)
            if v is None:
                raise PruningError("this parameter is not part of the traced model")
            dim = -1
            layout = self.dims.layouts(v)[dim]
            root = self._slice_for(v, dim % v.ndim)
        else:
            if not isinstance(module, nn.Module) or module not in self._module_names:
                raise PruningError(
                    f"{type(module).__name__} is not a module of the model this graph was built for"
                )
            leaf = self.customized_pruners.get(type(module))
            if leaf is not None:
                role = "out" if "out" in getattr(pruning_fn, "__name__", "out") else "in"
                name = self._module_names[module]
                in_lay, out_lay = self.dims.leaf_dims.get(name, (None, None))
                layout = out_lay if role == "out" else in_lay
                if layout is None:
                    raise PruningError(f"customized layer {name} was not used in the traced forward pass")
                root = LeafSlice(module, name, role, layout, leaf)
            else:
                if not isinstance(pruning_fn, PruningFunction):
                    raise PruningError(
                        f"{pruning_fn!r} is not a pruning function; use one of the tp.prune_* functions"
                    )
                attr, dim = root_dim(module, pruning_fn)
                tensor = getattr(module, attr)
                v = self._value_of_tensor(tensor)
                if v is None or v.index not in self.dims._layouts:
                    raise PruningError(
                        f"module {self._module_names[module]} was not used in the traced forward pass; "
                        "it is not in the graph"
                    )
                dim = dim % v.ndim
                layout = self.dims.layouts(v)[dim]
                root = self._slice_for(v, dim)
        n = table.size(layout)
        positions = validate_indices(idxs, n, f"get_pruning_group({getattr(pruning_fn, '__name__', pruning_fn)})")
        removed = self._positions_to_removal(layout, positions)
        atoms = list(removed)
        return Group(self, atoms, self.index.slices_of(atoms), root, positions, removed)

    def _slice_for(self, v, dim: int) -> ParamSlice:
        for s in self.index.slices:
            if isinstance(s, ParamSlice) and s.value is v and s.dim == dim:
                return s
        raise PruningError(f"{v.name} dim {dim} is not in the graph")

    def _positions_to_removal(self, layout: tuple, positions: torch.Tensor) -> dict[int, torch.Tensor]:
        table = self.dims.atoms
        atoms = table.atoms(layout)
        if positions.numel() == 0:
            return {}
        wanted = torch.zeros(table.size(layout), dtype=torch.bool)
        wanted[positions] = True
        for a in atoms:  # whole units of one atom (e.g. the rows of whole heads): remove those units
            if table.pin_reason(a) is not None:
                continue
            full = table.index_of(layout, a)
            units = full[positions]
            if bool((units < 0).any()):
                continue
            m = torch.zeros(table.atom_size(a), dtype=torch.bool)
            m[units] = True
            if torch.equal(table.removal_mask(layout, {a: m}), wanted):
                return {a: m}
        idx = torch.stack([table.index_of(layout, a)[positions] for a in atoms])  # [atoms, positions]
        pinned = torch.tensor([table.pin_reason(a) is not None for a in atoms])
        candidate = (idx >= 0) & ~pinned[:, None]
        if not bool(candidate.any(0).all()):
            col = int((~candidate.any(0)).nonzero()[0])
            reasons = sorted({r for k, a in enumerate(atoms)
                              if idx[k, col] >= 0 and (r := table.pin_reason(a)) is not None})
            raise PruningError(
                f"position {int(positions[col])} cannot be pruned: its dim is pinned ({'; '.join(reasons)}). "
                "Pinned dims are never pruned; see the reason for what pins them."
            )
        # innermost prunable atom per position (the last in layout order)
        order = torch.arange(len(atoms))[:, None].expand_as(candidate)
        chosen = torch.where(candidate, order, -1).max(0).values
        removed: dict[int, torch.Tensor] = {}
        for k, a in enumerate(atoms):
            cols = chosen == k
            if bool(cols.any()):
                m = torch.zeros(table.atom_size(a), dtype=torch.bool)
                m[idx[k, cols]] = True
                removed[a] = m
        return removed

    def _removal_for(self, group: Group, idxs) -> dict[int, torch.Tensor]:
        table = self.dims.atoms
        layout = group.root.layout
        positions = validate_indices(idxs, table.size(layout), "Group.prune")
        return self._positions_to_removal(layout, positions)

    def check_pruning_group(self, group: Group) -> bool:
        """True if pruning the group keeps every dim at least one wide (and touches no pinned dim)."""
        self._check_group(group, "check_pruning_group")
        try:
            removed = group.removal()
        except PruningError:
            return False
        table = self.dims.atoms
        if any(table.pin_reason(a) is not None for a in removed):
            return False
        for s in self.index.slices_of(list(removed)):
            if bool(table.removal_mask(s.layout, removed).all()):
                return False
        return True

    def _check_group(self, group: Any, what: str) -> None:
        self._require_built()
        if not isinstance(group, Group):
            raise ConfigError(f"{what} expects a Group (from get_pruning_group or get_all_groups), "
                              f"got {type(group).__name__}")
        if group._owner is not self:
            raise ConfigError(f"{what}: the group comes from another DependencyGraph; use the graph that made it")

    def get_all_groups(self, ignored_layers: Iterable | None = None,
                       root_module_types: Iterable[type] | None = DEFAULT_ROOT_TYPES) -> Iterator[Group]:
        """Every prunable group, in trace order, one per unpinned atom.

        Args:
            ignored_layers: modules (or types) whose output dims are skipped.
            root_module_types: keep groups whose atom is an output dim of a module of one of these types;
                ``None`` keeps every group. The default (convolutions and linear layers) also admits the
                projection types that integrations declare (e.g. Hugging Face ``Conv1D``).
        """
        self._require_built()
        table = self.dims.atoms
        excluded: set[int] = set()
        for m in self._resolve_ignored(self.model, ignored_layers):
            for lay in self._outputs_of(m):
                excluded.update(table.atoms(lay))
        types = None
        if root_module_types is not None:
            items = [root_module_types] if isinstance(root_module_types, type) else root_module_types
            if not isinstance(items, Iterable) or isinstance(items, str) or \
                    not all(isinstance(t, type) for t in items):
                raise ConfigError(
                    f"root_module_types must be a list of module types (e.g. [nn.Conv2d, nn.Linear]) or None, "
                    f"got {root_module_types!r}"
                )
            types = tuple(items)
        if root_module_types is DEFAULT_ROOT_TYPES:
            types = DEFAULT_ROOT_TYPES + extra_root_types(self.model)
        for a in list(self.index.by_atom):
            if not table.is_leaf(a):
                continue
            if table.pin_reason(a) is not None or a in excluded or table.atom_size(a) < 2:
                continue
            root = self._root_for(a, types)
            if root is None:
                continue
            yield Group(self, [a], self.index.slices_of([a]), root, None, None)

    def groups(self, **kwargs) -> list[Group]:
        """``list(get_all_groups(**kwargs))``."""
        return list(self.get_all_groups(**kwargs))

    def try_prune(self, group: Group, idxs=None) -> str | None:
        """Prune ``group`` (``idxs``, default: the first half of its units), re-trace the example inputs
        (:meth:`verify`) and undo everything; return the error if pruning broke the forward pass, else ``None``.
        The model and the graph are left exactly as they were either way."""
        self._require_built()
        self._check_group(group, "try_prune")
        return self._attempt(lambda: group.prune(list(range(group.size // 2)) if idxs is None else idxs))

    def _attempt(self, edit: Callable[[], None], on_meta: bool = False) -> str | None:
        """Run ``edit`` and a re-trace inside :meth:`transaction`, undo both, and return the error (or ``None``)."""
        from .errors import AnyPruneError

        class _Undo(Exception):
            pass

        try:
            with self.transaction():
                edit()
                with torch.no_grad():
                    self._retrace(None, on_meta=on_meta)
                raise _Undo
        except _Undo:
            return None
        except (AnyPruneError, RuntimeError, ValueError, TypeError, IndexError, AssertionError) as err:
            return f"{type(err).__name__}: {err}"

    def check_groups(self, groups: Iterable[Group] | None = None) -> list[tuple[Group, str]]:
        """Try groups on the model and pin those whose pruning breaks the forward pass (the safety net).

        :meth:`build_dependency` runs this on every group it can offer (``check_groups=True``), so
        :meth:`get_all_groups` only offers groups whose pruning keeps the model running. Where the model traces
        on the meta device, all groups are tried at once, shapes only: each loses some of its units (a different
        number per group, so that no two mismatches cancel out) on meta twins of the parameters, the example
        inputs are re-traced and everything is undone; a failing set is halved until the groups that break the
        forward are found. Other groups (customized layers, models that need real values to run) lose half of
        their units on the real model inside :meth:`transaction`, once per structure (module types, parameter
        shapes and group size, e.g. the same group in identical layers). The atoms of a failing group are pinned
        with the error as their reason. The model and its attributes are left exactly as they were.

        Args:
            groups: the groups to try (default: every group ``get_all_groups(root_module_types=None)`` offers).

        Returns:
            The failing groups with their errors.
        """
        self._require_built()
        table = self.dims.atoms
        todo = []
        for g in list(self.get_all_groups(root_module_types=None) if groups is None else groups):
            self._check_group(g, "check_groups")
            if g.size >= 2 and all(table.pin_reason(a) is None for a in g.atoms):
                todo.append(g)
        shapes_only = [g for g in todo if self._shapes_checkable(g)]
        chosen = {id(g) for g in shapes_only}
        failed = self._find_failing(shapes_only, {id(g): 1 + k % (g.size - 1) for k, g in enumerate(shapes_only)})
        tried: dict[tuple, str | None] = {}
        for g in todo:
            if id(g) in chosen:
                continue
            key = (g.size, tuple(sorted((type(s.module).__name__, getattr(s, "attr", ""), getattr(s, "dim", -1),
                                         tuple(s.tensor.shape) if isinstance(s, ParamSlice) else ())
                                        for s in g.slices)))
            if key not in tried:
                tried[key] = self.try_prune(g)
            err = tried[key]
            if err is not None:
                failed.append((g, err))
        for g, err in failed:
            for a in g.atoms:
                table.pin(("a", a), f"pruning it breaks the forward pass ({err})")
        return failed

    def _shapes_checkable(self, g: Group) -> bool:
        """Can ``g`` be tried shapes-only (one atom, no customized layer, a model that runs on meta)?"""
        return self.ops.on_meta and len(g.atoms) == 1 and g._root_positions is None and \
            not any(isinstance(s, LeafSlice) for s in g.slices)

    def _find_failing(self, groups: list[Group], counts: dict[int, int]) -> list[tuple[Group, str]]:
        """The groups among ``groups`` whose shapes-only trial fails (group testing by halving)."""
        if not groups:
            return []
        err = self._shapes_trial(groups, counts)
        if err is None:
            return []
        if len(groups) == 1:
            return [(groups[0], err)]
        mid = len(groups) // 2
        return self._find_failing(groups[:mid], counts) + self._find_failing(groups[mid:], counts)

    def _shapes_trial(self, groups: list[Group], counts: dict[int, int]) -> str | None:
        """Prune ``groups`` (the first ``counts[id(g)]`` units of each) on meta twins of the parameters, re-trace
        on meta and undo; return the error, or ``None``. The shadow restores every parameter and buffer slot and
        every module's attributes on exit, so only the edits themselves (recorded in one :class:`Transaction`)
        and the graph's bookkeeping need undoing: no snapshot of the whole model is taken."""
        removed: dict[int, torch.Tensor] = {}
        for g in groups:
            mask = torch.zeros(g.size, dtype=torch.bool)
            mask[:counts[id(g)]] = True
            removed[g.atoms[0]] = mask
        modules = list({id(m): m for m in self.model.modules()}.values())
        assert self._step is None, "a shapes-only trial cannot run inside transaction()"
        tx, undo = Transaction(), cast(list[Callable[[], None]], [])
        configs = [c for m in modules if (c := getattr(m, "config", None)) is not None and hasattr(c, "__dict__")]
        for c in configs:
            tx.snapshot_object(c)
        with MetaShadow(modules) as shadow:
            self._step = (tx, undo)
            try:
                self._apply_removed(removed, None, False, shadow.twin)
                with torch.no_grad():
                    self._retrace(None, on_meta=True)
                return None
            except Exception as err:  # anything user code (updaters, the forward) raises means: it breaks
                return f"{type(err).__name__}: {err}"
            finally:
                self._step = None
                self._pending_model_update = False
                tx.rollback()
                for f in reversed(undo):
                    f()

    def _root_for(self, a: int, types: tuple[type, ...] | None):
        table = self.dims.atoms
        slices = self.index.slices_of([a])
        exact_layout = ("a", a)
        producers = self._producers.get(a, [])
        if types is not None:
            producers = [m for m in producers if isinstance(m, types)]
            if not producers:
                return None
        best = None
        for m in producers:
            for s in slices:
                if s.module is m:
                    if table.norm(s.layout) == exact_layout:
                        return s
                    best = best or s
        if best is not None:
            return best
        for s in slices:
            if table.norm(s.layout) == exact_layout:
                return s
        return slices[0] if slices else None

    # -------------------------------------------------------------- apply
    def _prune_group(self, group: Group, idxs, record_history: bool = True) -> None:
        group.check_fresh()
        removed = group.removal(idxs)
        if removed:
            self._apply_removed(removed, group.root, record_history)

    def _apply_removed(self, removed: dict[int, torch.Tensor], root, record_history: bool = True,
                       resolve: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        """Remove what ``removed`` marks (per atom) from the model; ``resolve`` redirects the cuts to stand-in
        tensors (meta twins, for a shapes-only trial inside :meth:`transaction`)."""
        table = self.dims.atoms
        for a in removed:
            reason = table.pin_reason(a)
            if reason is not None:
                raise PruningError(f"cannot prune a pinned dim ({reason})")
        atoms = list(removed)
        slices = self.index.slices_of(atoms)
        bindings = self.index.bindings_of(atoms)
        counts = {a: int(m.sum()) for a, m in removed.items()}
        root_positions = table.removal_mask(root.layout, removed).nonzero().flatten().tolist() \
            if record_history else []
        if self._step is None:
            with Transaction() as tx:
                apply_removal(table, slices, bindings, removed, tx, log=self.removal_log)
                self._attrs.apply(counts, tx)
        else:  # inside transaction(): the edits join it, and so does the graph's bookkeeping
            tx, undo = self._step
            apply_removal(table, slices, bindings, removed, tx, resolve, self.removal_log)
            self._attrs.apply(counts, tx, model_level=False)  # whole-model updaters: once, at flush_updates()
            self._pending_model_update = True
            shapes = [(s.value, s.value.shape) for s in slices if isinstance(s, ParamSlice)]
            n_history = len(self._history)
            undo.append(lambda: self._undo_prune(counts, shapes, n_history))
        table.shrink(counts)
        for s in slices:
            if isinstance(s, ParamSlice):
                s.value.shape = tuple((s.tensor if resolve is None else resolve(s.tensor)).shape)
        if record_history:
            name = root.fqn if isinstance(root, ParamSlice) else root.module_name
            self._history.append((name, getattr(root, "dim", getattr(root, "role", "")), root_positions))

    def _undo_prune(self, counts: dict[int, int], shapes: list, history_len: int) -> None:
        self.dims.atoms.shrink({a: -k for a, k in counts.items()})
        for value, shape in shapes:
            value.shape = shape
        del self._history[history_len:]

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """Make every pruning inside the ``with`` block one all-or-nothing edit.

        If anything raises inside (a group that cannot be pruned, a failed :meth:`verify`, user code,
        ``KeyboardInterrupt``), the model's parameters and buffers (data and ``.grad``, buffers by value),
        the module attributes and model configs the pruning wrote, and this graph's sizes and history are
        all restored exactly, and the exception propagates. Nested blocks join the outermost one.

        Example:
            >>> import torch, anyprune as tp
            >>> model = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.ReLU(), torch.nn.Linear(6, 2))
            >>> dg = tp.DependencyGraph().build_dependency(model, torch.randn(1, 4))
            >>> try:
            ...     with dg.transaction():
            ...         next(iter(dg.groups())).prune([0, 1])
            ...         raise RuntimeError("changed my mind")
            ... except RuntimeError:
            ...     pass
            >>> model[0].out_features, model[2].weight.shape
            (6, torch.Size([2, 6]))
        """
        self._require_built()
        if self._step is not None:
            yield
            return
        tx = Transaction()
        undo: list[Callable[[], None]] = []
        for m in {id(m): m for m in self.model.modules()}.values():
            tx.snapshot_module(m, copy_buffers=True, copy_attrs=False)
            config = getattr(m, "config", None)
            if config is not None and hasattr(config, "__dict__"):
                tx.snapshot_object(config)
        self._step = (tx, undo)
        self._pending_model_update = False
        try:
            yield
            self.flush_updates()
        except BaseException:
            tx.rollback()
            for f in reversed(undo):
                f()
            raise
        else:
            tx.commit()
        finally:
            self._step = None

    def flush_updates(self) -> None:
        """Run the whole-model attribute updaters (a Hugging Face config's sizes) that pruning inside
        :meth:`transaction` has put off: they run once per transaction rather than once per group. Called at the
        end of the transaction and by :meth:`verify`; call it before reading the config mid-transaction."""
        if self._step is not None and self._pending_model_update:
            self._attrs.apply_model_level(self._step[0])
            self._pending_model_update = False

    def lint(self) -> None:
        """Check the graph against the model: every parameter slice's layout has the tensor's current size.

        Raises ``ValueError`` naming the first slice that disagrees (run it after pruning to check that
        the graph and the model moved together).
        """
        self._require_built()
        self.ops.lint()
        table = self.dims.atoms
        for s in self.index.slices:
            if isinstance(s, ParamSlice):
                n = table.size(s.layout)
                if s.tensor.shape[s.dim] != n:
                    raise ValueError(f"{s.fqn} dim {s.dim} has size {s.tensor.shape[s.dim]}, its layout {n}")

    def verify(self, example_inputs: Any = None) -> list[tuple[int, ...]]:
        """Check that the (pruned) model still runs: re-trace it on meta twins of its parameters.

        Runs on ``example_inputs`` (default: the inputs the graph was built with) in the model's current
        mode, computing shapes only (no arithmetic, buffers and modes left as they are; models that need
        real values run for real). Raises :class:`~anyprune.VerificationError` naming the op and source
        line that no longer fits, or the output whose shape changed. Returns the output shapes.
        """
        self._require_built()
        return self._retrace(example_inputs)

    def _retrace(self, example_inputs: Any, on_meta: bool = False) -> list[tuple[int, ...]]:
        """:meth:`verify`; ``on_meta``: the parameters are meta twins, so the inputs become meta tensors too."""
        self.flush_updates()
        from .errors import TraceError, VerificationError

        assert self._example is not None
        inputs, forward_fn, transform = self._example
        given = example_inputs is not None
        run_on = example_inputs if given else inputs
        try:
            ops = trace(self.model, to_meta(run_on) if on_meta else run_on, forward_fn, transform,
                        leaf_modules=tuple(self.customized_pruners), compute="meta" if on_meta else "auto")
        except TraceError as err:
            cause = err.__cause__
            line = raised_at(cause) if cause is not None else None
            where = err.failed_at or (f"the forward pass at {line}" if line else "the forward pass")
            raise VerificationError(f"{where} no longer fits after pruning: {type(cause).__name__}: {cause}") \
                from err
        shapes = [tuple(v.shape) for v in ops.outputs]
        if not given:
            for k, (now, then) in enumerate(zip(shapes, (tuple(v.shape) for v in self.ops.outputs))):
                if now != then:
                    raise VerificationError(
                        f"output {k} has shape {now} after pruning, {then} before; a dim that reaches the output "
                        "was pruned"
                    )
        return shapes

    def register_customized_layer(self, layer_type: type, layer_pruner: Any) -> None:
        """Treat layers of ``layer_type`` as opaque, pruned by ``layer_pruner`` (an object with
        ``prune_out_channels`` / ``prune_in_channels`` / ``get_out_channels`` / ``get_in_channels``, e.g. a
        :class:`anyprune.function.BasePruningFunc` subclass). Call it before :meth:`build_dependency`; it is the
        same as passing ``customized_pruners={layer_type: layer_pruner}`` there."""
        if self._ops is not None:
            raise ConfigError("register_customized_layer must be called before build_dependency (the graph is built); "
                              "or pass customized_pruners={LayerType: pruner} to build_dependency")
        self._check_pruners({layer_type: layer_pruner})
        self._registered_pruners[layer_type] = layer_pruner

    def get_out_channels(self, module: Any) -> int | None:
        """The current number of output channels of a layer (``None`` where it has none to prune)."""
        return self._channels(module, out=True)

    def get_in_channels(self, module: Any) -> int | None:
        """The current number of input channels of a layer (``None`` where it has none to prune)."""
        return self._channels(module, out=False)

    def _channels(self, module: Any, out: bool) -> int | None:
        from .function import pruner_for

        module = getattr(module, "module", module)  # a seed Node
        custom = next((p for t, p in {**self._registered_pruners, **self.customized_pruners}.items()
                       if isinstance(module, t)), None)
        pruner = custom if custom is not None else pruner_for(module)
        if pruner is None:
            raise ConfigError(f"no pruner knows the channels of a {type(module).__name__}; register one with "
                              "register_customized_layer")
        return pruner.get_out_channels(module) if out else pruner.get_in_channels(module)

    def pruning_history(self) -> list[tuple[str, Any, list[int]]]:
        """``(root parameter, dim, positions)`` for every group pruned through this graph, in order; positions
        are those removed from the root dim (before that step). JSON-able; replay it on an unpruned copy of
        the model with :meth:`load_pruning_history`."""
        return [(n, d, list(p)) for n, d, p in self._history]

    def load_pruning_history(self, history: Iterable) -> None:
        """Replay ``pruning_history()`` of another graph of the same (unpruned) model on this graph's model.

        The form of every step and its root are checked before the first step is applied, so a malformed
        history leaves the model untouched; the positions of each step are checked when it is reached (they
        refer to the sizes the earlier steps leave): a step that cannot be replayed raises
        :class:`~anyprune.PruningError` and leaves that step undone.
        """
        self._require_built()
        if isinstance(history, (str, bytes, dict)) or not isinstance(history, Iterable):
            raise ConfigError("load_pruning_history expects the list returned by pruning_history(), got "
                              f"{type(history).__name__}")
        roots: dict[tuple[str, int], ParamSlice] = {}
        for s in self.index.slices:
            if isinstance(s, ParamSlice):
                roots.setdefault((s.fqn, s.dim), s)
        steps = []
        for k, step in enumerate(list(history)):
            if not (isinstance(step, (tuple, list)) and len(step) == 3):
                raise ConfigError(f"history step {k} must be (root, dim, positions), got {step!r}; pass the list "
                                  "returned by pruning_history()")
            name, dim, positions = step
            root = roots.get((name, dim)) if isinstance(name, str) and type(dim) is int else None
            if root is None:
                raise PruningError(f"history step {k}: {name!r} dim {dim!r} is not a prunable dim of this model; "
                                   "replay the history on the same (unpruned) architecture it was recorded on")
            steps.append((k, name, dim, positions, root))
        with self.transaction():
            for k, name, dim, positions, root in steps:
                n = self.dims.atoms.size(root.layout)
                pos = validate_indices(positions, n, f"history step {k} ({name} dim {dim})")
                removed = self._positions_to_removal(root.layout, pos)
                group = Group(self, list(removed), self.index.slices_of(list(removed)), root, pos, removed)
                self._prune_group(group, None)
            if steps:
                with torch.no_grad():
                    self.verify()

    # ------------------------------------------------------ seed iteration
    def _dependencies(self, group: Group) -> list[tuple[Dependency, list[int]]]:
        table = self.dims.atoms
        removed = group._removed
        if removed is None and group._root_positions is not None:
            removed = group.removal()
        deps: dict[tuple[int, Any], tuple[Dependency, list[int]]] = {}
        order: list[tuple[int, Any]] = []
        for s in [group.root] + [s for s in group.slices if s is not group.root]:
            if isinstance(s, LeafSlice):
                target = Node(s.module, s.module_name)
                handler = getattr(s.pruner, f"prune_{s.role}_channels")
            else:
                handler = handler_for(s.module, s.attr, s.dim)
                if s.module is None or handler is prune_parameter_out_channels:
                    target = Node(s.tensor, s.fqn)
                else:
                    target = Node(s.module, s.module_name)
            key = (id(target.module), handler)
            if key in deps:
                deps[key][0].slices.append(s)
                continue
            if removed is not None:
                pos = table.removal_mask(s.layout, removed).nonzero().flatten().tolist()
            else:
                present = torch.zeros(table.size(s.layout), dtype=torch.bool)
                for a in group.atoms:
                    present |= table.index_of(s.layout, a) >= 0
                pos = present.nonzero().flatten().tolist()
            deps[key] = (Dependency(target, handler, [s]), pos)
            order.append(key)
        return [deps[k] for k in order]

    def _describe(self, group: Group) -> str:
        table = self.dims.atoms
        removed = group._removed
        if removed is None and group._root_positions is not None:
            removed = group.removal()
        kind = "exact" if group.exact else "approximate: " + "; ".join(group.mixing_reasons)
        atoms = ", ".join(table.describe(("a", a)) for a in group.atoms)
        chosen = "no indices chosen" if removed is None else \
            f"{sum(int(m.sum()) for m in removed.values())} of {group.size} indices chosen"
        rule = "-" * 72
        lines = [rule, f"Pruning Group ({kind})", f"atoms {atoms}: {chosen}", rule]
        k = 0
        for s in [group.root] + [s for s in group.slices if s is not group.root]:
            n = table.size(s.layout)
            after = n - int(table.removal_mask(s.layout, removed).sum()) if removed is not None else n
            imap = self._index_map_kind(s.layout, group.atoms)
            if isinstance(s, LeafSlice):
                what = f"{s.module_name} ({type(s.module).__name__}) {s.role} channels"
            else:
                what = f"{s.fqn} dim {s.dim}"
            mark = "  (root)" if s is group.root else ""
            sizes = f"{n} -> {after}" if removed is not None else f"{n}"
            lines.append(f"[{k}] {what}: {sizes} ({imap}){mark}")
            k += 1
        lines.append(rule)
        return "\n".join(lines)

    def _index_map_kind(self, layout: tuple, atoms: list[int]) -> str:
        table = self.dims.atoms
        lay = table.norm(layout)
        if lay[0] == "a":
            return "identity"
        count = 0

        def walk(node, in_prod):
            nonlocal count
            if node[0] == "a":
                if node[1] in atoms:
                    count += 1
                return "factor" if in_prod and node[1] in atoms else None
            found = None
            for kid in node[1]:
                r = walk(kid, in_prod or node[0] == "p")
                found = found or r
            return found

        fac = walk(lay, False)
        if count > 1:
            return "tile"
        return fac or "segment"
