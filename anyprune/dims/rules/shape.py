"""Shape ops: reshapes factor and merge layouts, permutes move them, slices cut them."""

from __future__ import annotations

import torch

from ...trace.sizes import TracedSize, expr_of
from ..layout import prod_layouts
from .registry import PinDims, register_dim_rule, tensor_property

_T = torch.Tensor


def reshape_layouts(ctx, lays: list, in_shape: tuple, out_shape: tuple, requested: list | None = None) -> list:
    """Layouts of a row-major reshape from ``in_shape`` to ``out_shape``.

    ``requested`` holds the sizes as the code wrote them (``-1`` included), aligned with the output dims,
    where they are known. Each is checked against the dim it sizes (:meth:`RuleContext.size_arg`): a size
    read from a tensor's shape must follow the dim when it is pruned, and a constant of the code (a
    literal, an attribute such as ``self.num_heads``) pins the dim's atoms, unless an attribute updater
    keeps the attribute in sync. This holds for splits (``C -> (H, D)``), merges (``(H, D) -> C``) and
    dims that pass through unchanged alike.
    """
    out: list = [None] * len(out_shape)
    i = j = 0
    n_in, n_out = len(in_shape), len(out_shape)
    created: list[int] = []
    while i < n_in or j < n_out:
        if j < n_out and out_shape[j] == 1 and (i >= n_in or in_shape[i] != 1):
            out[j] = ctx.new(1, pin="size-1 dim")
            created.append(j)
            j += 1
            continue
        if i < n_in and in_shape[i] == 1 and (j >= n_out or out_shape[j] != 1):
            i += 1
            continue
        if i < n_in and j < n_out and in_shape[i] == 1 and out_shape[j] == 1:
            out[j] = lays[i]
            i += 1
            j += 1
            continue
        if i >= n_in or j >= n_out:
            raise ValueError(f"cannot align reshape {tuple(in_shape)} -> {tuple(out_shape)}")
        ii, jj = [i], [j]
        pi, pj = in_shape[i], out_shape[j]
        i += 1
        j += 1
        while pi != pj:
            if pi < pj:
                pi *= in_shape[i]
                ii.append(i)
                i += 1
            else:
                pj *= out_shape[j]
                jj.append(j)
                j += 1
        if pi == 0:
            raise ValueError("zero-size reshape")
        merged = prod_layouts([lays[k] for k in ii])
        for k, lay in zip(jj, ctx.atoms.factor(merged, [out_shape[k] for k in jj], f"reshape at {ctx.call.source}")):
            out[k] = lay
    if requested is not None:
        for j, size in enumerate(requested):
            if j in created or size is None:
                continue
            ctx.size_arg(out[j], size, f"size of dim {j}", ("reshape", n_out, j - n_out))
        for j in created:
            if requested[j] == -1:
                # the derived factor came out as 1 (view(b, n, -1, d) with one head): its neighbour
                # is the other factor of the same dim and was written as a constant
                near = [k for k in range(j + 1, n_out) if out_shape[k] > 1][:1] or \
                    [k for k in range(j - 1, -1, -1) if out_shape[k] > 1][:1]
                for k in near:
                    ctx.pin(out[k], f"size {out_shape[k]} written as a constant in {ctx.call.name}")
    return out


def _size_entry(s):
    return s if isinstance(s, TracedSize) else int(s)


def _requested_shape(ctx, args: tuple, kwargs: dict, out_ndim: int) -> list | None:
    """The sizes a view/reshape call was given (``-1`` kept), aligned with the output dims; ``None``
    marks a dim whose size the call derives itself."""
    func = ctx.call.func
    if func in (_T.unflatten, torch.unflatten):
        dim = kwargs.get("dim", args[0] if args else 0)
        sizes = kwargs.get("sizes", args[1] if len(args) > 1 else ())
        in_ndim = out_ndim - len(sizes) + 1
        d = dim % in_ndim
        placed: list = [None] * d + [_size_entry(s) for s in sizes]
        return placed + [None] * (out_ndim - len(placed))
    if func in (_T.view_as, _T.reshape_as):
        other = kwargs.get("other", args[0] if args else None)
        if other is None or not hasattr(other, "index"):
            return None
        return [TracedSize(n, ("dim", other.index, j)) for j, n in enumerate(other.shape)]
    if func not in (_T.view, _T.reshape, torch.reshape):
        return None
    given = kwargs.get("shape", kwargs.get("size", args[0] if len(args) == 1 else args))
    if isinstance(given, (int, torch.SymInt)):
        given = (given,)
    sizes_given = [_size_entry(s) for s in given]
    return sizes_given if len(sizes_given) == out_ndim else None


