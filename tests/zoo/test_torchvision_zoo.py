"""The torchvision zoo: build (no_grad, meta), oracle on groups, prune every group by half."""

from __future__ import annotations

import warnings

import pytest
import torch

import anyprune as tp
from anyprune.testing import zoo
from anyprune.trace.opgraph import iter_tensors

pytestmark = pytest.mark.zoo

# every exact group is checked on these; a sample of groups on the rest
FULL_ORACLE = {"resnet18", "densenet121", "shufflenet_v2_x1_0", "mobilenet_v3_large", "efficientnet_b0",
               "regnet_y_1_6gf"}
# detection runs data-dependent post-processing (nms, topk) that has no meta kernel
META_EXCLUDE = ["fasterrcnn_*"]
SAMPLE = 6


def small_inputs(name, dtype=torch.float32, device="cpu"):
    size = {"image": 64, "segmentation": 64, "video": 32, "detection": 96, "inception": 80}[zoo.ZOO[name]]
    return zoo.example_inputs(name, size=size, dtype=dtype, device=device)


def outputs_match_shapes(ref, out, name):
    if zoo.ZOO[name] == "detection":
        # the number of detections depends on the weights; the structure must not change
        assert [sorted(d) for d in ref] == [sorted(d) for d in out]
        for r, o in zip(ref, out):
            assert r["boxes"].shape[1:] == o["boxes"].shape[1:]
        return
    shapes = [tuple(t.shape) for t in iter_tensors(ref)]
    assert shapes == [tuple(t.shape) for t in iter_tensors(out)], f"{name}: output shapes changed"


@pytest.mark.parametrize("name", zoo.list_models(), ids=str)
def test_build_under_no_grad_and_on_meta(name):
    model = zoo.build(name)
    x = small_inputs(name)
    training = {m: m.training for m in model.modules()}
    with torch.no_grad():
        dg = tp.DependencyGraph().build_dependency(model, x)
    assert torch.is_grad_enabled()
    assert {m: m.training for m in model.modules()} == training
    dg.dims.lint()
    dg.ops.lint()
    n_groups = len(dg.groups())
    assert n_groups > 0, f"{name}: no prunable group"
    if any(name.startswith(p.rstrip("*")) for p in META_EXCLUDE):
        return
    meta = zoo.build(name).to("meta")
    xm = small_inputs(name, device="meta")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dgm = tp.DependencyGraph().build_dependency(meta, xm)
    assert len(dgm.groups()) == n_groups, f"{name}: meta build found a different number of groups"


@pytest.mark.parametrize("name", zoo.list_models(), ids=str)
def test_oracle_float64(name):
    model = zoo.build(name).double()
    x = small_inputs(name, dtype=torch.float64)
    dg = tp.DependencyGraph().build_dependency(model, x)
    groups = dg.groups()
    if name not in FULL_ORACLE:
        step = max(1, len(groups) // SAMPLE)
        groups = groups[::step][:SAMPLE]
    checked = 0
    gen = torch.Generator().manual_seed(1)
    for g in groups:
        n = g.size
        k = max(1, n // 4)
        if k >= n:
            continue
        idxs = torch.randperm(n, generator=gen)[:k].tolist()
        res = tp.verify_group(dg, g, idxs=idxs, example_inputs=x, atol=1e-9, rtol=1e-7)
        assert res.shapes_match, f"{name}: shapes changed after pruning {g.root.fqn}"
        if res.exact:
            assert res.ok, f"{name}: group rooted at {g.root.fqn} is not mask-equivalent ({res.details})"
        checked += 1
    assert checked > 0


@pytest.mark.parametrize("name", zoo.list_models(), ids=str)
def test_prune_every_group_by_half(name):
    model = zoo.build(name)
    x = small_inputs(name)
    with torch.no_grad():
        ref = model(x)
    base_params = sum(p.numel() for p in model.parameters())
    dg = tp.DependencyGraph().build_dependency(model, x)
    groups = dg.groups()
    for g in groups:
        n = g.size // 2
        if n:
            g.prune(idxs=list(range(n)))
    dg.lint()
    with torch.no_grad():
        out = tp.verify_forward(model, x)
    outputs_match_shapes(ref, out, name)
    assert sum(p.numel() for p in model.parameters()) < base_params


@pytest.mark.parametrize("name", zoo.list_models(exclude=META_EXCLUDE), ids=str)
def test_meta_trace_matches_real_trace(name):
    """The fast meta shapes (anyprune.trace.shapes) must agree with real execution, call by call."""
    from anyprune.trace import trace

    model = zoo.build(name)
    x = small_inputs(name)
    real = trace(model, x, compute="real")
    meta = trace(model, x, compute="meta")
    assert [c.name for c in real.calls] == [c.name for c in meta.calls], f"{name}: different calls"
    for rc, mc in zip(real.calls, meta.calls):
        assert [v.shape for v in rc.outputs] == [v.shape for v in mc.outputs], f"{name}: {rc!r} vs {mc!r}"
        assert [v.dtype for v in rc.outputs] == [v.dtype for v in mc.outputs], f"{name}: dtype of {rc!r}"
