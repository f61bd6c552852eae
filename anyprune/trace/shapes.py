"""Fast output shapes for common ops when tracing on the ``meta`` device.

Many of torch's meta kernels are Python decompositions (batch norm, elementwise
prims, convolutions): exact, but slow enough that a meta forward can cost more
than a real one at batch 1. During a meta trace the recorder asks
:func:`fast_meta_result` first; it returns a new meta tensor of the right shape
and dtype for the ops below, or ``None`` to run the real meta kernel. Only ops
whose result shape is a simple, well-known function of their arguments are
listed; anything unusual (in-place flags, non-float dtypes, string paddings with
dilation, ...) falls through to torch.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

__all__ = ["fast_meta_result"]

_T = torch.Tensor

# output = a new tensor like the first argument (same shape and dtype)
_LIKE_FIRST: set = {
    F.batch_norm, F.instance_norm, F.layer_norm, F.group_norm, F.relu, F.relu6, F.hardtanh, F.hardswish,
    F.hardsigmoid, F.silu, F.gelu, F.sigmoid, F.tanh, F.leaky_relu, F.elu, F.mish, F.softplus, F.dropout,
    F.dropout1d, F.dropout2d, F.dropout3d, torch.sigmoid, torch.tanh, torch.relu, _T.relu, _T.sigmoid, _T.tanh,
    _T.contiguous, _T.clone, torch.clone, F.softmax, F.log_softmax, _T.softmax, torch.softmax,
}
if hasattr(F, "rms_norm"):
    _LIKE_FIRST.add(F.rms_norm)

# functions whose ``inplace=True`` form returns its (unchanged-shape) input
_INPLACE_OK: set = {F.relu, F.relu6, F.hardtanh, F.hardswish, F.hardsigmoid, F.silu, F.leaky_relu, F.elu, F.mish,
                    F.dropout, F.dropout1d, F.dropout2d, F.dropout3d}

_BINARY: set = {
    _T.add, _T.__add__, _T.__radd__, torch.add, _T.mul, _T.__mul__, _T.__rmul__, torch.mul, _T.sub, _T.__sub__,
    torch.sub, _T.div, _T.__truediv__, torch.div,
}

# one tensor in, the same shape and dtype out (no other argument)
_UNARY: set = {torch.neg, _T.neg, _T.__neg__, torch.rsqrt, _T.rsqrt, torch.exp, _T.exp, torch.sqrt, _T.sqrt,
               torch.abs, _T.abs, _T.__abs__, torch.reciprocal, _T.reciprocal}
_POW: set = {torch.pow, _T.pow, _T.__pow__}
_MEAN: set = {torch.mean, _T.mean}

_CONV = {torch.conv1d: 1, torch.conv2d: 2, torch.conv3d: 3}
_ADAPTIVE = {F.adaptive_avg_pool1d: 1, F.adaptive_avg_pool2d: 2, F.adaptive_avg_pool3d: 3,
             torch.adaptive_avg_pool1d: 1}


def _broadcast(a: torch.Size, b: torch.Size) -> list[int] | None:
    n = max(len(a), len(b))
    out = []
    for i in range(n):
        x = a[i - n + len(a)] if i - n + len(a) >= 0 else 1
        y = b[i - n + len(b)] if i - n + len(b) >= 0 else 1
        if x != y and x != 1 and y != 1:
            return None
        out.append(y if x == 1 else x)
    return out


def _inplace(args: tuple, kwargs: dict) -> bool:
    return bool(kwargs.get("inplace")) or any(a is True for a in args[1:])


def _tuple(v: Any, n: int) -> tuple[int, ...]:
    if isinstance(v, int):
        return (v,) * n
    v = tuple(int(x) for x in v)
    return v * n if len(v) == 1 else v


def _conv_shape(x: torch.Tensor, w: torch.Tensor, n: int, stride, padding, dilation) -> list[int] | None:
    if isinstance(padding, str):
        if padding == "valid":
            padding = 0
        else:
            return None
    s, p, d = _tuple(stride, n), _tuple(padding, n), _tuple(dilation, n)
    k = w.shape[2:]
    spatial = x.shape[-n:]
    out = [(spatial[i] + 2 * p[i] - d[i] * (k[i] - 1) - 1) // s[i] + 1 for i in range(n)]
    if any(o <= 0 for o in out):
        return None
    return [*x.shape[: x.ndim - n - 1], w.shape[0], *out]


def _arg(args: tuple, kwargs: dict, i: int, name: str) -> Any:
    return kwargs.get(name, args[i] if len(args) > i else None)


def _norm_fits(func: Callable, x: torch.Tensor, args: tuple, kwargs: dict) -> bool:
    """Whether a norm's per-channel tensors fit ``x`` (the fast path must not accept what torch rejects)."""
    if func in (F.batch_norm, F.instance_norm):
        shape: tuple = (x.shape[1],) if x.ndim >= 2 else ()
        names = ("running_mean", "running_var", "weight", "bias")
        tensors = [_arg(args, kwargs, i + 1, n) for i, n in enumerate(names)]
    elif func is F.group_norm:
        g = _arg(args, kwargs, 1, "num_groups")
        if x.ndim < 2 or not isinstance(g, int) or g <= 0 or x.shape[1] % g:
            return False
        shape = (x.shape[1],)
        tensors = [_arg(args, kwargs, 2, "weight"), _arg(args, kwargs, 3, "bias")]
    elif func in (F.layer_norm, getattr(F, "rms_norm", None)):
        ns = _arg(args, kwargs, 1, "normalized_shape")
        shape = (int(ns),) if isinstance(ns, int) else tuple(int(s) for s in ns)
        if tuple(x.shape[x.ndim - len(shape):]) != shape:
            return False
        tensors = [_arg(args, kwargs, 2, "weight")] + ([_arg(args, kwargs, 3, "bias")] if func is F.layer_norm else [])
    else:
        return True
    return all(t is None or tuple(t.shape) == shape for t in tensors)


