"""torchvision ops (registered when torchvision is importable)."""

from __future__ import annotations

import sys

from .registry import quiet_pin, register_dim_rule

_done = False


def register_if_loaded() -> None:
    """Register the rules once torchvision has been imported by the user's code (never import it here)."""
    global _done
    if _done or "torchvision" not in sys.modules:
        return
    _done = True
    import torch

    ops = torch.ops.torchvision

    @register_dim_rule(ops.roi_align, ops.roi_pool, ops.ps_roi_align, ops.ps_roi_pool, override=True)
    def roi_align(ctx, input, rois, *args, **kwargs) -> None:
        x = ctx.layouts(input)
        ctx.pin(ctx.layouts(rois)[0], "roi boxes")
        for i, out in enumerate(ctx.outputs):
            lay = [ctx.new(out.shape[0], pin="roi index")]
            if out.ndim > 1 and out.shape[1] == input.shape[1] and ctx.call.func in (ops.roi_align, ops.roi_pool):
                lay.append(x[1])
            else:
                ctx.pin(x[1], "position-sensitive roi pooling")
                lay.append(ctx.new(out.shape[1], pin="roi channel"))
            lay += ctx.fresh(out.shape[2:], pin="spatial dim")
            ctx.set_output(lay, i)

    quiet_pin("data-dependent indexing (detection post-processing)", ops.nms)
