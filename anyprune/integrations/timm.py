"""timm modules whose forward reads sizes from attributes."""

from __future__ import annotations

from typing import Any

from torch import nn

from .registry import Sizes, register_module_updater


def attention(module: nn.Module, sizes: Sizes) -> dict[str, Any]:
    """timm ``Attention`` (ViT, DeiT, ...): ``qkv.reshape(B, N, 3, num_heads, head_dim)``."""
    *_, head_dim = sizes.factors("proj.weight", 1)
    total = sizes.size("proj.weight", 1)
    new: dict[str, Any] = {"num_heads": total // head_dim, "head_dim": head_dim}
    if hasattr(module, "attn_dim"):
        new["attn_dim"] = total
    return new


def window_attention(module: nn.Module, sizes: Sizes) -> dict[str, Any]:
    """timm Swin ``WindowAttention``: ``qkv.reshape(B, N, 3, num_heads, -1)``; the bias table has a
    column per head."""
    return {"num_heads": sizes.size("relative_position_bias_table", 1)}


def std_conv(module: nn.Module, sizes: Sizes) -> dict[str, Any]:
    """timm weight-standardised convs (``StdConv2d``, ``ScaledStdConv2d`` and their ``Same`` variants, NF-Nets):
    the forward reshapes the weight with ``self.out_channels`` before convolving with the result."""
    groups = int(getattr(module, "groups", 1))
    return {"out_channels": sizes.size("weight", 0), "in_channels": sizes.size("weight", 1) * groups}


def register() -> None:
    register_module_updater("timm.layers.attention.Attention", attention)
    register_module_updater("timm.models.swin_transformer.WindowAttention", window_attention)
    for name in ("StdConv2d", "StdConv2dSame", "ScaledStdConv2d", "ScaledStdConv2dSame"):
        register_module_updater(f"timm.layers.std_conv.{name}", std_conv)
