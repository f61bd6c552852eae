"""Transformers from torchvision, timm and Hugging Face (small configs, random weights).

For each model (and each attention implementation offered): the graph builds under no_grad and on the meta
device with the same groups; heads, KV groups and head_dim positions are found with the right structure;
every group passes the oracle (float64) where exact; pruning half of every group leaves a model that runs on
new input shapes with no hand edit; Hugging Face configs describe the pruned weights.
"""

from __future__ import annotations

import warnings

import pytest
import torch

import anyprune as tp
from anyprune.testing import zoo_transformers as Z
from anyprune.trace.opgraph import iter_tensors, map_tensors

pytest.importorskip("transformers")
pytest.importorskip("timm")

pytestmark = pytest.mark.zoo

CASES = [(name, attn) for name in Z.list_models() for attn in Z.TRANSFORMER_ZOO[name].attn]
IDS = [f"{n}-{a}" if a else n for n, a in CASES]

# (parameter, dim) whose layout is heads x head_dim (the attention output projection's input), heads,
# KV heads, head_dim, rotary (head_dim positions j and j + d/2 go together)
_LLAMA = ("model.layers.0.self_attn.o_proj.weight", 1, 8, 2, 16, True)
STRUCTURE = {
    "hf_llama": _LLAMA, "hf_llama_tied": _LLAMA, "hf_qwen2": _LLAMA, "hf_mistral": _LLAMA,
    "hf_phi3": ("model.layers.0.self_attn.o_proj.weight", 1, 8, 2, 8, True),
    "hf_bert": ("encoder.layer.0.attention.output.dense.weight", 1, 4, 4, 8, False),
    "hf_vit": ("layers.0.attention.o_proj.weight", 1, 4, 4, 8, False),
    "hf_gpt2": ("transformer.h.0.attn.c_proj.weight", 0, 4, 4, 8, False),
    "hf_t5_encoder": ("encoder.block.0.layer.0.SelfAttention.o.weight", 1, 4, 4, 8, False),
    "hf_clip_vision": ("encoder.layers.0.self_attn.out_proj.weight", 1, 4, 4, 8, False),
    "hf_swin": ("encoder.layers.0.blocks.0.attention.o_proj.weight", 1, 2, 2, 8, False),
    "tv_vit": ("encoder.layers.encoder_layer_0.self_attention.out_proj.weight", 1, 4, 4, 8, False),
    "tv_swin_t": ("features.1.0.attn.proj.weight", 1, 2, 2, 8, False),
    "tv_swin_v2_t": ("features.1.0.attn.proj.weight", 1, 2, 2, 8, False),
    "tv_maxvit_t": ("blocks.0.layers.0.layers.window_attention.attn_layer.1.merge.weight", 1, 2, 2, 8, False),
    "timm_vit_small": ("blocks.0.attn.proj.weight", 1, 4, 4, 16, False),
    "timm_deit_small": ("blocks.0.attn.proj.weight", 1, 4, 4, 16, False),
    "timm_swin_tiny": ("layers.0.blocks.0.attn.proj.weight", 1, 2, 2, 8, False),
}
# configs that can describe any uniform pruning (they read head_dim from the config)
# configs whose rope_parameters accept only their own types (a pruned rotary head_dim warns)
ROPE_REJECTED = {"hf_phi3"}
CONFIG_DESCRIBES_HEADS = {"hf_llama", "hf_llama_tied", "hf_qwen2", "hf_mistral", "hf_phi3", "hf_t5_encoder",
                          "hf_vit"}


def _build(name, attn, dtype=torch.float32):
    model = Z.build(name, attn=attn or None).to(dtype)
    x = map_tensors(Z.example_inputs(name), lambda t: t.to(dtype) if t.is_floating_point() else t)
    return model, x


def _run(model, x):
    with torch.no_grad():
        out = model(**x) if isinstance(x, dict) else model(x)
    transform = Z.output_transform(name_of(model))
    return transform(out) if transform else out


def name_of(model):
    return model._zoo_name


def _graph(model, x, name):
    model._zoo_name = name
    with warnings.catch_warnings():
        warnings.simplefilter("error", tp.errors.UnsupportedOpWarning)
        return tp.DependencyGraph().build_dependency(model, x, output_transform=Z.output_transform(name))


