"""torchvision models whose forward reads sizes from attributes."""

from __future__ import annotations

from typing import Any

from torch import nn

from .registry import Sizes, register_module_updater


def vision_transformer(module: nn.Module, sizes: Sizes) -> dict[str, Any]:
    """``VisionTransformer.hidden_dim`` is the patch projection's width (used to reshape the patches)."""
    return {"hidden_dim": sizes.size("conv_proj.weight", 0)}


def shifted_window_attention(module: nn.Module, sizes: Sizes) -> dict[str, Any]:
    """Swin ``ShiftedWindowAttention``: one bias-table column per head."""
    return {"num_heads": sizes.size("relative_position_bias_table", 1)}


def shifted_window_attention_v2(module: nn.Module, sizes: Sizes) -> dict[str, Any]:
    """Swin V2 ``ShiftedWindowAttentionV2``: one logit scale per head (its bias comes from ``cpb_mlp``)."""
    return {"num_heads": sizes.size("logit_scale", 0)}


def maxvit_attention(module: nn.Module, sizes: Sizes) -> dict[str, Any]:
    """MaxViT ``RelativePositionalMultiHeadAttention``: ``n_heads`` and ``head_dim``."""
    *_, head_dim = sizes.factors("merge.weight", 1)
    return {"n_heads": sizes.size("relative_position_bias_table", 1), "head_dim": head_dim}


def _heads_fill_width(qkv: str, out: str):
    # the forward reshapes to (heads, C // heads) or back to C with C the input's width: C = heads × head_dim
    return lambda module: [((f"{qkv}.weight", 1), (f"{out}.weight", 1))]


def register() -> None:
    register_module_updater("torchvision.models.vision_transformer.VisionTransformer", vision_transformer)
    register_module_updater("torchvision.models.swin_transformer.ShiftedWindowAttention", shifted_window_attention,
                            couple=_heads_fill_width("qkv", "proj"))
    register_module_updater("torchvision.models.swin_transformer.ShiftedWindowAttentionV2",
                            shifted_window_attention_v2, couple=_heads_fill_width("qkv", "proj"))
    register_module_updater("torchvision.models.maxvit.RelativePositionalMultiHeadAttention", maxvit_attention,
                            couple=_heads_fill_width("to_qkv", "merge"))
