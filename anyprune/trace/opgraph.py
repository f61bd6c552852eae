"""The op graph: what one forward pass did, at the torch-function level.

Two kinds of node:

* :class:`Value` — a tensor: a model ``input``, a ``param``\\ eter, a
  ``buffer``, a ``const`` (a tensor the forward used but did not compute from
  traced values, e.g. a plain tensor attribute) or an intermediate ``tensor``.
  Parameters and buffers are identified by tensor identity, so a tied weight
  is one value with several names. An in-place op produces a new *version* of
  its input: a new value with ``version + 1``.
* :class:`Call` — one call of a torch function or tensor method, with its
  arguments (tensors replaced by their values), its output values and the
  user source line that made it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import torch

__all__ = ["Value", "Call", "OpGraph", "VALUE_KINDS", "func_name", "map_tensors"]

VALUE_KINDS = ("input", "param", "buffer", "const", "tensor")


@dataclasses.dataclass(eq=False, slots=True)
class Value:
    """A traced tensor (see the module docstring for the kinds)."""

    index: int
    kind: str
    shape: tuple[int, ...]
    dtype: torch.dtype
    names: list[str] = dataclasses.field(default_factory=list)
    producer: Call | None = None
    version: int = 0

    def __post_init__(self) -> None:
        if self.kind not in VALUE_KINDS:
            raise ValueError(f"unknown value kind {self.kind!r}; expected one of {VALUE_KINDS}")

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def name(self) -> str:
        if self.names:
            return self.names[0]
        return f"%{self.index}"

    def __repr__(self) -> str:
        return f"Value({self.name}, {self.kind}, {list(self.shape)})"


@dataclasses.dataclass(eq=False)
class Call:
    """One recorded call; ``args``/``kwargs`` hold :class:`Value` where tensors were.

    ``outputs`` lists the tensors of the result in order (a tuple result gives several).
    """

    index: int
    func: Callable
    args: tuple
    kwargs: dict
    inputs: list[Value]
    outputs: list[Value]
    source: str
    leaf_module: str | None = None
    view_base: Value | None = None  # set when an in-place op writes through a view of this value
    scope: str | None = None  # the innermost module with a registered attribute updater running this call

    @property
    def name(self) -> str:
        if self.leaf_module is not None:
            return f"module {self.leaf_module}"
        return func_name(self.func)

    def __repr__(self) -> str:
        ins = ", ".join(v.name for v in self.inputs)
        outs = ", ".join(v.name for v in self.outputs)
        return f"Call#{self.index} {self.name}({ins}) -> ({outs}) at {self.source}"


_F_NAMES: dict[int, str] = {}


def _functional_names() -> dict[int, str]:
    if not _F_NAMES:
        import torch.nn.functional as F

        for name, obj in vars(F).items():
            if callable(obj) and not name.startswith("_"):
                _F_NAMES.setdefault(id(obj), f"F.{name}")
    return _F_NAMES


def func_name(func: Callable) -> str:
    """A readable name for a torch function, method or op."""
    fname = _functional_names().get(id(func))
    if fname is not None:
        return fname
    if isinstance(func, torch._ops.OpOverloadPacket | torch._ops.OpOverload):
        return f"torch.ops.{func._qualified_op_name if hasattr(func, '_qualified_op_name') else func}"
    qual = getattr(func, "__qualname__", None) or getattr(func, "__name__", None)
    if qual is None:
        return repr(func)
    qual = qual.replace("_VariableFunctionsClass.", "torch.").replace("TensorBase.", "Tensor.")
    if qual.startswith("getset_descriptor.__get__") or qual == "__get__":
        owner = getattr(func, "__self__", None)
        attr = getattr(owner, "__name__", "?")
        return f"Tensor.{attr}"
    mod = getattr(func, "__module__", None)
    if mod and mod.startswith("torch.nn.functional") and "." not in qual:
        return f"F.{qual}"
    if qual.startswith("boolean_dispatch"):
        return f"F.{getattr(func, '__name__', 'fn')}"
    if "." not in qual and mod == "torch":
        return f"torch.{qual}"
    return qual


_LEAVES = (int, float, bool, str, type(None), torch.dtype, torch.device, torch.Size, slice, type(Ellipsis))


def map_tensors(obj: Any, fn: Callable[[torch.Tensor], Any]) -> Any:
    """Apply ``fn`` to every tensor nested in tuples, lists, dicts and dataclasses."""
    if isinstance(obj, torch.Tensor):
        return fn(obj)
    if isinstance(obj, _LEAVES):
        return obj
    if type(obj) is tuple or type(obj) is list:
        return type(obj)([map_tensors(o, fn) for o in obj])
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):
        return type(obj)(*(map_tensors(o, fn) for o in obj))
    if isinstance(obj, (list, tuple)):
        return type(obj)(map_tensors(o, fn) for o in obj)
    if isinstance(obj, dict):
        out = {k: map_tensors(v, fn) for k, v in obj.items()}
        try:
            return type(obj)(out)
        except Exception:
            return out
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        changes = {f.name: map_tensors(getattr(obj, f.name), fn) for f in dataclasses.fields(obj)}
        try:
            return dataclasses.replace(obj, **changes)
        except Exception:
            return changes
    return obj


def iter_tensors(obj: Any) -> list[torch.Tensor]:
    """Every tensor nested in ``obj`` (tuples, lists, dicts, dataclasses), in order."""
    found: list[torch.Tensor] = []
    _collect(obj, found)
    return found


def _collect(obj: Any, found: list[torch.Tensor]) -> None:
    if isinstance(obj, torch.Tensor):
        found.append(obj)
    elif isinstance(obj, _LEAVES):
        return
    elif isinstance(obj, (list, tuple)):
        for o in obj:
            _collect(o, found)
    elif isinstance(obj, dict):
        for o in obj.values():
            _collect(o, found)
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        for f in dataclasses.fields(obj):
            _collect(getattr(obj, f.name), found)


class OpGraph:
    """Values and calls recorded from one forward pass, in execution order."""

    def __init__(self) -> None:
        self.values: list[Value] = []
        self.calls: list[Call] = []
        self.inputs: list[Value] = []
        self.outputs: list[Value] = []
        self.unused_params: list[str] = []
        self.on_meta = False  # the forward ran on meta tensors (shapes only)

    def new_value(self, kind: str, t: torch.Tensor, names: list[str] | None = None, producer: Call | None = None,
                  version: int = 0) -> Value:
        v = Value(len(self.values), kind, tuple(int(s) for s in t.shape), t.dtype, list(names or []), producer, version)
        self.values.append(v)
        return v

    def lint(self) -> None:
        """Check ownership and order; raises ``ValueError`` naming the bad node."""
        seen: set[int] = set()
        for v in self.values:
            if v.producer is None and v.kind == "tensor":
                raise ValueError(f"{v!r} is an intermediate tensor without a producer")
        for c in self.calls:
            for v in c.inputs:
                if v.producer is not None and v.producer.index >= c.index:
                    raise ValueError(f"{c!r} uses {v!r} before it is produced")
            for v in c.outputs:
                if v.producer is not c:
                    raise ValueError(f"{c!r} lists output {v!r} produced elsewhere")
            if c.index in seen:
                raise ValueError(f"duplicate call index {c.index}")
            seen.add(c.index)

    def __str__(self) -> str:
        lines = [f"OpGraph: {len(self.values)} values, {len(self.calls)} calls"]
        for v in self.inputs:
            lines.append(f"  input {v.name}: {list(v.shape)}")
        for c in self.calls:
            outs = ", ".join(f"{v.name}{list(v.shape)}" for v in c.outputs)
            ins = ", ".join(v.name for v in c.inputs)
            lines.append(f"  {outs} = {c.name}({ins})")
        lines.append("  outputs: " + ", ".join(v.name for v in self.outputs))
        return "\n".join(lines)
