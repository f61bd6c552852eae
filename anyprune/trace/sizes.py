"""Sizes that remember where they came from.

Model code passes sizes to shape ops: ``qkv.reshape(B, N, 3, self.num_heads, C // self.num_heads)``.
Some of them are read from a tensor at run time (``B, N, C = x.shape``) and follow that tensor when it
is pruned; others are constants of the code or attributes of a module (``self.num_heads``) and do not.
While tracing, the recorder hands out every size read from a traced tensor (``x.shape``, ``x.size()``,
``x.size(d)``, ``x.numel()``, ``len(x)``) as a :class:`TracedSize`: an ``int`` that also carries an
expression over the dims it was read from. Integer arithmetic on traced sizes (``+ - * // %``) keeps the
expression; anything else (``int(n)``, ``math.sqrt``, a division to float) gives a plain number, which is
then treated as a constant: the safe direction, since a constant pins what it sizes.

Expressions are tuples:

* ``("dim", value_index, d)``: the size of dim ``d`` of a traced value;
* ``("num", n)``: a plain integer;
* ``(op, a, b)`` with ``op`` in ``add sub mul floordiv mod truediv pow``; ``("neg", a)``.

Dividing a traced size or raising it to a power gives a :class:`TracedFloat` (``x.size(-1) ** -0.5``).

:func:`evaluate` recomputes an expression from new dim sizes, which is how the dimension graph checks
that a size written into a shape op still fits once the dims it was read from are pruned.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["TracedSize", "TracedFloat", "evaluate", "expr_of", "value_exprs", "dims_in", "traced_shape", "product"]


def expr_of(n: Any) -> tuple | None:
    """The expression of a traced size; ``None`` for a plain number (a constant of the code)."""
    return getattr(n, "_anyprune_expr", None) if isinstance(n, TracedSize) else None


def value_exprs(obj: Any) -> list[tuple]:
    """Expressions of the traced numbers (sizes and floats computed from them) nested in ``obj``."""
    if isinstance(obj, (TracedSize, TracedFloat)):
        return [obj._anyprune_expr]
    if isinstance(obj, (list, tuple)):
        return [e for o in obj for e in value_exprs(o)]
    if isinstance(obj, dict):
        return [e for o in obj.values() for e in value_exprs(o)]
    return []


def _operand(x: Any) -> tuple | None:
    if isinstance(x, (TracedSize, TracedFloat)):
        return x._anyprune_expr
    if isinstance(x, (int, float)) and not isinstance(x, bool):
        return ("num", x)
    return None


class TracedSize(int):
    """An ``int`` read from a traced tensor's shape, with the expression that produced it."""

    _anyprune_expr: tuple

    def __new__(cls, value: int, expr: tuple) -> TracedSize:
        obj = super().__new__(cls, value)
        obj._anyprune_expr = expr
        return obj

    def __repr__(self) -> str:
        return int.__repr__(self)

    def __reduce__(self):  # pickles (and deep-copies) as the plain int it is
        return (int, (int(self),))

    def _binary(self, other: Any, op: str, value: Any, swap: bool = False) -> Any:
        if value is NotImplemented or not isinstance(value, int) or isinstance(value, bool):
            return value
        o = _operand(other)
        if o is None:
            return value
        a, b = (o, self._anyprune_expr) if swap else (self._anyprune_expr, o)
        return TracedSize(value, (op, a, b))

    def __add__(self, other: Any) -> Any:
        return self._binary(other, "add", int.__add__(self, other))

    def __radd__(self, other: Any) -> Any:
        return self._binary(other, "add", int.__radd__(self, other), swap=True)

    def __sub__(self, other: Any) -> Any:
        return self._binary(other, "sub", int.__sub__(self, other))

    def __rsub__(self, other: Any) -> Any:
        return self._binary(other, "sub", int.__rsub__(self, other), swap=True)

    def __mul__(self, other: Any) -> Any:
        return self._binary(other, "mul", int.__mul__(self, other))

    def __rmul__(self, other: Any) -> Any:
        return self._binary(other, "mul", int.__rmul__(self, other), swap=True)

    def __floordiv__(self, other: Any) -> Any:
        return self._binary(other, "floordiv", int.__floordiv__(self, other))

    def __rfloordiv__(self, other: Any) -> Any:
        return self._binary(other, "floordiv", int.__rfloordiv__(self, other), swap=True)

    def __mod__(self, other: Any) -> Any:
        return self._binary(other, "mod", int.__mod__(self, other))

    def __rmod__(self, other: Any) -> Any:
        return self._binary(other, "mod", int.__rmod__(self, other), swap=True)

    def __neg__(self) -> Any:
        return TracedSize(-int(self), ("neg", self._anyprune_expr))

    def __truediv__(self, other: Any) -> Any:
        return _traced_float(_apply(lambda a, b: a / b, int(self), other), "truediv", self._anyprune_expr,
                             _operand(other))

    def __rtruediv__(self, other: Any) -> Any:
        return _traced_float(_apply(lambda a, b: b / a, int(self), other), "truediv", _operand(other),
                             self._anyprune_expr)

    def __pow__(self, other: Any, mod: Any = None) -> Any:
        if mod is not None:
            return int.__pow__(self, other, mod)
        return _traced_float(_apply(lambda a, b: a ** b, int(self), other), "pow", self._anyprune_expr,
                             _operand(other))

    def __pos__(self) -> Any:
        return self

    def __hash__(self) -> int:
        return int.__hash__(self)


