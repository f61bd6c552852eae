"""timm families whose attention and token mixers take sizes from ``x.shape``, attributes and stored shapes.

For each (small configurations, random weights): every group the graph offers can be pruned and the model
still runs; ``MetaPruner`` at 0.5 with heads gives a running model with the same output shape; exact groups
pass the mask-equivalence oracle in float64.
"""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from torch import nn

import anyprune as tp

timm = pytest.importorskip("timm")

pytestmark = pytest.mark.zoo

FAMILIES = {
    "pvt_v2_b0": {},
    "twins_pcpvt_small": {"depths": (1, 1, 1, 1)},
    "twins_svt_small": {"depths": (1, 1, 1, 1)},
    "coat_lite_tiny": {},
    "gcvit_xxtiny": {},
    "crossvit_tiny_240": {},
    "xcit_nano_12_p16_224": {"depth": 2},
    "cait_xxs24_224": {"depth": 2},
    "convit_tiny": {"depth": 2},
    "nest_tiny": {},
    "tnt_s_patch16_224": {"depth": 2},
    "hiera_tiny_224": {"stages": (1, 1, 1, 1)},
    "coatnet_nano_rw_224": {},
    "maxvit_nano_rw_256": {},
    "beit_base_patch16_224": {"depth": 2, "embed_dim": 64, "num_heads": 4},
    "eva02_tiny_patch14_224": {"depth": 2},
    "edgenext_xx_small": {},
    "efficientformerv2_s0": {},
    "poolformer_s12": {},
    "nf_resnet26": {},
}


def _build(name: str):
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, num_classes=10, **FAMILIES[name]).eval()
    x = torch.randn(1, *model.default_cfg.get("input_size", (3, 224, 224)))
    head = model.get_classifier()
    ignored = [m for m in (head if isinstance(head, tuple) else (head,)) if isinstance(m, nn.Module)]
    return model, x, ignored


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_every_offered_group_can_be_pruned(name):
    model, x, ignored = _build(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dg = tp.DependencyGraph().build_dependency(model, x, ignored_layers=ignored)
    groups = list(dg.get_all_groups())
    assert groups, f"{name}: nothing prunable"
    broke = [(g.root, err) for g in groups if g.size >= 2 and (err := dg.try_prune(g)) is not None]
    assert broke == [], f"{name}: {broke[:3]}"
    dg.lint()


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_meta_pruner_at_half_with_heads_runs_and_exact_groups_pass_the_oracle(name):
    model, x, ignored = _build(name)
    with torch.no_grad():
        ref_shape = model(x).shape
    params = sum(p.numel() for p in model.parameters())
    reference = copy.deepcopy(model).double()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pruner = tp.pruner.MetaPruner(model, x, pruning_ratio=0.5, prune_num_heads=True, head_pruning_ratio=0.5,
                                      ignored_layers=ignored)
        pruner.step()
    with torch.no_grad():
        assert model(x).shape == ref_shape
    assert sum(p.numel() for p in model.parameters()) < params

    x64 = x.double()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dg = tp.DependencyGraph().build_dependency(reference, x64, ignored_layers=[
            m for m in (reference.get_classifier() if isinstance(reference.get_classifier(), tuple)
                        else (reference.get_classifier(),)) if isinstance(m, nn.Module)])
    exact = [k for k, g in enumerate(dg.get_all_groups()) if g.exact and g.size > 1][:3]
    for k in exact:
        m = copy.deepcopy(reference)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dgk = tp.DependencyGraph().build_dependency(m, x64, ignored_layers=[
                mm for mm in (m.get_classifier() if isinstance(m.get_classifier(), tuple) else (m.get_classifier(),))
                if isinstance(mm, nn.Module)])
        g = list(dgk.get_all_groups())[k]
        res = tp.verify_group(dgk, g, idxs=list(range(g.size // 2)), example_inputs=x64, atol=1e-9, rtol=1e-7)
        assert res.ok, f"{name}: group {k} ({g.root}): {res.details}"
