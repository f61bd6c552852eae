"""``head_pruning_ratio`` is the fraction of each attention's heads removed, grouped-query factors chosen together."""

from __future__ import annotations

import warnings

import pytest
import torch

import anyprune as tp
from anyprune.integrations.huggingface import config_matches
from anyprune.testing import zoo_transformers as Z

pytest.importorskip("transformers")


def _prune_heads(ratio: float, heads: int, kv: int, global_pruning: bool = False):
    model = Z.build("hf_llama", num_attention_heads=heads, num_key_value_heads=kv, hidden_size=8 * heads)
    x = Z.example_inputs("hf_llama")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tp.pruner.MetaPruner(model, x, pruning_ratio=0.0, prune_num_heads=True, head_pruning_ratio=ratio,
                             global_pruning=global_pruning, output_transform=Z.output_transform("hf_llama")).step()
    attn = [layer.self_attn for layer in model.model.layers]
    heads_kept = {a.q_proj.out_features // a.head_dim for a in attn}
    kv_kept = {a.k_proj.out_features // a.head_dim for a in attn}
    assert len(heads_kept) == 1, f"layers keep different head counts: {heads_kept}"
    assert len(kv_kept) == 1, f"identical layers split their heads differently: {kv_kept}"
    assert config_matches(model)  # uniform layers: the Hugging Face config still describes the model
    with torch.no_grad():
        assert model(**x).logits.shape[-1] == model.config.vocab_size
    return heads_kept.pop(), kv_kept


@pytest.mark.parametrize(("ratio", "expected"), [
    (0.1, 9),    # 8.1 heads: 9 is closest (6 is the next product of the 3 x 3 factors)
    (0.25, 6),   # 6.75: 3 KV x 2 or 2 x 3
    (0.5, 4),    # 4.5: 2 x 2 (6 is farther)
    (2 / 3, 3),  # 3: exactly 1 x 3 or 3 x 1
])
@pytest.mark.parametrize("global_pruning", [False, True], ids=["local", "global"])
def test_gqa_keeps_the_head_count_closest_to_the_ratio(ratio, expected, global_pruning):
    heads, kvs = _prune_heads(ratio, 9, 3, global_pruning)
    assert heads == expected
    assert all(heads % kv == 0 for kv in kvs)


def test_gqa_half_of_eight_heads_is_four():
    """2 KV heads x 4 query heads each: half the heads, not half of each factor (which would leave 2)."""
    heads, kvs = _prune_heads(0.5, 8, 2)
    assert heads == 4
    assert kvs <= {1, 2}


def test_plain_multi_head_attention_keeps_the_closest_count():
    assert _prune_heads(0.3, 8, 8)[0] == 6  # 5.6 heads: 6 is closest (floor of the kept count would give 5)
    assert _prune_heads(0.25, 8, 8)[0] == 6


def test_a_tie_keeps_fewer_heads():
    assert _prune_heads(0.375, 4, 4)[0] == 2  # 2.5 heads: 2 and 3 are as close; the ratio is at least met
