"""Reductions, softmax and normalisation along a dim."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ...trace.opgraph import Value
from .elementwise import broadcast
from .registry import register_dim_rule

_T = torch.Tensor


def _reduce(exact: bool):
    def rule(ctx, x, *args, **kwargs) -> None:
        if (args and isinstance(args[0], Value)) or isinstance(kwargs.get("other"), Value):
            broadcast(ctx, x, *args, **kwargs)  # torch.max(a, b) and friends are elementwise
            return
        dim = kwargs.get("dim", args[0] if args and not isinstance(args[0], (bool, torch.dtype)) else None)
        kwargs.get("keepdim", args[1] if len(args) > 1 and isinstance(args[1], bool) else False)
        lays = ctx.layouts(x)
        if dim is None or (isinstance(dim, (list, tuple)) and len(dim) == 0):
            dims = list(range(x.ndim))
        else:
            dims = [dim] if isinstance(dim, int) else list(dim)
            dims = [d % x.ndim for d in dims]
        if not exact:
            for d in dims:
                ctx.mix(lays[d], f"reduced over by {ctx.call.name}")
        for i, out in enumerate(ctx.outputs):
            if out.ndim == x.ndim:
                res = [ctx.new(1, pin="reduced dim") if d in dims else lays[d] for d in range(x.ndim)]
            elif out.ndim == x.ndim - len(dims):
                res = [lays[d] for d in range(x.ndim) if d not in dims]
            else:
                raise ValueError("unexpected reduction output rank")
            ctx.set_output(res, i)

    return rule


register_dim_rule(_T.sum, torch.sum, _T.nansum, torch.nansum)(_reduce(exact=True))
register_dim_rule(
    _T.mean, torch.mean, _T.amax, torch.amax, _T.amin, torch.amin, _T.max, torch.max, _T.min, torch.min,
    _T.std, torch.std, _T.var, torch.var, _T.norm, torch.norm, _T.logsumexp, torch.logsumexp, _T.prod,
    torch.prod, _T.nanmean, torch.nanmean, _T.any, torch.any, _T.all, torch.all,
)(_reduce(exact=False))


@register_dim_rule(F.softmax, F.log_softmax, F.softmin, _T.softmax, torch.softmax, _T.log_softmax,
                   torch.log_softmax, F.normalize)
def softmax(ctx, x, dim=None, *args, **kwargs) -> None:
    lays = ctx.layouts(x)
    if ctx.call.func is F.normalize:
        dim = kwargs.get("dim", args[0] if args else 1)
    if dim is None:
        dim = kwargs.get("dim", -1)
    ctx.mix(lays[dim % x.ndim], f"normalised over by {ctx.call.name}")
    ctx.set_output(list(lays))


@register_dim_rule(_T.cumsum, torch.cumsum, _T.cumprod, torch.cumprod)
def cumulative(ctx, x, dim, *args, **kwargs) -> None:
    lays = ctx.layouts(x)
    ctx.pin(lays[dim % x.ndim], f"accumulated along by {ctx.call.name}")
    ctx.set_output(list(lays))
