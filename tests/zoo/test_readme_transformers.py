"""The README's transformer example runs as written and does what it says."""

from __future__ import annotations

import pytest
import torch

import anyprune as tp

transformers = pytest.importorskip("transformers")
pytestmark = pytest.mark.zoo


def test_readme_llama_example():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(hidden_size=256, intermediate_size=512, num_hidden_layers=4,
                                         num_attention_heads=8, num_key_value_heads=2)).eval()
    DG = tp.DependencyGraph().build_dependency(model, torch.randint(0, 100, (1, 8)),
                                               output_transform=lambda out: out.logits)
    sizes = sorted(g.size for g in DG.get_all_groups())
    assert sizes == [2] * 4 + [4] * 4 + [16, 256] + [512] * 4
    for g in DG.get_all_groups():
        g.prune(idxs=list(range(g.size // 2)))
    assert (1, 8, model.config.vocab_size) in DG.verify()
    with torch.no_grad():
        assert model(torch.randint(0, 100, (2, 5))).logits.shape == (2, 5, model.config.vocab_size)
    assert (model.config.num_key_value_heads, model.config.intermediate_size) == (1, 256)
    assert (model.config.num_attention_heads, model.config.hidden_size, model.config.head_dim) == (2, 128, 16)
    fresh = LlamaForCausalLM(model.config)
    fresh.load_state_dict(model.state_dict(), strict=True)


def test_readme_calibration_example():
    """The README's calibration snippet, run as written (extracted from README.md)."""
    import re
    from pathlib import Path

    from transformers import LlamaConfig, LlamaForCausalLM

    text = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = text[text.index("### Calibration and reconstruction"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    torch.manual_seed(0)
    scope = {"tp": tp, "torch": torch, "LlamaConfig": LlamaConfig, "LlamaForCausalLM": LlamaForCausalLM}
    exec(code, scope)
    model, data = scope["model"], scope["data"]
    assert (model.config.intermediate_size, model.config.hidden_size) == (409, 204)  # 20% of every group
    assert all(layer.mlp.down_proj.weight.shape == (204, 409) for layer in model.model.layers)
    with torch.no_grad():
        assert torch.isfinite(model(data[:2]).logits).all()
