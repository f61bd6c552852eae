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
        # without the build's safety net: the size rules alone must keep every offered group working
        dg = tp.DependencyGraph().build_dependency(model, x, ignored_layers=ignored, check_groups=False)
    groups = list(dg.get_all_groups())
    assert groups, f"{name}: nothing prunable"
    broke = [(g.root, err) for g in groups if g.size >= 2 and (err := dg.try_prune(g)) is not None]
    assert broke == [], f"{name}: {broke[:3]}"
    dg.lint()
    assert dg.check_groups() == []  # and the safety net agrees


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


def _rope_attention(fused: bool, kv_heads: int | None):
    from timm.layers.attention import AttentionRope

    return AttentionRope(32, num_heads=4, num_kv_heads=kv_heads, qkv_fused=fused), torch.randn(1, 5, 32)


def _tnt_block():
    from timm.models.tnt import Attention

    class Res(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inp = nn.Linear(8, 24)
            self.attn = Attention(24, hidden_dim=16, num_heads=4)

        def forward(self, x):
            h = self.inp(x)
            return h + self.attn(h)

    return Res(), torch.randn(1, 5, 8)


@pytest.mark.parametrize("case", ["rope-fused", "rope-separate", "rope-gqa", "tnt"])
def test_attribute_updaters_keep_heads_prunable_and_exact(case):
    """timm attention classes whose forward reads head counts from attributes: heads and head_dim are offered,
    each passes the oracle in float64, and the attributes follow the pruned widths."""
    torch.manual_seed(0)
    make = {"rope-fused": lambda: _rope_attention(True, None), "rope-separate": lambda: _rope_attention(False, None),
            "rope-gqa": lambda: _rope_attention(False, 2), "tnt": _tnt_block}[case]
    model, x = make()
    model = model.double().eval()
    x = x.double()
    dg = tp.DependencyGraph().build_dependency(model, x)
    structures = sorted(g.structure for g in dg.groups())
    assert {"heads", "head_dim"} <= set(structures), structures
    for k in range(len(dg.groups())):
        m = copy.deepcopy(model)
        dgk = tp.DependencyGraph().build_dependency(m, x)
        gk = dgk.groups()[k]
        res = tp.verify_group(dgk, gk, idxs=[0], example_inputs=x, atol=1e-10, rtol=1e-8)
        # AttentionRope runs scaled_dot_product_attention with its default scale 1/sqrt(head_dim), read from the
        # tensor: its head_dim groups change the scale and are labelled approximate; TNT keeps a stored scale
        want_exact = gk.structure != "head_dim" or case == "tnt"
        assert (res.ok, res.exact) == (True, want_exact), f"{case}: group {k} ({gk.structure}): {res.details}"
        attn = getattr(m, "attn", m)
        if gk.structure == "heads":
            assert attn.num_heads == getattr(model, "attn", model).num_heads - (1 if case != "rope-gqa" else 2)
        if hasattr(attn, "attn_dim"):
            assert attn.attn_dim == attn.num_heads * attn.head_dim == attn.proj.in_features
        if hasattr(attn, "kv_dim"):
            assert attn.kv_dim == attn.num_kv_heads * attn.head_dim
        if hasattr(attn, "hidden_dim"):
            assert attn.hidden_dim == attn.num_heads * attn.head_dim == attn.qk.out_features // 2
        dgk.verify()