def _reshape(ctx, x, *args, **kwargs) -> None:
    if any(isinstance(a, torch.dtype) for a in args) or isinstance(kwargs.get("dtype"), torch.dtype):
        raise PinDims("viewed as another dtype")
    requested = _requested_shape(ctx, args, kwargs, ctx.out.ndim)
    ctx.set_output(reshape_layouts(ctx, ctx.layouts(x), x.shape, ctx.out.shape, requested))


register_dim_rule(
    _T.view, _T.reshape, torch.reshape, _T.view_as, _T.reshape_as, _T.flatten, torch.flatten,
    _T.unflatten, torch.unflatten, _T.squeeze, torch.squeeze, _T.unsqueeze, torch.unsqueeze,
    _T.squeeze_, _T.unsqueeze_, torch.ravel, _T.ravel,
)(_reshape)


@register_dim_rule(_T.permute, torch.permute)
def permute(ctx, x, *args, **kwargs) -> None:
    dims = list(kwargs["dims"]) if "dims" in kwargs else list(args)
    if len(dims) == 1 and isinstance(dims[0], (list, tuple, torch.Size)):
        dims = list(dims[0])
    lays = ctx.layouts(x)
    ctx.set_output([lays[d % x.ndim] for d in dims])


@register_dim_rule(_T.transpose, torch.transpose, _T.swapaxes, torch.swapaxes, _T.swapdims, torch.swapdims,
                   _T.transpose_)
def transpose(ctx, x, dim0, dim1) -> None:
    lays = list(ctx.layouts(x))
    a, b = dim0 % x.ndim, dim1 % x.ndim
    lays[a], lays[b] = lays[b], lays[a]
    ctx.set_output(lays)


_REVERSING = (_T.t, torch.t, tensor_property("T"), tensor_property("H"))


@register_dim_rule(*_REVERSING, tensor_property("mT"), tensor_property("mH"))
def t(ctx, x, *args) -> None:
    lays = list(ctx.layouts(x))
    if any(ctx.call.func == f for f in _REVERSING):
        lays = lays[::-1]
    elif len(lays) >= 2:
        lays[-1], lays[-2] = lays[-2], lays[-1]
    ctx.set_output(lays)


@register_dim_rule(_T.movedim, torch.movedim, _T.moveaxis, torch.moveaxis)
def movedim(ctx, x, source, destination) -> None:
    src = [source] if isinstance(source, int) else list(source)
    dst = [destination] if isinstance(destination, int) else list(destination)
    src = [s % x.ndim for s in src]
    dst = [d % x.ndim for d in dst]
    lays = ctx.layouts(x)
    rest = [lays[i] for i in range(x.ndim) if i not in src]
    out: list = [None] * x.ndim
    for s, d in zip(src, dst):
        out[d] = lays[s]
    it = iter(rest)
    ctx.set_output([o if o is not None else next(it) for o in out])


