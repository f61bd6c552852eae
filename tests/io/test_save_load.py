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
@pytest.mark.parametrize("name", ["hf_llama", "hf_qwen2"])
def test_uniform_hugging_face_model_reloads_with_from_pretrained(name, tmp_path):
    """Heads, KV groups, MLP and hidden width pruned uniformly: plain save_pretrained/from_pretrained."""
    pytest.importorskip("transformers")
    model = Z.build(name)
    x = Z.example_inputs(name)
    transform = Z.output_transform(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dg = tp.DependencyGraph().build_dependency(model, x, output_transform=transform)
    for g in dg.groups():
        if g.structure != "head_dim" and g.size // 2:  # a rebuilt rotary embedding would not know pruned pairs
            g.prune(idxs=list(range(g.size // 2)))
    ref = _out(model, x, transform)
    model.save_pretrained(tmp_path)
    again = type(model).from_pretrained(tmp_path, attn_implementation=model.config._attn_implementation).eval()
    assert torch.equal(_out(again, x, transform), ref)
    assert again.config.num_key_value_heads == 1


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
