"""The rule registry: one function per op, keyed by the function object."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable

import torch

__all__ = ["register_dim_rule", "get_rule", "RULES", "QUIET_PIN", "PinDims"]


class PinDims(Exception):
    """Raised by a rule to pin every dim of its call on purpose (no warning), with the reason."""

RULES: dict = {}
QUIET_PIN: dict = {}  # ops whose dims are pinned by design (data-dependent indexing), with the reason


def register_dim_rule(*funcs: Callable, override: bool = False) -> Callable:
    """Register a dimension rule for one or more torch functions.

    A rule is called as ``rule(ctx, *args, **kwargs)`` with the call's own
    arguments, tensors replaced by :class:`~anyprune.trace.opgraph.Value`; it
    reads input layouts with ``ctx.layouts(value)``, couples them with
    ``ctx.unify`` and describes every output with ``ctx.set_output``.

    Args:
        funcs: the function objects as the recorder sees them (``torch.conv2d``,
            ``torch.Tensor.view``, ``torch.nn.functional.layer_norm``,
            ``torch.ops.mylib.myop``).
        override: replace an existing rule instead of raising.

    Example:
        >>> import torch, anyprune
        >>> def my_op(x):
        ...     return x * 2
        >>> @anyprune.register_dim_rule(my_op, override=True)
        ... def _my_op_rule(ctx, x):
        ...     ctx.set_output(ctx.layouts(x))
        >>> anyprune.dims.rules.get_rule(my_op) is _my_op_rule
        True
    """
    if not funcs:
        raise TypeError("register_dim_rule needs at least one function")

    def deco(rule: Callable) -> Callable:
        for f in funcs:
            if f in RULES and not override and RULES[f] is not rule:
                raise ValueError(f"a dimension rule for {f!r} is already registered; pass override=True to replace it")
            RULES[f] = rule
        _pointwise_name.cache_clear()
        return rule

    return deco


def tensor_property(name: str) -> Callable:
    """The ``__get__`` of a ``Tensor`` property (``T``, ``data``, ``real``) as the recorder sees it."""
    return inspect.getattr_static(torch.Tensor, name).__get__


def quiet_pin(reason: str, *funcs: Callable) -> None:
    for f in funcs:
        QUIET_PIN[f] = reason


@functools.cache
def _pointwise_name(name: str) -> bool:
    base = name.strip("_") if name.startswith("__") else name
    op = getattr(torch.ops.aten, base, None)
    if op is None and base.endswith("_"):
        op = getattr(torch.ops.aten, base[:-1], None)
    if op is None or not hasattr(op, "overloads"):
        return False
    try:
        return any(torch.Tag.pointwise in getattr(op, o).tags for o in op.overloads())
    except Exception:
        return False


def get_rule(func: Callable) -> Callable | None:
    """The rule for ``func``: registered ones first, then aten's pointwise ops by name."""
    try:
        rule = RULES.get(func)
    except TypeError:  # unhashable callables
        return None
    if rule is not None:
        return rule
    if isinstance(func, torch._ops.OpOverload):
        rule = RULES.get(func.overloadpacket)
        if rule is not None:
            return rule
    name = getattr(func, "__name__", None)
    if name and _pointwise_name(name):
        from .elementwise import broadcast

        return broadcast
    return None
