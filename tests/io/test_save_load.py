"""Save and reload pruned models without pickle: round trips, Hugging Face, crafted files, history replay."""

from __future__ import annotations

import copy
import json
import os
import pickle
import warnings

import pytest
import torch

import anyprune as tp
from anyprune.testing import zoo
from anyprune.testing import zoo_transformers as Z
from tests.helpers import assert_same_state, state


def _prune_half(model, x, output_transform=None):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dg = tp.DependencyGraph().build_dependency(model, x, output_transform=output_transform)
    imp = tp.importance.GroupMagnitudeImportance(p=2)
    for g in dg.groups():
        if g.size // 2:
            g.prune(idxs=imp(g).argsort()[: g.size // 2].tolist())
    return dg


def _head_dim_group(name, **over):
    """A zoo transformer, its example input and output transform, its graph and first head_dim group."""
    model = Z.build(name, **over)
    x = Z.example_inputs(name)
    transform = Z.output_transform(name)
    dg = tp.DependencyGraph().build_dependency(model, x, output_transform=transform)
    return model, x, transform, dg, next(g for g in dg.groups() if g.structure == "head_dim")


def _out(model, x, transform=None):
    with torch.no_grad():
        y = model(**x) if isinstance(x, dict) else model(x)
    return transform(y) if transform else y


def test_resnet50_round_trip(tmp_path):
    model = zoo.build("resnet50")
    x = torch.randn(1, 3, 64, 64)
    _prune_half(model, x)
    ref = _out(model, x)
    tp.save_pruned(model, tmp_path)
    assert sorted(os.listdir(tmp_path)) == ["anyprune.json", "model.safetensors"]
    fresh = tp.load_pruned(zoo.build("resnet50"), tmp_path)
    assert torch.equal(_out(fresh, x), ref)
    assert fresh.layer1[0].conv1.out_channels == model.layer1[0].conv1.out_channels
    assert fresh.fc.in_features == model.fc.in_features


@pytest.mark.zoo
@pytest.mark.parametrize("name", ["timm_vit_small", "hf_llama", "hf_gpt2", "hf_phi3"])
def test_transformer_round_trip(name, tmp_path):
    pytest.importorskip("transformers")
    pytest.importorskip("timm")
    model = Z.build(name)
    x = Z.example_inputs(name)
    transform = Z.output_transform(name)
    _prune_half(model, x, transform)
    ref = _out(model, x, transform)
    tp.save_pruned(model, tmp_path)
    fresh = tp.load_pruned(Z.build(name), tmp_path)  # a freshly built original
    assert torch.equal(_out(fresh, x, transform), ref)
    if name == "hf_gpt2":
        assert fresh.lm_head.weight is fresh.transformer.wte.weight  # still tied


@pytest.mark.zoo
@pytest.mark.parametrize("name", ["hf_llama", "hf_qwen2", "hf_mistral"])
def test_uniform_hugging_face_model_reloads_with_from_pretrained(name, tmp_path):
    """Heads, KV groups, head_dim (rotary pairs), MLP and hidden width pruned uniformly: plain from_pretrained."""
    pytest.importorskip("transformers")
    model = Z.build(name)
    x = Z.example_inputs(name)
    transform = Z.output_transform(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dg = tp.DependencyGraph().build_dependency(model, x, output_transform=transform)
    full_freq = model.model.rotary_emb.inv_freq.clone()
    imp = tp.importance.GroupMagnitudeImportance(p=2)
    for g in dg.groups():
        if g.size // 2:  # scattered positions: the kept rotary frequencies are not a prefix
            g.prune(idxs=imp(g).argsort()[: g.size // 2].tolist())
    ref = _out(model, x, transform)
    assert model.config.rope_parameters["rope_type"] == "anyprune_pruned"
    kept = model.model.rotary_emb.inv_freq
    assert len(kept) < len(full_freq)
    assert all(bool((full_freq == f).any()) for f in kept)
    assert not torch.equal(kept, full_freq[: len(kept)])
    assert tp.integrations.huggingface.config_matches(model)
    model.save_pretrained(tmp_path)
    again = type(model).from_pretrained(tmp_path, attn_implementation=model.config._attn_implementation).eval()
    assert torch.equal(again.model.rotary_emb.inv_freq, kept)
    # the rebuilt attention derives its scale from the new head_dim; the rotary factor makes up for it exactly
    # in real numbers, so only float32 rounding separates the two
    assert again.model.layers[0].self_attn.scaling != model.model.layers[0].self_attn.scaling
    torch.testing.assert_close(_out(again, x, transform), ref, rtol=1e-5, atol=1e-6)
    assert again.config.num_key_value_heads == 1
    assert again.config.head_dim == model.config.head_dim < Z.build(name).config.head_dim


@pytest.mark.zoo
def test_config_that_rejects_the_pruned_rotary_type_warns_and_stays_loadable(tmp_path):
    """Phi-3's config accepts only its own rope types: pruning head_dim warns, the config keeps its rope."""
    pytest.importorskip("transformers")
    model, x, transform, _, g = _head_dim_group("hf_phi3")
    with pytest.warns(tp.errors.AnyPruneWarning, match="Phi3Config cannot describe the pruned rotary head_dim"):
        g.prune(idxs=[1, 2])
    assert model.config.rope_parameters["rope_type"] == "default"
    assert not tp.integrations.huggingface.config_matches(model)
    ref = _out(model, x, transform)
    tp.save_pruned(model, tmp_path)
    assert torch.equal(_out(tp.load_pruned(Z.build("hf_phi3"), tmp_path), x, transform), ref)


@pytest.mark.zoo
def test_pruned_rotary_config_fails_loudly_without_anyprune(tmp_path):
    """A process that never imported anyprune must not load other frequencies silently."""
    pytest.importorskip("transformers")
    import subprocess
    import sys

    model, _, _, _, g = _head_dim_group("hf_llama")
    g.prune(idxs=[1])
    model.save_pretrained(tmp_path)
    code = f"from transformers import LlamaForCausalLM; LlamaForCausalLM.from_pretrained({str(tmp_path)!r})"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert run.returncode != 0
    assert "anyprune_pruned" in run.stderr
    # the documented fix: import anyprune after transformers, then plain from_pretrained
    code = ("import transformers, anyprune; m = transformers.LlamaForCausalLM.from_pretrained("
            f"{str(tmp_path)!r}); print(m.model.rotary_emb.inv_freq.tolist())")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert json.loads(run.stdout.strip().splitlines()[-1]) == model.model.rotary_emb.inv_freq.tolist()


@pytest.mark.zoo
def test_dynamic_rope_head_dim_is_refused_and_the_model_is_unchanged():
    pytest.importorskip("transformers")
    rope = {"rope_type": "dynamic", "factor": 2.0, "rope_theta": 10000.0}
    model, _, _, dg, g = _head_dim_group("hf_llama", rope_parameters=rope)
    before = state(model)
    config_before = model.config.to_dict()
    with pytest.raises(tp.PruningError, match=r"dynamic.*prune_head_dims=False"):
        g.prune(idxs=[1])
    assert_same_state(state(model), before)
    assert model.config.to_dict() == config_before
    heads = next(h for h in dg.groups() if h.structure == "heads")
    heads.prune(idxs=[0])  # whole heads keep every frequency
    assert model.config.rope_parameters["rope_type"] == "dynamic"


@pytest.mark.zoo
def test_uneven_layers_reload_through_anyprune(tmp_path):
    pytest.importorskip("transformers")
    model = Z.build("hf_llama")
    x = Z.example_inputs("hf_llama")
    transform = Z.output_transform("hf_llama")
    dg = tp.DependencyGraph().build_dependency(model, x, output_transform=transform)
    layer0 = next(g for g in dg.groups() if g.size == 2 and any(
        getattr(s, "fqn", "") == "model.layers.0.self_attn.k_proj.weight" for s in g.slices))
    layer0.prune(idxs=[0])
    ref = _out(model, x, transform)
    tp.save_pruned(model, tmp_path / "a")
    fresh = tp.load_pruned(Z.build("hf_llama"), tmp_path / "a")
    assert torch.equal(_out(fresh, x, transform), ref)
    assert fresh.config.pruned_layers["model.layers.0.self_attn"]["num_key_value_heads"] == 1
    model.save_pretrained(tmp_path / "b")
    saved = json.loads((tmp_path / "b" / "config.json").read_text())
    assert saved["pruned_layers"]["model.layers.0.self_attn"] == {"num_attention_heads": 4,
                                                                   "num_key_value_heads": 1}


def test_seed_state_dict_round_trip():
    model = zoo.build("resnet18")
    x = torch.randn(1, 3, 32, 32)
    _prune_half(model, x)
    sd = tp.state_dict(model)
    fresh = tp.load_state_dict(zoo.build("resnet18"), state_dict=sd)
    assert torch.equal(_out(fresh, x), _out(model, x))


def test_history_replays_on_an_unpruned_model():
    model = zoo.build("resnet18")
    fresh = copy.deepcopy(model)
    x = torch.randn(1, 3, 32, 32)
    dg = _prune_half(model, x)
    history = dg.pruning_history()
    assert json.loads(json.dumps(history)) == [list(h) for h in history]  # JSON-able
    dg2 = tp.DependencyGraph().build_dependency(fresh, x)
    dg2.load_pruning_history(history)
    assert torch.equal(_out(fresh, x), _out(model, x))
    with pytest.raises(tp.PruningError, match="not a prunable dim"):
        dg2.load_pruning_history([("nope.weight", 0, [0])])


# ----------------------------------------------------------------- untrusted files
def _saved(tmp_path):
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    tp.prune_linear_out_channels(model[0], [0])
    tp.prune_linear_in_channels(model[2], [0])
    return tp.save_pruned(model, tmp_path)


def _fresh():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))


class _Exploit:
    def __reduce__(self):
        return (os.system, ("touch PWNED_BY_PICKLE",))


def test_pickle_in_place_of_weights_never_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    d = _saved(tmp_path / "m")
    (d / "model.safetensors").write_bytes(pickle.dumps(_Exploit()))
    model = _fresh()
    before = state(model)
    with pytest.raises(tp.ConfigError, match="safetensors"):
        tp.load_pruned(model, d)
    assert not (tmp_path / "PWNED_BY_PICKLE").exists()
    assert_same_state(before, state(model))


@pytest.mark.parametrize(("edit", "match"), [
    (lambda r: r["modules"]["0"].update(forward="x"), "cannot be set"),
    (lambda r: r["modules"]["0"].update(__class__="x"), "cannot be set"),
    (lambda r: r["modules"]["0"].update(out_features="7"), "cannot be set"),
    (lambda r: r["modules"].update({"nope": {"a": 1}}), "no module"),
    (lambda r: r["tensors"].update({"0.evil": {"shape": [1], "dtype": "float32"}}), "no parameter or buffer"),
    (lambda r: r["tensors"]["0.weight"].update(shape=[7]), "dims"),
    (lambda r: r["tensors"]["0.weight"].update(dtype="os.system"), "bad dtype"),
    (lambda r: r.update(format="other"), "not an anyprune structure record"),
])
def test_crafted_records_are_rejected_and_leave_the_model_untouched(tmp_path, edit, match):
    d = _saved(tmp_path)
    record = json.loads((d / "anyprune.json").read_text())
    edit(record)
    (d / "anyprune.json").write_text(json.dumps(record))
    model = _fresh()
    before = state(model)
    attrs = {k: dict(vars(m)) for k, m in model.named_modules()}
    with pytest.raises(tp.ConfigError, match=match):
        tp.load_pruned(model, d)
    assert_same_state(before, state(model))
    assert {k: dict(vars(m)) for k, m in model.named_modules()} == attrs


def test_loading_into_another_architecture_fails_clearly(tmp_path):
    d = _saved(tmp_path)
    other = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU())
    with pytest.raises(tp.ConfigError, match=r"no entry for|no parameter"):
        tp.load_pruned(other, d)
