"""The dimension graph: a layout for every dimension of every traced value.

Building it runs one rule per recorded call (see :mod:`anyprune.dims.rules`).
Edges are implicit in the layouts: two dimensions are coupled exactly when
their layouts share atoms. The guarantees:

* every dimension of every value has a layout of the value's size;
* a dimension that reaches a model input or output, an op without a rule, an
  ignored layer or a literal the rules cannot update is *pinned* (its atoms
  carry the reason) and is never pruned;
* an atom whose pruning changes what an op normalises or averages over is
  marked *mixing*: pruning it is approximate, not exact.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ..errors import UnsupportedOpWarning
from ..trace.opgraph import Call, OpGraph, Value
from ..trace.sizes import dims_in, evaluate, expr_of, value_exprs
from . import rules
from .layout import AtomTable
from .rules import QUIET_PIN, PinDims, get_rule

__all__ = ["DimGraph", "Binding", "RuleContext", "build_dim_graph"]

_VALUE_MAKERS = {torch.tensor, torch.as_tensor, torch.scalar_tensor, torch.Tensor.new_tensor}
_FILLERS = {torch.full, torch.full_like, torch.Tensor.new_full, torch.Tensor.fill_}

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Binding:
    """A module attribute whose value follows the size of some layouts.

    After pruning, ``setattr(obj, attr, make(new_sizes))``.
    """

    obj: Any
    attr: str
    layouts: list
    make: Callable[[list[int]], Any]


class RuleContext:
    """What a rule sees: the call, the layouts of its inputs, and ways to couple them."""

    def __init__(self, graph: DimGraph, call: Call) -> None:
        self.graph = graph
        self.call = call
        self.atoms = graph.atoms
        self._set: dict[int, list] = {}

    # reading
    def layouts(self, v: Value) -> list:
        return self.graph.layouts(v)

    @property
    def outputs(self) -> list[Value]:
        return self.call.outputs

    @property
    def out(self) -> Value:
        return self.call.outputs[0]

    def module_of(self, v: Value | None, kind: type | tuple[type, ...] | None = None) -> nn.Module | None:
        """The module owning parameter/buffer ``v``; with ``kind``, the first of its owners of that type (a tied
        weight has one owner per name, e.g. an embedding and the output projection that reuses it)."""
        return self.graph.module_of(v, kind)

    # writing
    def set_output(self, layouts: list, index: int = 0) -> None:
        v = self.call.outputs[index]
        if len(layouts) != v.ndim:
            raise ValueError(f"rule gave {len(layouts)} layouts for a {v.ndim}-d output")
        for lay, s in zip(layouts, v.shape):
            if self.atoms.size(lay) != s:
                raise ValueError(f"rule gave a layout of size {self.atoms.size(lay)} for a dim of size {s}")
        self._set[index] = list(layouts)

    def unify(self, a: tuple, b: tuple) -> None:
        self.atoms.unify(a, b, self.where)

    def new(self, size: int, pin: str | None = None) -> tuple:
        return self.atoms.new(size, pin)

    def fresh(self, shape, pin: str | None = None) -> list:
        return [self.atoms.new(int(s), pin) for s in shape]

    def pin(self, layout: tuple, reason: str) -> None:
        self.atoms.pin(layout, f"{reason} ({self.where})")

    def constant(self, layout: tuple, reason: str, slot: tuple = ()) -> None:
        """A size the code wrote as a constant (a ``view`` factor, a ``split`` size, an ``expand`` size).

        Pinned, unless the call runs inside the forward of a module with a registered attribute updater
        (:func:`anyprune.register_module_updater`): there the constant comes from an attribute the
        updater keeps in sync, so the dim stays prunable and is recorded in :attr:`DimGraph.released`.
        ``slot`` says where the constant sits (e.g. ``("reshape", rank, position from the end)``):
        constants of one module with equal value and slot are taken to be one attribute.
        """
        scope = self.call.scope
        if scope is None:
            self.pin(layout, reason)
        else:
            self.graph.released.append(
                Released(scope, layout, self.atoms.size(layout), f"{reason} ({self.where})", slot))

    def size_arg(self, layout: tuple, size: Any, reason: str, slot: tuple = ()) -> None:
        """``size`` is what the code passed for a dim whose layout is ``layout`` (a ``view`` size, a slice bound).

        A size read from a traced tensor (a :class:`~anyprune.trace.sizes.TracedSize`, ``C // h`` with
        ``C`` from ``x.shape``) is checked, once the graph is built, to follow ``layout`` when any atom it
        depends on is pruned; the atoms for which it does not are pinned. A plain number is a constant of
        the code (see :meth:`constant`). ``-1`` follows by definition.
        """
        expr = expr_of(size)
        if expr is not None:
            self.graph.size_checks.append(
                (layout, expr, f"the size {int(size)} ({reason}) that {self.where} computes from a tensor's shape",
                 self.call.scope))
        elif int(size) != -1 and self.atoms.size(layout) > 1:
            self.constant(layout, f"size {int(size)} written as a constant in {self.call.name} ({reason})", slot)

    def mix(self, layout: tuple, reason: str) -> None:
        self.atoms.mark_mixing(layout, f"{reason} ({self.where})")

    def bind(self, obj: Any, attr: str, layouts: list, make: Callable[[list[int]], Any] | None = None) -> None:
        """Record that ``obj.attr`` must follow the size of ``layouts`` after pruning."""
        if obj is None:
            return
        self.graph.bindings.append(Binding(obj, attr, list(layouts), make or (lambda s: s[0])))

    @property
    def where(self) -> str:
        return f"{self.call.name} at {self.call.source}"


@dataclasses.dataclass(frozen=True)
class Released:
    """A constant size left prunable because module ``scope`` has an attribute updater."""

    scope: str
    layout: tuple
    value: int
    reason: str
    slot: tuple = ()


class DimGraph:
    """Layouts of all dimensions of an :class:`~anyprune.trace.opgraph.OpGraph`."""

    def __init__(self, ops: OpGraph, model: nn.Module | None = None,
                 modules: dict[str, nn.Module] | None = None) -> None:
        self.ops = ops
        self.model = model
        self.atoms = AtomTable()
        self._layouts: dict[int, list] = {}
        self.bindings: list[Binding] = []
        self.released: list[Released] = []
        # (layout, expression, reason, scope): a size read from traced tensors that must follow the layout
        self.size_checks: list[tuple[tuple, tuple, str, str | None]] = []
        self.unknown: dict[str, list[str]] = {}
        self.failed_rules: dict[str, str] = {}
        if modules is None:
            modules = dict(model.named_modules()) if model is not None else {}
        self._modules: dict[str, nn.Module] = modules
        self.leaf_pruners: dict[type, Any] = {}
        self.leaf_dims: dict[str, tuple] = {}

    # ----------------------------------------------------------- values
    def layouts(self, v: Value) -> list:
        lay = self._layouts.get(v.index)
        if lay is None:
            if v.kind == "input":
                pin = f"model input {v.name}"
            elif v.kind == "const":
                pin = f"constant tensor {list(v.shape)} not derived from traced values"
            elif v.kind in ("param", "buffer"):
                pin = None
            else:
                pin = "value without a rule"
            lay = [self.atoms.new(s, pin) for s in v.shape]
            self._layouts[v.index] = lay
        return lay

    def module_of(self, v: Value | None, kind: type | tuple[type, ...] | None = None) -> nn.Module | None:
        """The module owning parameter/buffer ``v`` (the first of its names); with ``kind``, the first owner of
        that type, or ``None``."""
        if v is None or not v.names or v.kind not in ("param", "buffer"):
            return None
        if kind is None:
            return self._modules.get(v.names[0].rpartition(".")[0])
        for name in v.names:
            m = self._modules.get(name.rpartition(".")[0])
            if isinstance(m, kind):
                return m
        return None

    def param_values(self) -> list[Value]:
        return [v for v in self.ops.values if v.kind in ("param", "buffer") and v.index in self._layouts]

    # ------------------------------------------------------------ build
    def run_rules(self, check_sizes: bool = True) -> None:
        """Run the rule of every call. ``check_sizes=False`` leaves :meth:`check_sizes` to the caller (to run
        once couplings declared outside the trace, such as attribute updaters', are in the table)."""
        rules.vision.register_if_loaded()
        for call in self.ops.calls:
            self._run(call)
        if check_sizes:
            self.check_sizes()
        for v in self.ops.outputs:
            for lay in self.layouts(v):
                self.atoms.pin(lay, f"model output {v.name}")
        self._warn_unknown()

    def _run(self, call: Call) -> None:
        ctx = RuleContext(self, call)
        base = call.view_base
        rule = get_rule(call.func) if call.leaf_module is None else self._leaf_rule(call)
        reason = None
        if base is not None and len(call.inputs) > 1:
            # writing other tensors into a view changes its base behind the graph's back; a unary
            # in-place op (relu_, dropout) couples nothing new and needs no pin
            reason = "in-place write through a view"
            for lay in self.layouts(base):
                self.atoms.pin(lay, f"{reason} ({ctx.where})")
            rule = None
        if rule is None and reason is None:
            if not call.inputs:
                reason = f"created by {call.name}"
            elif call.func in QUIET_PIN:
                reason = QUIET_PIN[call.func]
            else:
                reason = "op without a dimension rule"
                self.unknown.setdefault(call.name, []).append(call.source)
        if rule is not None:
            try:
                rule(ctx, *call.args, **call.kwargs)
            except PinDims as signal:
                reason = str(signal)
                ctx._set.clear()
            except Exception as err:
                reason = f"rule failed: {type(err).__name__}: {err}"
                self.failed_rules.setdefault(call.name, reason)
                log.debug("rule for %s failed at %s", call.name, call.source, exc_info=True)
                ctx._set.clear()
        if reason is not None:
            for v in call.inputs:
                for lay in self.layouts(v):
                    ctx.pin(lay, reason)
        self._sizes_as_values(ctx, rule)
        for i, v in enumerate(call.outputs):
            lay = ctx._set.get(i)
            if lay is None:
                lay = [self.atoms.new(s, f"{reason or 'output not described by its rule'} ({ctx.where})")
                       for s in v.shape]
            self._layouts[v.index] = lay

    def check_sizes(self) -> None:
        """Pin the atoms whose pruning a size read from a tensor would not follow.

        For each recorded size (see :meth:`RuleContext.size_arg`), every unpinned atom of the dim it
        sizes and of the dims it was read from is shrunk in turn (by one index and by half): if the
        expression, recomputed from the shrunk dims, no longer equals the shrunk dim, the code would pass
        a stale size after pruning that atom, so the atom is pinned. Inside the forward of a module with an
        attribute updater, the atoms of the constants released there are skipped: the numbers in the
        expression may be the attributes the updater rewrites (``kv_heads * self.n_rep``).
        """
        if not self.size_checks:
            return
        table = self.atoms
        values = self.ops.values
        released: dict[str, set[int]] = {}
        for r in self.released:
            released.setdefault(r.scope, set()).update(table.atoms(r.layout))
        for layout, expr, reason, scope in self.size_checks:
            trusted = released.get(scope, set()) if scope is not None else set()
            sources = [(vi, d) for vi, d in dims_in(expr)]
            src_layouts: dict[tuple[int, int], tuple] = {}
            for vi, d in sources:
                lays = self.layouts(values[vi])
                src_layouts[(vi, d)] = lays[d] if d < len(lays) else table.new(1, "size of a missing dim")
            candidates = list(table.atoms(layout))
            for lay in src_layouts.values():
                candidates.extend(a for a in table.atoms(lay) if a not in candidates)
            for a in candidates:
                if table.pin_reason(a) is not None or a in trusted:
                    continue
                n = table.atom_size(a)
                for k in {1, n // 2}:
                    if not 0 < k < n:
                        continue
                    removed = {a: k}
                    got = evaluate(expr, functools.partial(_size_after, table, src_layouts, removed))
                    if got != table.size_after(layout, removed):
                        table.pin(("a", a), f"{reason} would not follow pruning this dim")
                        break

    def _sizes_as_values(self, ctx: RuleContext, rule: Callable | None) -> None:
        """Sizes read from tensors and used as *values* (``torch.tensor(q.size(-1))``, ``scores / d ** 0.5``,
        a fill value) change when their dims are pruned: those dims are marked mixing (pruning them is
        approximate, not exact)."""
        call = ctx.call
        if call.func in _VALUE_MAKERS:
            given = [call.args[:1], call.kwargs.get("data")]
        elif call.func in _FILLERS:
            given = [call.args[1:2] if call.func is not torch.Tensor.fill_ else call.args[1:],
                     call.kwargs.get("fill_value"), call.kwargs.get("value")]
        elif rule is rules.elementwise.broadcast:
            given = [call.args, call.kwargs]
        else:
            return
        for expr in value_exprs(given):
            for vi, d in dims_in(expr):
                lays = self.layouts(self.ops.values[vi])
                if d < len(lays):
                    ctx.mix(lays[d], "its size is used as a value (the value changes when it is pruned)")

    def _leaf_rule(self, call: Call) -> Callable:
        from .rules.leaf import leaf_module_rule

        return leaf_module_rule

    def _warn_unknown(self) -> None:
        if not self.unknown and not self.failed_rules:
            return
        parts = []
        for name, sources in self.unknown.items():
            parts.append(f"{name} ({sources[0]}) ×{len(sources)}")
        for name, why in self.failed_rules.items():
            parts.append(f"{name} [{why}]")
        warnings.warn(
            f"{len(parts)} op(s) without a usable dimension rule; the dims they touch were pinned "
            f"(never pruned): {', '.join(parts)}. Register a rule with "
            "`@anyprune.register_dim_rule(func)` to make them prunable.",
            UnsupportedOpWarning,
            stacklevel=4,
        )

    # ------------------------------------------------------------ checks
    def lint(self) -> None:
        """Every layout matches its value's shape; raises ``ValueError`` naming the value."""
        for v in self.ops.values:
            lay = self._layouts.get(v.index)
            if lay is None:
                continue
            if len(lay) != v.ndim:
                raise ValueError(f"{v!r} has {len(lay)} layouts for {v.ndim} dims")
            for d, (layout, s) in enumerate(zip(lay, v.shape)):
                if self.atoms.size(layout) != s:
                    raise ValueError(f"{v!r} dim {d}: layout size {self.atoms.size(layout)} != {s}")

    def describe(self, v: Value) -> str:
        return ", ".join(self.atoms.describe(lay) for lay in self.layouts(v))

    def __str__(self) -> str:
        lines = [f"DimGraph: {len(self._layouts)} values, {self.atoms.num_atoms} atoms"]
        for v in self.param_values():
            lines.append(f"  {v.name}: [{self.describe(v)}]")
        return "\n".join(lines)


def _size_after(table: AtomTable, layouts: dict, removed: dict[int, int], vi: int, d: int) -> int:
    return table.size_after(layouts[(vi, d)], removed)


def build_dim_graph(ops: OpGraph, model: nn.Module | None = None) -> DimGraph:
    """Run every rule over ``ops`` and return the dimension graph."""
    g = DimGraph(ops, model)
    g.run_rules()
    return g
