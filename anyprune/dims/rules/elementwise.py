"""Elementwise ops: broadcasting couples aligned dims of equal size."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ...trace.opgraph import Value
from .registry import quiet_pin, register_dim_rule, tensor_property

__all__ = ["broadcast", "identity"]


def _values(obj) -> list[Value]:
    out: list[Value] = []

    def walk(o):
        if isinstance(o, Value):
            out.append(o)
        elif isinstance(o, (list, tuple)):
            for x in o:
                walk(x)
        elif isinstance(o, dict):
            for x in o.values():
                walk(x)

    walk(obj)
    return out


def broadcast(ctx, *args, **kwargs) -> None:
    """Output dim ``d`` (aligned from the right) is coupled with every input dim of the same size."""
    ins = _values((args, kwargs))
    for i, out in enumerate(ctx.outputs):
        lays = []
        for d in range(out.ndim):
            from_right = out.ndim - d
            size = out.shape[d]
            chosen = None
            for v in ins:
                if v.ndim >= from_right and v.shape[v.ndim - from_right] == size:
                    lay = ctx.layouts(v)[v.ndim - from_right]
                    if chosen is None:
                        chosen = lay
                    elif size > 1:
                        ctx.unify(chosen, lay)
            if chosen is None:
                chosen = ctx.new(size, pin="dim created by broadcasting")
            lays.append(chosen)
        ctx.set_output(lays, i)


def identity(ctx, x, *args, **kwargs) -> None:
    """The output has the layouts of the first argument (casts, copies, dropout, ``type_as``)."""
    for i, _out in enumerate(ctx.outputs):
        ctx.set_output(list(ctx.layouts(x)), i)


_T = torch.Tensor
register_dim_rule(
    _T.add, _T.add_, _T.__add__, _T.__radd__, _T.__iadd__, torch.add,
    _T.sub, _T.sub_, _T.__sub__, _T.__rsub__, _T.__isub__, torch.sub, torch.rsub,
    _T.mul, _T.mul_, _T.__mul__, _T.__rmul__, _T.__imul__, torch.mul,
    _T.div, _T.div_, _T.__truediv__, _T.__rtruediv__, _T.__itruediv__, torch.div,
    _T.__floordiv__, _T.__mod__, _T.pow, _T.__pow__, _T.__rpow__, torch.pow, _T.pow_,
    _T.__and__, _T.__or__, _T.__xor__, _T.__invert__, _T.__neg__, _T.__abs__,
    _T.eq, _T.ne, _T.lt, _T.le, _T.gt, _T.ge, _T.__eq__, _T.__ne__, _T.__lt__, _T.__le__, _T.__gt__, _T.__ge__,
    torch.eq, torch.ne, torch.lt, torch.le, torch.gt, torch.ge,
    torch.where, _T.where, _T.masked_fill, _T.masked_fill_, torch.masked_fill,
    _T.copy_, _T.clamp, _T.clamp_, torch.clamp, _T.clamp_min, _T.clamp_max, _T.clip, torch.clip,
    F.hardswish, F.relu6, F.hardtanh, F.leaky_relu, F.elu, F.selu, F.celu, F.gelu, F.silu, F.mish,
    F.softplus, F.hardsigmoid, F.sigmoid, F.tanh, F.relu, F.threshold, F.logsigmoid, F.softsign,
    F.tanhshrink, F.hardshrink, F.softshrink, F.rrelu,
    torch.lerp, _T.lerp, torch.addcmul, torch.addcdiv,
    _T.float, _T.double, _T.half, _T.bfloat16, _T.int, _T.long, _T.bool,
    _T.fill_, _T.zero_, _T.normal_, _T.uniform_,
    torch.zeros_like, torch.ones_like, torch.empty_like, torch.full_like, torch.rand_like, torch.randn_like,
    _T.sigmoid, _T.sigmoid_, _T.relu, _T.relu_, _T.tanh, _T.exp, _T.log, _T.sqrt, _T.rsqrt, _T.abs, _T.neg,
    _T.reciprocal, _T.square, _T.sign, _T.erf, _T.sin, _T.cos, _T.floor, _T.ceil, _T.round, _T.exp_,
)(broadcast)

register_dim_rule(
    _T.contiguous, _T.clone, torch.clone, _T.detach, _T.detach_, torch.detach, _T.to, _T.type, _T.type_as,
    _T.cpu, _T.cuda, _T.requires_grad_,
    F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, F.alpha_dropout, F.feature_alpha_dropout,
    torch.dropout, torch.alpha_dropout, torch.feature_dropout, tensor_property("data"), _T.pin_memory,
    tensor_property("real"), tensor_property("imag"), torch.real, torch.imag,
)(identity)

quiet_pin(
    "data-dependent indexing",
    torch.topk, _T.topk, torch.sort, _T.sort, torch.argsort, _T.argsort, torch.nonzero, _T.nonzero,
    torch.unique, _T.unique, torch.argmax, _T.argmax, torch.argmin, _T.argmin, torch.searchsorted,
    torch.bincount, torch.multinomial, _T.__getitem__, _T.__setitem__,
    torch.gather, _T.gather, torch.masked_select, _T.masked_select, _T.index_put_, _T.index_put,
    torch.take, _T.tolist, _T.item, _T.scatter, _T.scatter_, torch.scatter, _T.scatter_add_,
)


@register_dim_rule(_T.new_full, _T.new_zeros, _T.new_ones, _T.new_empty, _T.new_tensor, torch.meshgrid)
def factory(ctx, *args, **kwargs) -> None:
    """Tensors whose sizes are literals: new values, pinned; the tensor argument only gives dtype/device."""
    for i, out in enumerate(ctx.outputs):
        ctx.set_output(ctx.fresh(out.shape, pin=f"created by {ctx.call.name} with literal sizes"), i)
