"""Pooling, resizing and padding: channels pass through, spatial dims are new (pinned)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .registry import register_dim_rule


def _spatial(k: int):
    def rule(ctx, input, *args, **kwargs) -> None:
        x = ctx.layouts(input)
        keep = list(x[: input.ndim - k])
        for i, out in enumerate(ctx.outputs):
            ctx.set_output(keep + ctx.fresh(out.shape[len(keep):], pin="spatial dim"), i)

    return rule


for _k, _funcs in {
    1: (F.max_pool1d, F.max_pool1d_with_indices, F.avg_pool1d, F.adaptive_avg_pool1d, F.adaptive_max_pool1d,
        F.adaptive_max_pool1d_with_indices, F.lp_pool1d, torch.max_pool1d, torch.avg_pool1d,
        torch.adaptive_avg_pool1d, torch.adaptive_max_pool1d),
    2: (F.max_pool2d, F.max_pool2d_with_indices, F.avg_pool2d, F.adaptive_avg_pool2d, F.adaptive_max_pool2d,
        F.adaptive_max_pool2d_with_indices, F.lp_pool2d, torch.max_pool2d, F.fractional_max_pool2d),
    3: (F.max_pool3d, F.max_pool3d_with_indices, F.avg_pool3d, F.adaptive_avg_pool3d, F.adaptive_max_pool3d,
        F.adaptive_max_pool3d_with_indices, torch.max_pool3d),
}.items():
    register_dim_rule(*_funcs)(_spatial(_k))


@register_dim_rule(F.interpolate, F.upsample, F.upsample_bilinear, F.upsample_nearest)
def interpolate(ctx, input, *args, **kwargs) -> None:
    _spatial(input.ndim - 2)(ctx, input)


@register_dim_rule(F.pad)
def pad(ctx, input, pad, mode="constant", value=None) -> None:
    x = list(ctx.layouts(input))
    from ..layout import cat_layouts

    for i in range(len(pad) // 2):
        d = input.ndim - 1 - i
        left, right = int(pad[2 * i]), int(pad[2 * i + 1])
        if left == 0 and right == 0:
            continue
        if left < 0 or right < 0 or mode != "constant":
            ctx.pin(x[d], f"padded ({mode}, {left}, {right})")
            x[d] = ctx.new(ctx.out.shape[d], pin="padded dim")
            continue
        parts = [x[d]]
        if left:
            parts.insert(0, ctx.new(left, pin="padding"))
        if right:
            parts.append(ctx.new(right, pin="padding"))
        x[d] = cat_layouts(parts)
    ctx.set_output(x)


@register_dim_rule(F.pixel_shuffle)
def pixel_shuffle(ctx, input, upscale_factor) -> None:
    x = ctx.layouts(input)
    r = upscale_factor
    c = input.ndim - 3
    ch, _sub = ctx.atoms.factor(x[c], [input.shape[c] // (r * r), r * r], "pixel_shuffle")
    ctx.pin(_sub, "pixel_shuffle sub-pixel factor")
    ctx.set_output([*list(x[:c]), ch, *ctx.fresh(ctx.out.shape[c + 1:], pin="spatial dim")])


@register_dim_rule(F.pixel_unshuffle)
def pixel_unshuffle(ctx, input, downscale_factor) -> None:
    x = ctx.layouts(input)
    r = downscale_factor
    c = input.ndim - 3
    from ..layout import prod_layouts

    sub = ctx.new(r * r, pin="pixel_unshuffle sub-pixel factor")
    ctx.set_output([*x[:c], prod_layouts([x[c], sub]), *ctx.fresh(ctx.out.shape[c + 1:], pin="spatial dim")])
