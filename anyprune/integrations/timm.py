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


def attention_rope(module: nn.Module, sizes: Sizes) -> dict[str, Any]:
    """timm ``AttentionRope`` (EVA-style, fused or separate q/k/v, grouped-query): head counts, ``head_dim``,
    ``attn_dim`` and ``kv_dim``; whole key/value groups go with their query heads, so ``num_kv_groups`` stays."""
    new = attention(module, sizes)
    new["attn_dim"] = new["num_heads"] * new["head_dim"]
    if hasattr(module, "num_kv_heads"):
        new["num_kv_heads"] = new["num_heads"] // max(1, int(getattr(module, "num_kv_groups", 1)))
    if hasattr(module, "kv_dim"):
        new["kv_dim"] = new.get("num_kv_heads", new["num_heads"]) * new["head_dim"]
    return new


def tnt_attention(module: nn.Module, sizes: Sizes) -> dict[str, Any]:
    """timm TNT ``Attention``: ``qk.reshape(B, N, 2, num_heads, head_dim)``; values and the merge use ``-1``."""
    *_, heads, head_dim = sizes.factors("qk.weight", 0)
    return {"num_heads": heads, "head_dim": head_dim, "hidden_dim": heads * head_dim}


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
    register_module_updater("timm.layers.attention.AttentionRope", attention_rope)
    register_module_updater("timm.models.tnt.Attention", tnt_attention)
    register_module_updater("timm.models.swin_transformer.WindowAttention", window_attention)
    for name in ("StdConv2d", "StdConv2dSame", "ScaledStdConv2d", "ScaledStdConv2dSame"):
        register_module_updater(f"timm.layers.std_conv.{name}", std_conv)
