"""The fast meta shapes agree with real execution."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import anyprune as tp
from anyprune.trace.shapes import fast_meta_result

x4 = torch.randn(2, 3, 9, 7)
w = torch.randn(5, 3, 3, 2)
CASES = [
    (F.interpolate, (x4,), {"scale_factor": 1.7, "mode": "bilinear"}),
    (F.interpolate, (x4,), {"scale_factor": (0.5, 2.0)}),
    (F.interpolate, (x4, (4, 5)), {}),
    (F.interpolate, (torch.randn(1, 2, 5),), {"scale_factor": 3}),
    (torch.conv2d, (x4, w), {"stride": 2, "padding": 1, "dilation": (2, 1)}),
    (torch.conv2d, (x4, w, None, 1, "valid"), {}),
    (torch.conv1d, (torch.randn(2, 3, 11), torch.randn(4, 3, 3), None, 2, 1), {}),
    (F.adaptive_avg_pool2d, (x4, (3, 1)), {}),
    (torch.cat, ([x4, torch.randn(2, 5, 9, 7)], 1), {}),
    (torch.Tensor.add, (x4, torch.randn(3, 1, 1)), {}),
    (torch.Tensor.mul, (torch.randn(3, 1, 7), torch.randn(2, 1, 9, 1)), {}),
    (F.batch_norm, (x4, torch.zeros(3), torch.ones(3)), {}),
    (F.relu, (x4,), {"inplace": True}),
    (torch.Tensor.pow, (x4, 2), {}),
    (torch.Tensor.__pow__, (x4, 0.5), {}),
    (torch.neg, (x4,), {}),
    (torch.Tensor.rsqrt, (x4.abs(),), {}),
    (torch.Tensor.mean, (x4, -1), {"keepdim": True}),
    (torch.mean, (x4, (1, 3)), {}),
    (torch.Tensor.mean, (x4,), {}),
    (F.scaled_dot_product_attention, (torch.randn(2, 4, 5, 8), torch.randn(2, 4, 7, 8), torch.randn(2, 4, 7, 6)), {}),
    (F.scaled_dot_product_attention, (torch.randn(2, 6, 5, 8), torch.randn(2, 2, 5, 8), torch.randn(2, 2, 5, 3)),
     {"enable_gqa": True, "is_causal": True, "scale": 0.3}),
    (F.scaled_dot_product_attention, (torch.randn(3, 5, 8), torch.randn(3, 7, 8), torch.randn(3, 7, 8)),
     {"attn_mask": torch.randn(5, 7)}),
    (F.scaled_dot_product_attention, (torch.randn(1, 2, 5, 4), torch.randn(1, 2, 5, 4), torch.randn(1, 2, 5, 4)),
     {"attn_mask": torch.ones(1, 1, 5, 5, dtype=torch.bool), "dropout_p": 0.0}),
]


@pytest.mark.parametrize(("func", "args", "kwargs"), CASES, ids=lambda c: getattr(c, "__name__", "") or None)
def test_fast_meta_shape_matches_real(func, args, kwargs):
    real = func(*[a.clone() if isinstance(a, torch.Tensor) else a for a in args], **kwargs)
    meta_args = [a.to("meta") if isinstance(a, torch.Tensor) else
                 [t.to("meta") for t in a] if isinstance(a, list) else a for a in args]
    fast = fast_meta_result(func, tuple(meta_args), kwargs)
    assert fast is not None, f"{func} not covered"
    assert fast.is_meta
    assert fast.shape == real.shape
    assert fast.dtype == real.dtype


def test_uncovered_ops_fall_through():
    assert fast_meta_result(torch.topk, (x4.to("meta"), 2), {}) is None
    assert fast_meta_result(torch.Tensor.add, (x4.to("meta").long(), 1), {}) is None
    meta = x4.to("meta")
    assert fast_meta_result(torch.Tensor.mean, (meta, 4), {}) is None  # out of range: the kernel raises
    assert fast_meta_result(torch.Tensor.mean, (meta, (1, -3)), {}) is None  # the same dim twice
    assert fast_meta_result(torch.Tensor.mean, (meta, -1), {"dtype": torch.float64}) is None
    assert fast_meta_result(torch.Tensor.pow, (meta, meta), {}) is None  # a tensor exponent broadcasts
    assert fast_meta_result(torch.neg, (meta,), {"out": meta}) is None


@pytest.mark.parametrize(("q", "k", "v", "kwargs"), [
    ((2, 4, 5, 8), (2, 4, 7, 6), (2, 4, 7, 6), {}),  # q and k widths differ
    ((2, 4, 5, 8), (2, 4, 7, 8), (2, 4, 6, 8), {}),  # k and v lengths differ
    ((2, 6, 5, 8), (2, 4, 5, 8), (2, 4, 5, 8), {"enable_gqa": True}),  # 6 heads over 4 key heads
    ((2, 6, 5, 8), (2, 2, 5, 8), (2, 2, 5, 8), {}),  # grouped heads without enable_gqa
    ((2, 4, 5, 8), (2, 4, 5, 8), (2, 4, 5, 8), {"attn_mask": (5, 6)}),  # mask of the wrong length
    ((2, 4, 5, 8), (2, 4, 5, 8), (2, 4, 5, 8), {"attn_mask": (5, 5), "is_causal": True}),
])
def test_attention_shapes_the_kernel_rejects_fall_through(q, k, v, kwargs):
    kw = {key: torch.empty(val, device="meta") if key == "attn_mask" else val for key, val in kwargs.items()}
    args = tuple(torch.empty(s, device="meta") for s in (q, k, v))
    assert fast_meta_result(F.scaled_dot_product_attention, args, kw) is None
    with pytest.raises(RuntimeError):  # the meta kernel, which then runs, says why
        F.scaled_dot_product_attention(*args, **kw)


@pytest.mark.parametrize(("model", "x", "match"), [
    (lambda: nn.Conv2d(3, 4, 1), (1, 5, 4, 4), "expected input.*to have 3 channels"),
    (lambda: nn.Conv2d(4, 4, 1, groups=2), (1, 6, 4, 4), "to have 4 channels"),
    (lambda: nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(5)), (1, 3, 4, 4), "running_mean"),
    (lambda: nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(5)), (1, 3), "normalized_shape"),
    (lambda: nn.Sequential(nn.Conv2d(3, 4, 1), nn.GroupNorm(2, 6)), (1, 3, 4, 4), "number of channels"),
])
def test_fast_meta_shapes_reject_what_torch_rejects(model, x, match):
    """A channel mismatch must fail the trace, not give a graph of a model that cannot run."""
    with pytest.raises(tp.TraceError, match=match):
        tp.DependencyGraph().build_dependency(model(), torch.randn(*x))