def _forward_fn(name):
    transform = Z.output_transform(name)
    if transform is None:
        return None
    return lambda m, x: transform(m(**x) if isinstance(x, dict) else m(x))


@pytest.mark.parametrize(("name", "attn"), CASES, ids=IDS)
def test_build_under_no_grad_and_on_meta(name, attn):
    model, x = _build(name, attn)
    with torch.no_grad():
        dg = _graph(model, x, name)
    dg.dims.lint()
    groups = dg.groups()
    assert groups, f"{name}: no prunable group"
    meta = Z.build(name, attn=attn or None).to("meta")
    xm = map_tensors(x, lambda t: t.to("meta"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", tp.errors.PinnedDimWarning)  # moving to meta unties T5 embeddings
        dgm = _graph(meta, xm, name)
    assert sorted(g.size for g in dgm.groups()) == sorted(g.size for g in groups)


def _per_unit(dg, group, fqn, dim) -> int:
    """How many positions of (fqn, dim) removing unit 0 of the group removes."""
    table = dg.dims.atoms
    for s in group.slices:
        if getattr(s, "fqn", None) == fqn and s.dim == dim:
            return int((table.index_of(s.layout, group.atoms[0]) == 0).sum())
    return 0


@pytest.mark.parametrize("name", sorted(STRUCTURE), ids=str)
def test_head_structure(name):
    fqn, dim, heads, kv, head_dim, rotary = STRUCTURE[name]
    model, x = _build(name, Z.TRANSFORMER_ZOO[name].attn[0])
    dg = _graph(model, x, name)
    found = {(g.size, _per_unit(dg, g, fqn, dim)) for g in dg.get_all_groups(root_module_types=None)}
    if kv == heads:
        assert (heads, head_dim) in found, f"{name}: no group of {heads} whole heads in {sorted(found)}"
    else:
        rep = heads // kv
        assert (kv, rep * head_dim) in found, f"{name}: no group of {kv} KV heads owning {rep} query heads"
        assert (rep, kv * head_dim) in found, f"{name}: no group of the {rep} query heads per KV head"
    if rotary:
        assert (head_dim // 2, 2 * heads) in found, f"{name}: no rotary head_dim pairs in {sorted(found)}"
    else:
        assert (head_dim, heads) in found, f"{name}: no group of head_dim positions in {sorted(found)}"


@pytest.mark.parametrize(("name", "attn"), CASES, ids=IDS)
def test_oracle_float64(name, attn):
    model, x = _build(name, attn, torch.float64)
    dg = _graph(model, x, name)
    gen = torch.Generator().manual_seed(1)
    exact = 0
    for g in dg.groups():
        k = max(1, g.size // 4)
        if k >= g.size:
            continue
        idxs = torch.randperm(g.size, generator=gen)[:k].tolist()
        res = tp.verify_group(dg, g, idxs=idxs, example_inputs=x, forward_fn=_forward_fn(name), atol=1e-9,
                              rtol=1e-7)
        assert res.shapes_match, f"{name}: shapes changed after pruning {g!r}"
        if res.exact:
            assert res.ok, f"{name}: group {g.details()} is not mask-equivalent ({res.details})"
            exact += 1
    assert exact > 0
    dg.lint()


def _new_inputs(name):
    """Inputs of another batch size / sequence length than the traced ones."""
    x = Z.example_inputs(name)
    if isinstance(x, dict):
        return {"input_ids": torch.randint(0, 96, (2, 5))}
    return torch.randn(2, *x.shape[1:])


@pytest.mark.parametrize(("name", "attn"), CASES, ids=IDS)
def test_prune_every_group_by_half(name, attn):
    model, x = _build(name, attn)
    model._zoo_name = name
    x2 = _new_inputs(name)
    ref = _run(model, x2)
    params = sum(p.numel() for p in model.parameters())
    dg = _graph(model, x, name)
    for g in dg.groups():
        if g.size // 2:
            g.prune(idxs=list(range(g.size // 2)))
    dg.lint()
    out = _run(model, x2)
    assert [t.shape for t in iter_tensors(out)] == [t.shape for t in iter_tensors(ref)]
    assert sum(p.numel() for p in model.parameters()) < params
    if Z.TRANSFORMER_ZOO[name].family == "huggingface":
        from anyprune.integrations.huggingface import config_matches

        if name in CONFIG_DESCRIBES_HEADS:
            if name in ROPE_REJECTED:  # the weights fit the config; the kept rotary frequencies cannot be described
                assert not config_matches(model)
            else:
                assert config_matches(model), f"{name}: config does not describe the pruned weights"
            fresh = type(model)(model.config)
            fresh.load_state_dict(model.state_dict(), strict=True)


@pytest.mark.parametrize("name", ["hf_bert", "hf_gpt2", "hf_clip_vision"], ids=str)
def test_config_follows_mlp_pruning(name):
    """Configs that derive head_dim from hidden_size still follow MLP (and hidden) pruning."""
    from anyprune.integrations.huggingface import config_matches

    model, x = _build(name, Z.TRANSFORMER_ZOO[name].attn[0])
    dg = _graph(model, x, name)
    pruned = 0
    for g in dg.groups():
        if any(w in getattr(s, "fqn", "") for s in g.slices for w in ("attn", "attention")) or g.size < 2:
            continue
        g.prune(idxs=list(range(g.size // 2)))
        pruned += 1
    assert pruned
    assert config_matches(model)


@pytest.mark.parametrize("name", ["hf_llama_tied", "hf_gpt2"], ids=str)
def test_tied_embeddings_stay_tied(name):
    model, x = _build(name, "eager")
    emb = model.get_input_embeddings().weight
    assert model.get_output_embeddings().weight is emb
    dg = _graph(model, x, name)
    hidden = [g for g in dg.groups() if any(getattr(s, "tensor", None) is emb and s.dim == 1 for s in g.slices)]
    assert len(hidden) == 1, "the tied embedding's hidden dim should be one group"
    g = hidden[0]
    g.prune(idxs=list(range(g.size // 2)))
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    assert model.get_input_embeddings().weight.shape[1] == g.size
    assert model.config.hidden_size == g.size
    model._zoo_name = name
    assert _run(model, _new_inputs(name)).shape[-1] == 96


def test_uneven_layers_recorded_in_config():
    model, x = _build("hf_llama", "sdpa")
    dg = _graph(model, x, "hf_llama")
    kv0 = next(g for g in dg.groups()
               if g.size == 2 and any(getattr(s, "fqn", "") == "model.layers.0.self_attn.k_proj.weight"
                                      for s in g.slices))
    kv0.prune(idxs=[1])
    attn0, attn1 = model.model.layers[0].self_attn, model.model.layers[1].self_attn
    assert attn0.num_key_value_groups == 4
    assert attn0.k_proj.out_features == 16
    assert attn0.q_proj.out_features == 64
    assert attn1.k_proj.out_features == 32
    assert model.config.num_key_value_heads == 2
    assert model.config.num_attention_heads == 8
    assert model.config.pruned_layers == {
        "model.layers.0.self_attn": {"num_attention_heads": 4, "num_key_value_heads": 1},
        "model.layers.1.self_attn": {"num_attention_heads": 8, "num_key_value_heads": 2},
    }
    model._zoo_name = "hf_llama"
    assert _run(model, _new_inputs("hf_llama")).shape == (2, 5, 96)


def test_identical_layers_cost_the_same():
    """Graph size (calls, atoms, groups) grows by the same amount for every decoder layer added."""
    counts = []
    for layers in (2, 4, 8):
        with torch.device("meta"):
            model = Z.build("hf_llama", attn="sdpa", num_hidden_layers=layers)
        ids = torch.zeros(1, 5, dtype=torch.long, device="meta")
        dg = tp.DependencyGraph().build_dependency(model, ids, output_transform=Z.output_transform("hf_llama"))
        counts.append((len(dg.ops.calls), dg.dims.atoms.num_atoms, len(dg.groups())))
    per_layer_a = [(b - a) / 2 for a, b in zip(counts[0], counts[1])]
    per_layer_b = [(b - a) / 4 for a, b in zip(counts[1], counts[2])]
    assert per_layer_a == per_layer_b
    assert per_layer_a[2] == 3  # KV heads, query heads per KV head and MLP width: three groups per layer
