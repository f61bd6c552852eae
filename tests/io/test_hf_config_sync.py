"""The Hugging Face config follows pruning for architectures outside the attribute tables (a generic search over
the config's integer fields, checked by building the model on meta), and says so when it cannot."""

from __future__ import annotations

import warnings

import pytest
import torch

import anyprune as tp
from anyprune.integrations.huggingface import config_matches, derive_config
from tests.zoo.test_hf_families import _build, _inputs, _out

pytest.importorskip("transformers")


def _prune(model, x, **kw):
    return tp.pruner.MetaPruner(model, x, pruning_ratio=0.5, prune_num_heads=True, head_pruning_ratio=0.5,
                                prune_head_dims=False, output_transform=_out,
                                ignored_layers=[model.get_input_embeddings()], **kw).step()


@pytest.mark.parametrize(("name", "field", "value"), [("falcon", "ffn_hidden_size", 64),
                                                      ("deberta-v2", "intermediate_size", 24)])
def test_the_config_field_is_found_and_from_pretrained_rebuilds_the_pruned_model(name, field, value, tmp_path):
    model = _build(name)
    x = _inputs(name)
    with warnings.catch_warnings():
        warnings.simplefilter("error", tp.errors.AnyPruneWarning)
        _prune(model, x)
    assert getattr(model.config, field) == value
    assert config_matches(model)
    model.save_pretrained(tmp_path)
    again = type(model).from_pretrained(tmp_path, dtype=torch.float64).eval()
    with torch.no_grad():
        torch.testing.assert_close(_out(again(x)), _out(model(x)), atol=1e-9, rtol=1e-7)


def test_a_config_that_cannot_describe_the_model_is_left_alone_with_a_warning(tmp_path):
    model = _build("gptj")  # GPT-J derives head_dim from n_embd / n_head: fewer heads of the same size have no form
    x = _inputs("gptj")
    before = model.config.to_dict()
    with pytest.warns(tp.errors.AnyPruneWarning, match="save it with anyprune.save_pruned"):
        _prune(model, x)
    assert not config_matches(model)
    assert derive_config(model) == {}
    assert model.config.to_dict()["n_head"] == before["n_head"]
    tp.save_pruned(model, tmp_path)
    again = tp.load_pruned(_build("gptj"), tmp_path)
    with torch.no_grad():
        torch.testing.assert_close(_out(again(x)), _out(model(x)))


def test_the_model_level_updater_runs_once_per_transaction():
    transformers = pytest.importorskip("transformers")
    cfg = transformers.LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=3,
                                   num_attention_heads=4, num_key_value_heads=2)
    model = transformers.LlamaForCausalLM(cfg).eval()
    ids = torch.randint(0, 64, (1, 6))
    dg = tp.DependencyGraph().build_dependency(model, ids, output_transform=lambda o: o.logits)
    calls = []
    name, module, up = dg._attrs.model_level[0]

    class Counting:
        model_level = True

        def update(self, m, sizes):
            calls.append(m)
            return up.update(m, sizes)

    dg._attrs.model_level[0] = (name, module, Counting())
    downs = [layer.mlp.down_proj for layer in model.model.layers]
    mlps = [g for g in dg.groups() if g.size == 48 and any(s.module in downs for s in g.slices)]
    assert len(mlps) == 3
    with dg.transaction():
        for g in mlps:
            g.prune(list(range(16)))
        assert calls == []  # put off while the transaction runs
        assert model.config.intermediate_size == 48
    assert calls == [model]
    assert model.config.intermediate_size == 32
    assert config_matches(model)
    dg.groups()[0].prune([0])  # outside a transaction: at once, as before
    assert len(calls) == 2