@register_dim_rule(_T.expand, _T.expand_as, torch.broadcast_to, _T.broadcast_to)
def expand(ctx, x, *args, **kwargs) -> None:
    lays = ctx.layouts(x)
    out_shape = ctx.out.shape
    lead = len(out_shape) - x.ndim
    sizes = kwargs.get("size", args[0] if len(args) == 1 else args)
    requested = list(sizes) if ctx.call.func in (_T.expand,) and isinstance(sizes, (tuple, list, torch.Size)) \
        and len(sizes) == len(out_shape) else None
    out = ctx.fresh(out_shape[:lead], pin="dim added by expand")
    for d in range(x.ndim):
        if x.shape[d] == out_shape[lead + d]:
            out.append(lays[d])
        else:
            grown = ctx.new(out_shape[lead + d])
            size = requested[lead + d] if requested is not None else None
            if expr_of(size) is not None:  # read from a tensor's shape: it must follow what it is unified with
                ctx.size_arg(grown, size, "expanded size")
            else:
                ctx.constant(grown, "dim expanded from size 1",
                             ("expand", len(out_shape), lead + d - len(out_shape)))
            out.append(grown)
    ctx.set_output(out)


@register_dim_rule(_T.repeat_interleave, torch.repeat_interleave)
def repeat_interleave(ctx, x, repeats, dim=None, **kwargs) -> None:
    """Each position repeated ``repeats`` times in a row: the out dim is ``dim x repeats`` (row-major), the
    repeat factor a size the code passed (a constant pins it, a size read from a shape must follow)."""
    if not isinstance(repeats, int) or dim is None:
        raise PinDims("repeat_interleave by a tensor of counts or over the flattened tensor")
    lays = list(ctx.layouts(x))
    d = dim % x.ndim
    if int(repeats) == 1:
        ctx.set_output(lays)
        return
    rep = ctx.new(int(repeats))
    ctx.size_arg(rep, repeats, "repeats", ("repeat_interleave", d - x.ndim))
    lays[d] = prod_layouts([lays[d], rep])
    ctx.set_output(lays)


@register_dim_rule(_T.repeat)
def repeat(ctx, x, *sizes) -> None:
    if len(sizes) == 1 and isinstance(sizes[0], (list, tuple, torch.Size)):
        sizes = tuple(sizes[0])
    lays = ctx.layouts(x)
    lead = len(sizes) - x.ndim
    out = [ctx.new(int(s), pin="dim added by repeat") for s in sizes[:lead]]
    for d in range(x.ndim):
        r = int(sizes[lead + d])
        if r == 1:
            out.append(lays[d])
        else:
            out.append(prod_layouts([ctx.new(r, pin="tiled by repeat"), lays[d]]))
    ctx.set_output(out)