def _sdpa(query: Any, key: Any, value: Any, attn_mask: Any = None, dropout_p: float = 0.0, is_causal: bool = False,
          scale: Any = None, enable_gqa: bool = False) -> torch.Tensor | None:
    """``[..., L, Ev]`` for ``scaled_dot_product_attention`` (whose meta path otherwise runs the Python math
    decomposition); ``None`` for anything the kernel might reject, so that it runs and says why."""
    q, k, v = query, key, value
    if not all(isinstance(t, torch.Tensor) and t.is_floating_point() and t.dtype == q.dtype for t in (q, k, v)):
        return None
    if not q.ndim == k.ndim == v.ndim >= 3 or q.shape[-1] != k.shape[-1] or k.shape[-2] != v.shape[-2]:
        return None
    if q.shape[:-3] != k.shape[:-3] or k.shape[:-2] != v.shape[:-2]:
        return None
    if enable_gqa:
        if q.shape[-3] % k.shape[-3]:
            return None
    elif q.shape[-3] != k.shape[-3]:
        return None
    if not isinstance(dropout_p, (int, float)) or not isinstance(is_causal, bool):
        return None
    if scale is not None and not isinstance(scale, (int, float)):
        return None
    scores = (*q.shape[:-1], k.shape[-2])
    if attn_mask is not None:
        if is_causal or not isinstance(attn_mask, torch.Tensor) or attn_mask.ndim > len(scores) or \
                (attn_mask.dtype != torch.bool and attn_mask.dtype != q.dtype):
            return None
        if _broadcast(attn_mask.shape, torch.Size(scores)) != list(scores):
            return None
    return torch.empty((*q.shape[:-1], v.shape[-1]), dtype=q.dtype, device="meta")


def _mean(x: Any, dim: Any = None, keepdim: bool = False) -> torch.Tensor | None:
    """The shape of ``x.mean(dim, keepdim)`` (float tensors, no dtype argument)."""
    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or not isinstance(keepdim, bool):
        return None
    if dim is None:
        return None if keepdim else torch.empty((), dtype=x.dtype, device="meta")
    dims = (dim,) if isinstance(dim, int) and not isinstance(dim, bool) else tuple(dim)
    if not dims or not all(isinstance(d, int) and not isinstance(d, bool) and -x.ndim <= d < x.ndim for d in dims):
        return None
    axes = {d % x.ndim for d in dims}
    if len(axes) != len(dims):
        return None
    shape = [1 if i in axes else n for i, n in enumerate(x.shape)] if keepdim else \
        [n for i, n in enumerate(x.shape) if i not in axes]
    return torch.empty(shape, dtype=x.dtype, device="meta")


