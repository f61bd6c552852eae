"""Concatenation and splitting along a dim."""

from __future__ import annotations

import torch

from ...trace.sizes import expr_of
from ..layout import cat_layouts
from .registry import register_dim_rule

_T = torch.Tensor


@register_dim_rule(torch.cat, torch.concat, torch.concatenate)
def cat(ctx, tensors, dim=0, **kwargs) -> None:
    dim = kwargs.get("axis", dim)
    out = ctx.out
    d = dim % out.ndim
    parts = [t for t in tensors if not (t.ndim == 1 and t.shape[0] == 0) and t.shape[d] > 0]
    if not parts:
        ctx.set_output(ctx.fresh(out.shape, pin="empty concatenation"))
        return
    first = ctx.layouts(parts[0])
    for t in parts[1:]:
        for k, (a, b) in enumerate(zip(first, ctx.layouts(t))):
            if k != d and out.shape[k] > 1:
                ctx.unify(a, b)
    lays = list(first)
    lays[d] = cat_layouts([ctx.layouts(t)[d] for t in parts])
    ctx.set_output(lays)


@register_dim_rule(torch.stack)
def stack(ctx, tensors, dim=0) -> None:
    first = ctx.layouts(tensors[0])
    for t in tensors[1:]:
        for a, b in zip(first, ctx.layouts(t)):
            ctx.unify(a, b)
    d = dim % ctx.out.ndim
    lays = list(first)
    lays.insert(d, ctx.new(len(tensors), pin="dim created by stack"))
    ctx.set_output(lays)


def _pieces(ctx, x, d: int) -> list:
    sizes = [o.shape[d] for o in ctx.outputs]
    lays = ctx.layouts(x)
    pieces = ctx.atoms.split(lays[d], sizes)
    for i, (_o, piece) in enumerate(zip(ctx.outputs, pieces)):
        out = list(lays)
        out[d] = piece
        ctx.set_output(out, i)
    return pieces


@register_dim_rule(torch.chunk, _T.chunk)
def chunk(ctx, x, chunks, dim=0) -> None:
    """Chunks split at ``size // chunks`` computed at run time: equal chunks stay equal."""
    d = dim % x.ndim
    _keep_equal(ctx, x, d, _pieces(ctx, x, d), "chunks of unequal size")


def _keep_equal(ctx, x, d: int, pieces: list, why: str) -> bool:
    """Unify equal pieces (pruning keeps them equal); pin the dim where they are not equal."""
    if len({ctx.atoms.size(p) for p in pieces}) > 1:
        ctx.pin(ctx.layouts(x)[d], why)
        return False
    for p in pieces[1:]:
        ctx.unify(pieces[0], p)
    return True


@register_dim_rule(torch.split, _T.split, torch.split_with_sizes, _T.split_with_sizes, torch.tensor_split,
                   _T.tensor_split)
def split(ctx, x, split_size_or_sections, dim=0) -> None:
    """Literal split sizes are constants of the code: the split dim is pinned; sizes computed from a tensor's
    shape must follow their pieces (checked when the graph is complete).

    Inside a module with an attribute updater the sizes are released instead; a split into equal
    pieces (``qkv.split(self.split_size)``) keeps its pieces equal, as the single size requires.
    """
    d = dim % x.ndim
    pieces = _pieces(ctx, x, d)
    given = [split_size_or_sections] if isinstance(split_size_or_sections, int) else \
        list(split_size_or_sections) if isinstance(split_size_or_sections, (list, tuple)) else []
    if given and all(expr_of(s) is not None for s in given) and \
            ctx.call.func not in (torch.tensor_split, _T.tensor_split):
        # sizes computed from tensors' shapes (``x.split(x.shape[-1] // 2, -1)``): each must follow its piece
        if len(given) == 1 and not _keep_equal(ctx, x, d, pieces, "split into pieces of unequal size"):
            return
        for p, size in zip(pieces, given * len(pieces) if len(given) == 1 else given):
            ctx.size_arg(p, size, "split size")
        return
    why = f"split by literal sizes {split_size_or_sections!r}"
    if ctx.call.scope is None or ctx.call.func in (torch.tensor_split, _T.tensor_split):
        ctx.pin(ctx.layouts(x)[d], why)
        return
    if isinstance(split_size_or_sections, int) and not _keep_equal(ctx, x, d, pieces, f"{why}: pieces of unequal size"):
        return
    for p in pieces:
        ctx.constant(p, why, ("split", d - x.ndim))


@register_dim_rule(torch.unbind, _T.unbind)
def unbind(ctx, x, dim=0) -> None:
    lays = list(ctx.layouts(x))
    d = dim % x.ndim
    ctx.pin(lays[d], "unbound into separate tensors")
    rest = lays[:d] + lays[d + 1:]
    for i in range(len(ctx.outputs)):
        ctx.set_output(list(rest), i)
