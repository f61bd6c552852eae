"""Models in bfloat16 / float16 are pruned in their own dtype and choose the same indices as float32."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch

import anyprune as tp
from anyprune.testing import zoo_transformers as Z

pytest.importorskip("transformers")

pytestmark = pytest.mark.zoo

LLMS = ["hf_llama", "hf_llama_tied", "hf_qwen2", "hf_mistral", "hf_phi3", "hf_gpt2"]


def _prune(model, name):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pruner = tp.pruner.MetaPruner(model, Z.example_inputs(name),
                                      importance=tp.importance.GroupMagnitudeImportance(p=2),
                                      pruning_ratio=0.5, prune_num_heads=True, head_pruning_ratio=0.5,
                                      output_transform=Z.output_transform(name))
        pruner.step()
    return model


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("name", LLMS, ids=str)
def test_half_precision_keeps_its_dtype_and_matches_float32_choices(name, dtype):
    low = Z.build(name).to(dtype)
    # the same values in float32: rounding to the low dtype happened before, so scores see identical weights
    reference = copy.deepcopy(low).float()
    _prune(low, name)
    _prune(reference, name)
    state, ref_state = low.state_dict(), reference.state_dict()
    assert sorted(state) == sorted(ref_state)
    for k, t in state.items():
        if t.is_floating_point():
            assert t.dtype == dtype, k
        assert t.shape == ref_state[k].shape, k
        assert torch.equal(t.float(), ref_state[k].float()), k
    with torch.no_grad():
        out = low(**Z.example_inputs(name))
    logits = getattr(out, "logits", None)
    assert logits is not None
    assert logits.dtype == dtype
    assert torch.isfinite(logits.float()).all()


@pytest.mark.parametrize("name", ["hf_llama", "hf_qwen2"], ids=str)
def test_calibrated_pruning_with_reconstruction_in_bfloat16(name):
    """Statistics are accumulated in float64 whatever the model's dtype; the re-fitted weights keep bfloat16."""
    model = Z.build(name).to(torch.bfloat16)
    torch.manual_seed(1)
    calibration = torch.randint(0, 96, (8, 12))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pruner = tp.pruner.MetaPruner(model, Z.example_inputs(name), importance=tp.importance.OBSImportance(),
                                      pruning_ratio=0.25, calibration=calibration, reconstruct=True,
                                      output_transform=Z.output_transform(name))
        result = pruner.step()
    assert result.groups_pruned > 0
    assert all(p.dtype == torch.bfloat16 for p in model.parameters())
    with torch.no_grad():
        logits = model(**Z.example_inputs(name)).logits
    assert torch.isfinite(logits.float()).all()
