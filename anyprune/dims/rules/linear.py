"""Linear layers and matrix products."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .registry import PinDims, register_dim_rule


@register_dim_rule(F.linear)
def linear(ctx, input, weight, bias=None) -> None:
    x, w = ctx.layouts(input), ctx.layouts(weight)
    if weight.ndim == 1:
        ctx.unify(x[-1], w[0])
        ctx.set_output(list(x[:-1]))
        return
    ctx.unify(x[-1], w[1])
    if bias is not None:
        ctx.unify(ctx.layouts(bias)[0], w[0])
    ctx.set_output([*list(x[:-1]), w[0]])
    mod = ctx.module_of(weight, nn.Linear)
    if mod is not None:
        ctx.bind(mod, "out_features", [w[0]])
        ctx.bind(mod, "in_features", [w[1]])


@register_dim_rule(F.bilinear)
def bilinear(ctx, input1, input2, weight, bias=None) -> None:
    a, b, w = ctx.layouts(input1), ctx.layouts(input2), ctx.layouts(weight)
    ctx.unify(a[-1], w[1])
    ctx.unify(b[-1], w[2])
    if bias is not None:
        ctx.unify(ctx.layouts(bias)[0], w[0])
    ctx.set_output([*list(a[:-1]), w[0]])
    mod = ctx.module_of(weight)
    if isinstance(mod, nn.Bilinear):
        ctx.bind(mod, "out_features", [w[0]])
        ctx.bind(mod, "in1_features", [w[1]])
        ctx.bind(mod, "in2_features", [w[2]])


def _batch_broadcast(ctx, a_batch, b_batch, a_shape, b_shape, out_batch_shape):
    lays = []
    for d in range(len(out_batch_shape)):
        from_right = len(out_batch_shape) - d
        size = out_batch_shape[d]
        chosen = None
        for lay_list, shape in ((a_batch, a_shape), (b_batch, b_shape)):
            if len(shape) >= from_right and shape[len(shape) - from_right] == size:
                lay = lay_list[len(shape) - from_right]
                if chosen is None:
                    chosen = lay
                elif size > 1:
                    ctx.unify(chosen, lay)
        lays.append(chosen if chosen is not None else ctx.new(size, pin="broadcast batch dim"))
    return lays


@register_dim_rule(torch.matmul, torch.Tensor.matmul, torch.Tensor.__matmul__, torch.Tensor.__rmatmul__,
                   torch.mm, torch.Tensor.mm, torch.bmm, torch.Tensor.bmm)
def matmul(ctx, a, b, **kwargs) -> None:
    if ctx.call.func is torch.Tensor.__rmatmul__:
        a, b = b, a
    la, lb = list(ctx.layouts(a)), list(ctx.layouts(b))
    sa, sb = list(a.shape), list(b.shape)
    squeeze_a = squeeze_b = False
    if len(la) == 1:
        la, sa, squeeze_a = [ctx.new(1, pin="matmul vector"), *la], [1, *sa], True
    if len(lb) == 1:
        lb, sb, squeeze_b = [*lb, ctx.new(1, pin="matmul vector")], [*sb, 1], True
    ctx.unify(la[-1], lb[-2])
    out = ctx.out
    nb = out.ndim - (0 if squeeze_a else 1) - (0 if squeeze_b else 1)
    batch = _batch_broadcast(ctx, la[:-2], lb[:-2], sa[:-2], sb[:-2], list(out.shape[:nb]))
    tail = ([] if squeeze_a else [la[-2]]) + ([] if squeeze_b else [lb[-1]])
    ctx.set_output(batch + tail)


@register_dim_rule(torch.addmm, torch.Tensor.addmm, torch.baddbmm, torch.Tensor.baddbmm, torch.addbmm)
def addmm(ctx, *args, **kwargs) -> None:
    # positional or keyword (``torch.baddbmm(input=bias, batch1=q, batch2=k, beta=…, alpha=…)``, BLOOM)
    names = ("input", "batch1", "batch2") if "batch1" in kwargs or "batch2" in kwargs else ("input", "mat1", "mat2")
    if ctx.call.func in (torch.Tensor.addmm, torch.Tensor.baddbmm):
        names = ("self", *names[1:])
    given = list(args) + [kwargs[n] for n in names[len(args):] if n in kwargs]
    if len(given) < 3:
        raise PinDims(f"{ctx.call.name} called with unexpected arguments")
    input, a, b = given[:3]
    la, lb = ctx.layouts(a), ctx.layouts(b)
    ctx.unify(la[-1], lb[-2])
    out_l = [*list(la[:-1]), lb[-1]]
    if len(la) == 3:
        ctx.unify(la[0], lb[0])
    li = ctx.layouts(input)
    for d in range(1, min(len(li), len(out_l)) + 1):
        if input.shape[-d] == ctx.out.shape[-d] and ctx.out.shape[-d] > 1:
            ctx.unify(li[-d], out_l[-d])
    ctx.set_output(out_l)
