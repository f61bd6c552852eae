"""Modules recorded whole, for layers handled by a customized pruner."""

from __future__ import annotations


def leaf_module_rule(ctx, *args, **kwargs) -> None:
    """Couple the leaf's channel dims to its pruner's in/out channels.

    The module's input dim whose size equals ``pruner.get_in_channels(module)``
    (dim 1 first, then the last dim) gets the leaf's *in* layout; the same for
    outputs and ``get_out_channels``. Everything else about the leaf is pinned.
    """
    graph = ctx.graph
    mod = graph._modules.get(ctx.call.leaf_module)
    pruner = graph.leaf_pruners.get(type(mod)) if mod is not None else None
    if pruner is None:
        raise ValueError("leaf module without a pruner")
    n_in, n_out = pruner.get_in_channels(mod), pruner.get_out_channels(mod)
    in_lay = out_lay = None
    for v in ctx.call.inputs:
        lays = ctx.layouts(v)
        d = _channel_dim(v.shape, n_in)
        for k, lay in enumerate(lays):
            if k == d and in_lay is None:
                in_lay = lay
            else:
                ctx.pin(lay, f"non-channel dim of leaf module {ctx.call.leaf_module}")
    if in_lay is None and n_in is not None:
        raise ValueError("no input dim matches get_in_channels")
    channelwise = _same_function(pruner.prune_in_channels, pruner.prune_out_channels) and n_in == n_out
    for i, v in enumerate(ctx.outputs):
        d = _channel_dim(v.shape, n_out)
        lays = ctx.fresh(v.shape, pin=f"non-channel dim of leaf module {ctx.call.leaf_module}")
        if d is not None:
            if out_lay is None:
                out_lay = in_lay if channelwise and in_lay is not None else ctx.new(v.shape[d])
            lays[d] = out_lay
        ctx.set_output(lays, i)
    graph.leaf_dims[ctx.call.leaf_module] = (in_lay, out_lay)


def _channel_dim(shape, n) -> int | None:
    if n is None:
        return None
    if len(shape) > 1 and shape[1] == n:
        return 1
    if len(shape) >= 1 and shape[-1] == n:
        return len(shape) - 1
    return None


def _same_function(a, b) -> bool:
    return getattr(a, "__func__", a) is getattr(b, "__func__", b)
