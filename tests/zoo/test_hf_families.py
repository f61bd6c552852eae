"""Hugging Face architectures outside the attribute-updater tables (tiny configs, random weights).

For each: every exact group offered passes the mask-equivalence oracle in float64 and the pruned model runs on
another input shape; ``MetaPruner`` at 0.5 with heads gives a running model; and the pruned model comes back
from disk with the same outputs: through ``save_pretrained`` → plain ``from_pretrained`` where the config
describes it (``config_matches``), through ``save_pruned`` → ``load_pruned`` otherwise.
"""

from __future__ import annotations

import copy
import warnings

import pytest
import torch

import anyprune as tp
from anyprune.integrations.huggingface import config_matches

transformers = pytest.importorskip("transformers")

pytestmark = pytest.mark.zoo

_T = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
          max_position_embeddings=64)

FAMILIES: dict[str, tuple[str, dict]] = {
    "opt": ("OPTModel", dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, ffn_dim=48,
                             word_embed_proj_dim=32, max_position_embeddings=64)),
    "stablelm": ("StableLmModel", dict(_T, num_key_value_heads=4)),
    "mpnet": ("MPNetModel", _T),
    "gptj": ("GPTJModel", dict(vocab_size=99, n_embd=32, n_layer=2, n_head=4, rotary_dim=4, n_positions=64)),
    "codegen": ("CodeGenModel", dict(vocab_size=99, n_embd=32, n_layer=2, n_head=4, rotary_dim=4, n_positions=64,
                                     n_ctx=64)),
    "phi": ("PhiModel", _T),
    "bloom": ("BloomModel", dict(vocab_size=99, hidden_size=32, n_layer=2, n_head=4)),
    "albert": ("AlbertModel", dict(_T, embedding_size=16)),
    "electra": ("ElectraModel", dict(_T, embedding_size=16)),
    "deberta-v2": ("DebertaV2Model", _T),
    "roberta": ("RobertaModel", _T),
    "distilbert": ("DistilBertModel", dict(vocab_size=99, dim=32, n_layers=2, n_heads=4, hidden_dim=48,
                                           max_position_embeddings=64)),
    "gpt_neox": ("GPTNeoXModel", _T),
    "falcon": ("FalconModel", dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4)),
    "gemma": ("GemmaModel", dict(_T, num_key_value_heads=2, head_dim=8)),
    "resnet": ("ResNetModel", dict(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1])),
    "convnextv2": ("ConvNextV2Model", dict(hidden_sizes=[8, 16], depths=[1, 1], num_stages=2)),
    "segformer": ("SegformerModel", dict(num_encoder_blocks=2, depths=[1, 1], sr_ratios=[2, 1], hidden_sizes=[8, 16],
                                         num_attention_heads=[1, 2], patch_sizes=[7, 3], strides=[4, 2],
                                         mlp_ratios=[2, 2])),
    "mobilevit": ("MobileViTModel", dict(hidden_sizes=[16, 24, 32], neck_hidden_sizes=[8, 8, 16, 16, 24, 32, 64],
                                         image_size=32)),
    "wav2vec2": ("Wav2Vec2Model", dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                       intermediate_size=48, conv_dim=(8, 8), conv_stride=(5, 2), conv_kernel=(10, 3),
                                       num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2)),
}
_VISION = ("resnet", "convnextv2", "segformer", "mobilevit")


def _build(name: str):
    cls, cfg = FAMILIES[name]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        conf = transformers.AutoConfig.for_model(name, **cfg)
        conf._attn_implementation = "eager"
        torch.manual_seed(0)
        model = getattr(transformers, cls)(conf).eval().double()
    return model


def _inputs(name: str, small: bool = False) -> torch.Tensor:
    g = torch.Generator().manual_seed(1 if small else 0)
    if name in _VISION:
        return torch.randn(1, 3, 32, 32, generator=g, dtype=torch.float64)
    if name == "wav2vec2":
        return torch.randn(1, 320 if small else 400, generator=g, dtype=torch.float64)
    return torch.randint(0, 99, (2, 5) if small else (1, 7), generator=g)


def _out(o):
    hidden = getattr(o, "last_hidden_state", None)
    return hidden if hidden is not None else o[0]


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_exact_groups_pass_the_oracle_and_pruned_models_run(name):
    model = _build(name)
    x = _inputs(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        n = len(tp.DependencyGraph().build_dependency(model, x, output_transform=_out).groups())
    assert n > 0, f"{name}: nothing prunable"
    for k in range(n):
        m = copy.deepcopy(model)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dg = tp.DependencyGraph().build_dependency(m, x, output_transform=_out)
        g = dg.groups()[k]
        if g.size < 2:
            continue
        res = tp.verify_group(dg, g, idxs=list(range(g.size // 2)), example_inputs=x, atol=1e-8, rtol=1e-6)
        assert res.ok, f"{name}: group {k} ({g.root}): {res.details}"
        with torch.no_grad():
            m(_inputs(name, small=True))


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_meta_pruner_with_heads_runs_and_the_result_comes_back_from_disk(name, tmp_path):
    model = _build(name)
    x = _inputs(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pruner = tp.pruner.MetaPruner(model, x, pruning_ratio=0.5, prune_num_heads=True, head_pruning_ratio=0.5,
                                      output_transform=_out)
        pruner.step()
    assert pruner.result.params_after < pruner.result.params_before
    with torch.no_grad():
        ref = _out(model(x))
    if config_matches(model):
        model.save_pretrained(tmp_path)
        again = type(model).from_pretrained(tmp_path, dtype=torch.float64).eval()
    else:
        tp.save_pruned(model, tmp_path)
        again = tp.load_pruned(_build(name), tmp_path).eval()
    with torch.no_grad():  # rotary tables are computed in float32 by transformers, even in a float64 model
        torch.testing.assert_close(_out(again(x)), ref, atol=1e-6, rtol=1e-5)