def fast_meta_result(func: Callable, args: tuple, kwargs: dict) -> torch.Tensor | None:
    """A meta tensor with the result's shape and dtype, or ``None`` when the op is not covered.

    Shapes the op would reject (channels that do not match a weight) give ``None`` too, so the real
    meta kernel runs and raises.
    """
    try:
        if func in _LIKE_FIRST:
            x = args[0] if args else kwargs.get("input")
            if not isinstance(x, torch.Tensor) or not x.is_floating_point() or not _norm_fits(func, x, args, kwargs):
                return None
            if _inplace(args, kwargs):
                return x if func in _INPLACE_OK else None
            if func in (F.softmax, F.log_softmax, _T.softmax, torch.softmax) and ("dtype" in kwargs or len(args) > 3):
                return None
            return torch.empty(x.shape, dtype=x.dtype, device="meta")
        if func in _BINARY:
            if len(args) != 2 or kwargs:
                return None
            a, b = args
            if not (isinstance(a, torch.Tensor) and a.is_floating_point()):
                return None
            if isinstance(b, torch.Tensor):
                if not b.is_floating_point() or (b.dtype != a.dtype and b.ndim > 0):
                    return None
                shape = _broadcast(a.shape, b.shape)
            elif isinstance(b, (int, float)) and not isinstance(b, bool):
                shape = list(a.shape)
            else:
                return None
            return None if shape is None else torch.empty(shape, dtype=a.dtype, device="meta")
        if func in (torch.cat, torch.concat):
            tensors = args[0] if args else kwargs.get("tensors")
            dim = kwargs.get("dim", args[1] if len(args) > 1 else 0)
            if not isinstance(dim, int) or not tensors or len(args) > 2 or set(kwargs) - {"dim", "tensors"}:
                return None
            first = tensors[0]
            if not all(isinstance(t, torch.Tensor) and t.dtype == first.dtype and t.ndim == first.ndim
                       and t.ndim > 0 for t in tensors):
                return None
            d = dim % first.ndim
            shape = list(first.shape)
            for t in tensors[1:]:
                if [s for i, s in enumerate(t.shape) if i != d] != [s for i, s in enumerate(shape) if i != d]:
                    return None
            shape[d] = sum(t.shape[d] for t in tensors)
            return torch.empty(shape, dtype=first.dtype, device="meta")
        n = _CONV.get(func)
        if n is not None:
            x, w = args[0], args[1]
            rest = list(args[3:]) + [None] * 4
            stride = kwargs.get("stride", rest[0] if rest[0] is not None else 1)
            padding = kwargs.get("padding", rest[1] if rest[1] is not None else 0)
            dilation = kwargs.get("dilation", rest[2] if rest[2] is not None else 1)
            groups = kwargs.get("groups", rest[3] if rest[3] is not None else 1)
            bias = kwargs.get("bias", args[2] if len(args) > 2 else None)
            if not x.is_floating_point() or x.dtype != w.dtype or x.ndim < n + 1 or w.ndim != n + 2:
                return None
            if x.shape[x.ndim - n - 1] != w.shape[1] * groups or w.shape[0] % groups:
                return None
            if bias is not None and tuple(bias.shape) != (w.shape[0],):
                return None
            shape = _conv_shape(x, w, n, stride, padding, dilation)
            return None if shape is None else torch.empty(shape, dtype=x.dtype, device="meta")
        if func is F.interpolate:
            x = args[0]
            size = kwargs.get("size", args[1] if len(args) > 1 else None)
            scale = kwargs.get("scale_factor", args[2] if len(args) > 2 else None)
            k = x.ndim - 2
            if not x.is_floating_point() or k < 1:
                return None
            if size is not None:
                out = _tuple(size, k)
            elif scale is not None:
                factors = (float(scale),) * k if isinstance(scale, (int, float)) else tuple(float(f) for f in scale)
                out = tuple(math.floor(x.shape[2 + i] * factors[i]) for i in range(k))
            else:
                return None
            return torch.empty([*x.shape[:2], *out], dtype=x.dtype, device="meta")
        if func is F.scaled_dot_product_attention:
            return _sdpa(*args, **kwargs)
        if func in _UNARY or func in _POW:
            x = args[0] if args else None
            if not isinstance(x, torch.Tensor) or not x.is_floating_point() or kwargs:
                return None
            if func in _UNARY and len(args) != 1:
                return None
            if func in _POW and (len(args) != 2 or isinstance(args[1], bool) or not isinstance(args[1], (int, float))):
                return None
            return torch.empty(x.shape, dtype=x.dtype, device="meta")
        if func in _MEAN:
            return _mean(*args, **kwargs)
        n = _ADAPTIVE.get(func)
        if n is not None:
            x = args[0]
            size = kwargs.get("output_size", args[1] if len(args) > 1 else None)
            if size is None or not x.is_floating_point():
                return None
            size = _tuple(size, n)
            if any(s is None for s in size):
                return None
            return torch.empty([*x.shape[: x.ndim - n], *size], dtype=x.dtype, device="meta")
    except (TypeError, ValueError, IndexError, RuntimeError):
        return None
    return None
