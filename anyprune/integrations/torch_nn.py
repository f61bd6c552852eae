"""``torch.nn`` modules whose forward reads sizes from attributes."""

from __future__ import annotations

from typing import Any

from torch import nn

from .registry import Sizes, register_module_updater


def multihead_attention(module: nn.MultiheadAttention, sizes: Sizes) -> dict[str, Any]:
    """``nn.MultiheadAttention``: the embed dim is heads × head_dim (see the multi-head attention rule)."""
    name, dim = ("in_proj_weight", 1) if module._qkv_same_embed_dim else ("q_proj_weight", 0)
    heads, head_dim = [*sizes.factors(name, dim), 1][:2]
    embed = sizes.size(name, dim)
    if heads * head_dim != embed:  # the embed dim was not factored (one head)
        heads, head_dim = module.num_heads, embed // module.num_heads
    new: dict[str, Any] = {"embed_dim": embed, "num_heads": heads, "head_dim": head_dim}
    if module._qkv_same_embed_dim:
        new["kdim"] = embed
        new["vdim"] = embed
    else:
        new["kdim"] = sizes.size("k_proj_weight", 1)
        new["vdim"] = sizes.size("v_proj_weight", 1)
    return new


def register() -> None:
    register_module_updater(nn.MultiheadAttention, multihead_attention)