def _slice_layout(ctx, lay, size: int, sl: slice):
    """The layout of ``x[start:stop]`` along a dim of ``size`` whose layout is ``lay``.

    A literal bound inside the dim is a constant of the code (as split sizes are), so the positions before
    it are pinned: pruning them would move what the slice selects. The exception is a cut in the middle
    of an even dim at a bound computed from the tensor's size (``x[..., : x.shape[-1] // 2]``,
    rotate_half, GLU halves), or written inside a module whose attribute updater keeps it in sync: the
    two halves are unified so that pruning keeps them equal.
    """
    start, stop, step = sl.indices(size)
    if step == 1 and start == 0 and stop == size:
        return lay
    if stop <= start:
        return ctx.new(0, pin="empty slice")  # selects nothing: couples nothing
    if step != 1:
        ctx.pin(lay, f"strided slice {sl}")
        return ctx.new(len(range(start, stop, step)), pin="strided slice")
    bound_given = sl.stop if start == 0 else sl.start
    if size % 2 == 0 and (start, stop) in ((0, size // 2), (size // 2, size)) and \
            (expr_of(bound_given) is not None or ctx.call.scope is not None):
        lo, hi = ctx.atoms.cut(lay, size // 2)
        ctx.unify(lo, hi)
        if expr_of(bound_given) is not None:
            ctx.size_arg(lo, bound_given, "slice bound")
        return lo if start == 0 else hi
    bound = stop if stop < size else start
    fixed, _ = ctx.atoms.cut(lay, bound)
    ctx.constant(fixed, f"before the slice bound {bound} written as a constant in {ctx.call.name}", ("slice",))
    rest = lay
    if start > 0:
        _, rest = ctx.atoms.cut(rest, start)
    if stop - start < size - start:
        rest, _ = ctx.atoms.cut(rest, stop - start)
    return rest


@register_dim_rule(_T.__getitem__)
def getitem(ctx, x, index) -> None:
    from ...trace.opgraph import Value

    idx = index if isinstance(index, tuple) else (index,)
    tensors = [k for k, i in enumerate(idx) if isinstance(i, Value)]
    if len(tensors) == 1 and not any(isinstance(i, list) or i is None for i in idx) and \
            not idx[tensors[0]].dtype.is_floating_point and idx[tensors[0]].dtype != torch.bool:
        _gather_by_index(ctx, x, idx, tensors[0])
        return
    if any(isinstance(i, (Value, list)) or (i is not None and not isinstance(i, (int, slice, type(Ellipsis))))
           for i in idx):
        raise PinDims("indexed by a tensor (advanced indexing)")
    lays = ctx.layouts(x)
    n_real = sum(1 for i in idx if i is not None and i is not Ellipsis)
    out = []
    d = 0
    for i in idx:
        if i is Ellipsis:
            skip = x.ndim - n_real
            out.extend(lays[d:d + skip])
            d += skip
        elif i is None:
            out.append(ctx.new(1, pin="size-1 dim"))
        elif isinstance(i, int):
            ctx.pin(lays[d], f"indexed by the constant {i}")
            d += 1
        else:
            out.append(_slice_layout(ctx, lays[d], x.shape[d], i))
            d += 1
    out.extend(lays[d:])
    ctx.set_output(out)


def _gather_by_index(ctx, x, idx: tuple, k: int) -> None:
    """``x[..., index_tensor, ...]`` with one integer index tensor and full slices elsewhere (e.g. a
    relative-position bias table indexed by a buffer): the indexed dim is replaced by the index's dims
    (position for position) and pinned; the other dims pass through."""
    n_real = sum(1 for i in idx if i is not Ellipsis)
    where = k if Ellipsis not in idx[:k] else x.ndim - (n_real - k)
    for i in idx:
        if isinstance(i, slice) and i != slice(None):
            raise PinDims("advanced indexing combined with a partial slice")
    lays = ctx.layouts(x)
    ctx.pin(lays[where], "gathered by an index tensor")
    index = idx[k]
    ctx.set_output([*lays[:where], *ctx.layouts(index), *lays[where + 1:]])


@register_dim_rule(_T.index_select, torch.index_select)
def index_select(ctx, x, dim, index) -> None:
    lays = list(ctx.layouts(x))
    d = dim % x.ndim
    ctx.pin(lays[d], "gathered by an index tensor")
    lays[d] = ctx.layouts(index)[0] if index.ndim == 1 else ctx.new(ctx.out.shape[d], pin="index_select")
    ctx.set_output(lays)


@register_dim_rule(_T.narrow, torch.narrow)
def narrow(ctx, x, dim, start, length) -> None:
    lays = list(ctx.layouts(x))
    d = dim % x.ndim
    lays[d] = _slice_layout(ctx, lays[d], x.shape[d], slice(int(start), int(start) + int(length)))
    ctx.set_output(lays)


@register_dim_rule(_T.select, torch.select)
def select(ctx, x, dim, index) -> None:
    lays = list(ctx.layouts(x))
    d = dim % x.ndim
    ctx.pin(lays[d], f"indexed by the constant {index}")
    ctx.set_output(lays[:d] + lays[d + 1:])


@register_dim_rule(_T.flip, torch.flip, _T.roll, torch.roll)
def flip(ctx, x, *args, **kwargs) -> None:
    # positions move; pruning keeps order only where nothing moves, so moved dims are pinned
    lays = list(ctx.layouts(x))
    dims = kwargs.get("dims", args[-1] if args else None)
    if dims is None:
        dims = list(range(x.ndim))
    dims = [dims] if isinstance(dims, int) else list(dims)
    for d in dims:
        ctx.pin(lays[d % x.ndim], f"{ctx.call.name} reorders positions")
    ctx.set_output(lays)
