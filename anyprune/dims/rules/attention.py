"""Attention: scaled dot-product attention, multi-head attention and einsum contractions.

Heads are dims like any other: SDPA couples the batch/head dims of q, k, v and
the output, q's and k's head_dim (E), v's head_dim (Ev) with the output's, and
the key sequence of k, v and the mask. With ``enable_gqa`` q has ``KV × R``
heads: q's head dim is factored so that the KV factor follows k's heads and the
R factor (query heads per KV head, computed at run time) stays free.

Approximate (mixing) dims: the key sequence (softmax), and E when no ``scale``
is given (the default scale ``1/sqrt(E)`` changes when E is pruned).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ...trace.opgraph import Value
from ..layout import prod_layouts
from .registry import PinDims, register_dim_rule


def _unify_batch(ctx, lays: list, shape: tuple, ref: list, ref_shape: tuple) -> None:
    """Couple leading (batch) dims of a broadcastable operand with the reference's, aligned from the right."""
    n = min(len(lays), len(ref))
    for k in range(1, n + 1):
        if shape[-k] == ref_shape[-k] and shape[-k] > 1:
            ctx.unify(lays[-k], ref[-k])


@register_dim_rule(F.scaled_dot_product_attention)
def scaled_dot_product_attention(ctx, query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False,
                                 scale=None, enable_gqa=False) -> None:
    q, k, v = ctx.layouts(query), ctx.layouts(key), ctx.layouts(value)
    nq = query.ndim
    if nq < 2 or key.ndim != nq or value.ndim != nq:
        raise PinDims("scaled_dot_product_attention with operands of different ranks")
    ctx.unify(q[-1], k[-1])  # E
    ctx.unify(k[-2], v[-2])  # S
    q_batch = list(q[:-2])
    if nq >= 3 and query.shape[-3] != key.shape[-3] and key.shape[-3] > 1:
        hq, hk = query.shape[-3], key.shape[-3]
        if not enable_gqa or hq % hk:
            raise PinDims(f"query has {hq} heads and key {hk} without enable_gqa")
        kv_part, rep = ctx.atoms.factor(q[-3], [hk, hq // hk], f"grouped-query attention at {ctx.call.source}")
        ctx.unify(kv_part, k[-3])
        q_batch[-1] = prod_layouts([kv_part, rep])
        _unify_batch(ctx, list(v[:-2]), value.shape[:-2], list(k[:-2]), key.shape[:-2])
        _unify_batch(ctx, list(k[:-3]), key.shape[:-3], list(q[:-3]), query.shape[:-3])
    else:
        _unify_batch(ctx, list(k[:-2]), key.shape[:-2], q_batch, query.shape[:-2])
        _unify_batch(ctx, list(v[:-2]), value.shape[:-2], q_batch, query.shape[:-2])
    if isinstance(attn_mask, Value):
        m = ctx.layouts(attn_mask)
        ref = [*q_batch, q[-2], k[-2]]
        ref_shape = (*query.shape[:-1], key.shape[-2])
        _unify_batch(ctx, list(m), attn_mask.shape, ref, ref_shape)
    ctx.mix(k[-2], "attention softmax over the key sequence")
    if scale is None:
        ctx.mix(q[-1], "default attention scale 1/sqrt(head_dim) changes with head_dim")
    ctx.set_output([*q_batch, q[-2], v[-1]])


@register_dim_rule(F.multi_head_attention_forward)
def multi_head_attention_forward(ctx, query, key, value, embed_dim_to_check, num_heads, in_proj_weight,
                                 in_proj_bias, bias_k, bias_v, add_zero_attn, dropout_p, out_proj_weight,
                                 out_proj_bias, training=True, key_padding_mask=None, need_weights=True,
                                 attn_mask=None, use_separate_proj_weight=False, q_proj_weight=None,
                                 k_proj_weight=None, v_proj_weight=None, static_k=None, static_v=None,
                                 average_attn_weights=True, is_causal=False) -> None:
    """``nn.MultiheadAttention``: the projections' size must equal the query's embed dim (the code derives
    ``head_dim = embed_dim // num_heads`` from it), so the embed dim is factored into heads × head_dim and
    every projection row follows it."""
    if static_k is not None or static_v is not None or add_zero_attn:
        raise PinDims("multi-head attention with static keys/values or add_zero_attn")
    q, k, v = ctx.layouts(query), ctx.layouts(key), ctx.layouts(value)
    batched = query.ndim == 3
    e = q[-1]
    heads, _head_dim = ctx.atoms.factor(e, [num_heads, query.shape[-1] // num_heads],
                                        f"attention heads at {ctx.call.source}")
    ctx.constant(heads, "num_heads passed to multi_head_attention_forward", ("num_heads",))
    if not use_separate_proj_weight:
        ctx.unify(k[-1], e)
        ctx.unify(v[-1], e)
        w = ctx.layouts(in_proj_weight)
        ctx.unify(w[1], e)
        for piece in ctx.atoms.split(w[0], [query.shape[-1]] * 3):
            ctx.unify(piece, e)
    else:
        for pw, src in ((q_proj_weight, q), (k_proj_weight, k), (v_proj_weight, v)):
            wl = ctx.layouts(pw)
            ctx.unify(wl[0], e)
            ctx.unify(wl[1], src[-1])
    if in_proj_bias is not None:
        for piece in ctx.atoms.split(ctx.layouts(in_proj_bias)[0], [query.shape[-1]] * 3):
            ctx.unify(piece, e)
    for extra in (bias_k, bias_v):
        if extra is not None:
            ctx.unify(ctx.layouts(extra)[-1], e)
    ow = ctx.layouts(out_proj_weight)
    ctx.unify(ow[1], e)
    ctx.unify(ow[0], e)  # nn.MultiheadAttention is square (its fast path assumes out_proj: embed -> embed)
    if out_proj_bias is not None:
        ctx.unify(ctx.layouts(out_proj_bias)[0], ow[0])
    # sequence/batch dims
    ctx.unify(k[0], v[0])
    if batched:
        ctx.unify(q[1], k[1])
        ctx.unify(q[1], v[1])
    if isinstance(key_padding_mask, Value):
        kp = ctx.layouts(key_padding_mask)
        ctx.unify(kp[-1], k[0])
        if batched and key_padding_mask.ndim == 2:
            ctx.unify(kp[0], q[1])
    if isinstance(attn_mask, Value):
        am = ctx.layouts(attn_mask)
        ctx.unify(am[-1], k[0])
        ctx.unify(am[-2], q[0])
        if attn_mask.ndim == 3:
            ctx.pin(am[0], "a 3-D attention mask packs batch and heads")
            ctx.pin(heads, "a 3-D attention mask packs batch and heads")
    ctx.mix(k[0], "attention softmax over the key sequence")
    ctx.mix(_head_dim, "attention scale 1/sqrt(head_dim) changes with head_dim")
    out = [q[0], q[1], ow[0]] if batched else [q[0], ow[0]]
    ctx.set_output(out, 0)
    if len(ctx.outputs) > 1:
        w_out = ctx.outputs[1]
        if average_attn_weights:
            ctx.mix(heads, "attention weights averaged over heads")
            lays = ([q[1]] if batched else []) + [q[0], k[0]]
        else:
            lays = ([q[1]] if batched else []) + [heads, q[0], k[0]]
        if len(lays) != w_out.ndim:
            lays = ctx.fresh(w_out.shape, pin="attention weights")
        ctx.set_output(lays, 1)


def _parse_einsum(equation: str, ndims: list[int]) -> tuple[list[str], str]:
    eq = equation.replace(" ", "")
    if "->" in eq:
        lhs, rhs = eq.split("->")
    else:
        lhs = eq
        letters = [c for c in lhs.replace(",", "").replace(".", "")]
        rhs = ("..." if "..." in lhs else "") + "".join(sorted(c for c in set(letters) if letters.count(c) == 1))
    terms = lhs.split(",")
    if len(terms) != len(ndims):
        raise PinDims("einsum operand count does not match the equation")
    ell = max((n - len(t.replace("...", "")) for t, n in zip(terms, ndims) if "..." in t), default=0)
    glyphs = [chr(0x3B1 + i) for i in range(ell)]  # greek letters stand for the ellipsis dims

    def expand(term: str, n: int) -> str:
        if "..." not in term:
            return term
        k = n - len(term.replace("...", ""))
        return term.replace("...", "".join(glyphs[ell - k:]))

    terms = [expand(t, n) for t, n in zip(terms, ndims)]
    rhs = rhs.replace("...", "".join(glyphs))
    return terms, rhs


@register_dim_rule(torch.einsum)
def einsum(ctx, equation, *operands) -> None:
    """Every occurrence of one index letter is one dim (size-1 broadcasts aside); summed letters contract
    exactly."""
    if len(operands) == 1 and isinstance(operands[0], (list, tuple)):
        operands = tuple(operands[0])
    if not isinstance(equation, str) or not all(isinstance(o, Value) for o in operands):
        raise PinDims("einsum in sublist form")
    terms, rhs = _parse_einsum(equation, [o.ndim for o in operands])
    seen: dict[str, tuple] = {}
    for term, op in zip(terms, operands):
        lays = ctx.layouts(op)
        if len(set(term)) != len(term):
            raise PinDims("einsum with a repeated index in one operand (a diagonal)")
        for c, lay, size in zip(term, lays, op.shape):
            if size == 1:
                continue
            if c in seen:
                ctx.unify(seen[c], lay)
            else:
                seen[c] = lay
    out = ctx.out
    lays = []
    for c, size in zip(rhs, out.shape):
        lays.append(seen[c] if c in seen and size > 1 else ctx.new(size, pin="einsum broadcast dim"))
    ctx.set_output(lays)
