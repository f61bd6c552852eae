"""Convolutions (plain, grouped, depthwise, transposed).

A grouped conv with ``g`` groups factors its input channels as ``g × Cin/g``
and its output channels as ``g × Cout/g``; the ``g`` factors are one atom, so a
group of the conv can be pruned whole (input and output together, ``groups``
shrinks) and a per-group position can be pruned in every group alike.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..layout import prod_layouts
from .registry import register_dim_rule


def _channel_dim(input, weight) -> int:
    # batched input has one more dim than the weight (N, C, *spatial) vs (Cout, Cin/g, *kernel)
    return 1 if input.ndim == weight.ndim else 0


@register_dim_rule(torch.conv1d, torch.conv2d, torch.conv3d)
def conv(ctx, input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1) -> None:
    x, w = ctx.layouts(input), ctx.layouts(weight)
    c = _channel_dim(input, weight)
    cin, cout = x[c], w[0]
    for k in w[2:]:
        ctx.pin(k, "kernel dim")
    if groups == 1:
        ctx.unify(cin, w[1])
        g_lay = None
    else:
        g_in, per_in = ctx.atoms.factor(cin, [groups, input.shape[c] // groups], "conv groups")
        g_out, _per_out = ctx.atoms.factor(cout, [groups, weight.shape[0] // groups], "conv groups")
        ctx.unify(g_in, g_out)
        ctx.unify(per_in, w[1])
        g_lay = g_in
    if bias is not None:
        ctx.unify(ctx.layouts(bias)[0], cout)
    spatial = ctx.fresh(ctx.out.shape[c + 1:], pin="spatial dim")
    ctx.set_output([*list(x[:c]), cout, *spatial])
    mod = ctx.module_of(weight)
    if isinstance(mod, nn.modules.conv._ConvNd):
        ctx.bind(mod, "out_channels", [cout])
        ctx.bind(mod, "in_channels", [cin])
        if g_lay is not None:
            ctx.bind(mod, "groups", [g_lay])


@register_dim_rule(torch.conv_transpose1d, torch.conv_transpose2d, torch.conv_transpose3d)
def conv_transpose(ctx, input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1,
                   dilation=1) -> None:
    x, w = ctx.layouts(input), ctx.layouts(weight)
    c = _channel_dim(input, weight)
    cin = x[c]
    for k in w[2:]:
        ctx.pin(k, "kernel dim")
    ctx.unify(cin, w[0])
    if groups == 1:
        cout = w[1]
        g_lay = None
    else:
        g_lay, _per = ctx.atoms.factor(cin, [groups, input.shape[c] // groups], "conv groups")
        cout = prod_layouts([g_lay, w[1]])
    if bias is not None:
        ctx.unify(ctx.layouts(bias)[0], cout)
    spatial = ctx.fresh(ctx.out.shape[c + 1:], pin="spatial dim")
    ctx.set_output([*list(x[:c]), cout, *spatial])
    mod = ctx.module_of(weight)
    if isinstance(mod, nn.modules.conv._ConvNd):
        ctx.bind(mod, "out_channels", [cout])
        ctx.bind(mod, "in_channels", [cin])
        if g_lay is not None:
            ctx.bind(mod, "groups", [g_lay])


@register_dim_rule(F.unfold)
def unfold(ctx, input, kernel_size, *args, **kwargs) -> None:
    """``F.unfold`` (im2col): ``[N, C, H, W] -> [N, C x kernel positions, L]``, channel-major; the kernel
    positions and the blocks are pinned."""
    x = ctx.layouts(input)
    c = input.ndim - 3
    out = ctx.out.shape
    k = out[c] // input.shape[c]
    cols = prod_layouts([x[c], ctx.new(k, pin="kernel positions of unfold")])
    ctx.set_output([*x[:c], cols, ctx.new(out[-1], pin="blocks of unfold")])


@register_dim_rule(F.fold)
def fold(ctx, input, output_size, kernel_size, *args, **kwargs) -> None:
    """``F.fold`` (col2im): ``[N, C x kernel positions, L] -> [N, C, H, W]``; the channel factor follows, the
    kernel positions, blocks and spatial dims are pinned."""
    x = ctx.layouts(input)
    c = input.ndim - 2
    out = ctx.out.shape
    channels = out[c]
    ch, k = ctx.atoms.factor(x[c], [channels, input.shape[c] // channels], f"fold at {ctx.call.source}")
    ctx.pin(k, "kernel positions of fold")
    ctx.pin(x[-1], "blocks of fold")
    ctx.set_output([*x[:c], ch, *ctx.fresh(out[c + 1:], pin="spatial dim made by fold")])
