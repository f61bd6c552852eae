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


def register() -> None:
    register_module_updater("timm.layers.attention.Attention", attention)
    register_module_updater("timm.models.swin_transformer.WindowAttention", window_attention)