class TracedFloat(float):
    """A ``float`` computed from traced sizes (``x.size(-1) ** -0.5``): used as a value, it depends on dims."""

    _anyprune_expr: tuple

    def __new__(cls, value: float, expr: tuple) -> TracedFloat:
        obj = super().__new__(cls, value)
        obj._anyprune_expr = expr
        return obj

    def __repr__(self) -> str:
        return float.__repr__(self)

    def __reduce__(self):
        return (float, (float(self),))

    def __hash__(self) -> int:
        return float.__hash__(self)

    def _op(self, other: Any, op: str, value: Any, swap: bool = False) -> Any:
        o = _operand(other)
        if o is None or value is NotImplemented:
            return value
        a, b = (o, self._anyprune_expr) if swap else (self._anyprune_expr, o)
        return _traced_float(value, op, a, b)

    def __mul__(self, other: Any) -> Any:
        return self._op(other, "mul", _apply(lambda a, b: a * b, float(self), other))

    def __rmul__(self, other: Any) -> Any:
        return self._op(other, "mul", _apply(lambda a, b: b * a, float(self), other), swap=True)

    def __truediv__(self, other: Any) -> Any:
        return self._op(other, "truediv", _apply(lambda a, b: a / b, float(self), other))

    def __rtruediv__(self, other: Any) -> Any:
        return self._op(other, "truediv", _apply(lambda a, b: b / a, float(self), other), swap=True)

    def __add__(self, other: Any) -> Any:
        return self._op(other, "add", _apply(lambda a, b: a + b, float(self), other))

    def __radd__(self, other: Any) -> Any:
        return self._op(other, "add", _apply(lambda a, b: b + a, float(self), other), swap=True)

    def __sub__(self, other: Any) -> Any:
        return self._op(other, "sub", _apply(lambda a, b: a - b, float(self), other))

    def __rsub__(self, other: Any) -> Any:
        return self._op(other, "sub", _apply(lambda a, b: b - a, float(self), other), swap=True)

    def __pow__(self, other: Any, mod: Any = None) -> Any:
        return self._op(other, "pow", _apply(lambda a, b: a ** b, float(self), other))


def _apply(fn: Callable[[Any, Any], Any], a: Any, b: Any) -> Any:
    if isinstance(b, (TracedSize, TracedFloat)):
        b = int(b) if isinstance(b, TracedSize) else float(b)
    if not isinstance(b, (int, float)) or isinstance(b, bool):
        return NotImplemented
    return fn(a, b)


def _traced_float(value: Any, op: str, a: tuple | None, b: tuple | None) -> Any:
    if not isinstance(value, float) or a is None or b is None:
        return value
    return TracedFloat(value, (op, a, b))


def traced_shape(shape, value_index: int):
    """``torch.Size`` of :class:`TracedSize` for a value's shape."""
    import torch

    return torch.Size([TracedSize(int(s), ("dim", value_index, d)) for d, s in enumerate(shape)])


def product(sizes, value_index: int) -> TracedSize:
    """The number of elements of a value, as a traced size."""
    n, expr = 1, ("num", 1)  # type: tuple[int, tuple]
    for d, s in enumerate(sizes):
        n *= int(s)
        expr = ("mul", expr, ("dim", value_index, d))
    return TracedSize(n, expr)


def evaluate(expr: tuple, dim_size: Callable[[int, int], int]) -> Any:
    """The value of ``expr`` where ``dim_size(value_index, d)`` gives each dim's size (``None`` on a
    division by zero)."""
    kind = expr[0]
    if kind == "dim":
        return dim_size(expr[1], expr[2])
    if kind == "num":
        return expr[1]
    if kind == "neg":
        a = evaluate(expr[1], dim_size)
        return None if a is None else -a
    a, b = evaluate(expr[1], dim_size), evaluate(expr[2], dim_size)
    if a is None or b is None:
        return None
    if kind == "add":
        return a + b
    if kind == "sub":
        return a - b
    if kind == "mul":
        return a * b
    if kind == "pow":
        try:
            return a ** b
        except (ZeroDivisionError, OverflowError):
            return None
    if b == 0:
        return None
    if kind == "truediv":
        return a / b
    if kind == "floordiv":
        return a // b
    return a % b


def dims_in(expr: tuple) -> list[tuple[int, int]]:
    """The ``(value_index, dim)`` pairs an expression reads."""
    out: list[tuple[int, int]] = []

    def walk(e: tuple) -> None:
        if e[0] == "dim":
            out.append((e[1], e[2]))
        elif e[0] != "num":
            for sub in e[1:]:
                walk(sub)

    walk(expr)
    return out
