"""Small transformer models (random weights, built from configs; nothing downloaded).

Used by the tests and benchmarks of attention support: torchvision ViT/Swin/MaxViT,
timm ViT/DeiT/Swin/ConvNeXt and Hugging Face encoders and decoders. Every entry
is ``name -> (builder, example-input maker, output transform)``; configs are tiny
but keep the structure that matters (several heads, grouped-query attention,
tied embeddings, packed projections).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

__all__ = ["TRANSFORMER_ZOO", "ZooEntry", "list_models", "build", "example_inputs", "output_transform"]


class ZooEntry:
    """How to build one model, feed it and read its main output tensor."""

    def __init__(self, make: Callable[..., nn.Module], inputs: Callable[[], Any], family: str,
                 out: Callable[[Any], Any] | None = None, attn: tuple[str, ...] = ("",)) -> None:
        self.make = make
        self.inputs = inputs
        self.family = family
        self.out = out
        self.attn = attn


def _image(size: int = 32) -> Callable[[], torch.Tensor]:
    return lambda: torch.randn(1, 3, size, size)


def _tokens(vocab: int = 96, n: int = 7) -> Callable[[], dict]:
    def make() -> dict:
        g = torch.Generator().manual_seed(0)
        return {"input_ids": torch.randint(0, vocab, (1, n), generator=g)}
    return make


def _hf_out(name: str) -> Callable[[Any], Any]:
    return lambda o: getattr(o, name)


# ------------------------------------------------------------------ torchvision
def _tv_vit(attn: str = "") -> nn.Module:
    from torchvision.models.vision_transformer import VisionTransformer

    return VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=4, hidden_dim=32,
                             mlp_dim=48, num_classes=10)


def _tv_swin(attn: str = "") -> nn.Module:
    from torchvision.models.swin_transformer import SwinTransformer

    return SwinTransformer(patch_size=[4, 4], embed_dim=16, depths=[2, 2], num_heads=[2, 4], window_size=[4, 4],
                           num_classes=10)


def _tv_swin_v2(attn: str = "") -> nn.Module:
    from torchvision.models.swin_transformer import PatchMergingV2, SwinTransformer, SwinTransformerBlockV2

    return SwinTransformer(patch_size=[4, 4], embed_dim=16, depths=[2, 2], num_heads=[2, 4], window_size=[4, 4],
                           num_classes=10, block=SwinTransformerBlockV2, downsample_layer=PatchMergingV2)


def _tv_maxvit(attn: str = "") -> nn.Module:
    from torchvision.models.maxvit import MaxVit

    return MaxVit(input_size=(64, 64), stem_channels=16, partition_size=4, block_channels=[16, 32],
                  block_layers=[1, 1], head_dim=8, stochastic_depth_prob=0.0, num_classes=10)


# ------------------------------------------------------------------ timm
def _timm(name: str, **kw: Any) -> Callable[..., nn.Module]:
    def make(attn: str = "") -> nn.Module:
        import timm

        return timm.create_model(name, pretrained=False, num_classes=10, **kw)
    return make


# ------------------------------------------------------------------ Hugging Face
def _hf(model_cls: str, config_cls: str, **cfg: Any) -> Callable[..., nn.Module]:
    def make(attn: str = "eager", **over: Any) -> nn.Module:
        import transformers

        conf = getattr(transformers, config_cls)(**{**cfg, **over})
        if attn:
            conf._attn_implementation = attn
        return getattr(transformers, model_cls)(conf)
    return make


_LLAMA = dict(vocab_size=96, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=8,
              num_key_value_heads=2, head_dim=16, max_position_embeddings=64)

TRANSFORMER_ZOO: dict[str, ZooEntry] = {
    "tv_vit": ZooEntry(_tv_vit, _image(32), "torchvision"),
    "tv_swin_t": ZooEntry(_tv_swin, _image(32), "torchvision"),
    "tv_swin_v2_t": ZooEntry(_tv_swin_v2, _image(32), "torchvision"),
    "tv_maxvit_t": ZooEntry(_tv_maxvit, _image(64), "torchvision"),
    "timm_vit_small": ZooEntry(_timm("vit_small_patch16_224", img_size=32, patch_size=8, depth=2, embed_dim=64,
                                     num_heads=4), _image(32), "timm"),
    "timm_deit_small": ZooEntry(_timm("deit_small_patch16_224", img_size=32, patch_size=8, depth=2, embed_dim=64,
                                      num_heads=4), _image(32), "timm"),
    "timm_swin_tiny": ZooEntry(_timm("swin_tiny_patch4_window7_224", img_size=32, window_size=4, embed_dim=16,
                                     depths=(2, 2), num_heads=(2, 4)), _image(32), "timm"),
    "timm_convnext_tiny": ZooEntry(_timm("convnext_tiny", depths=(1, 1, 1, 1), dims=(16, 24, 32, 40)),
                                   _image(32), "timm"),
    "hf_bert": ZooEntry(_hf("BertModel", "BertConfig", vocab_size=96, hidden_size=32, num_hidden_layers=2,
                            num_attention_heads=4, intermediate_size=48, max_position_embeddings=32),
                        _tokens(), "huggingface", _hf_out("last_hidden_state"), ("eager", "sdpa")),
    "hf_vit": ZooEntry(_hf("ViTModel", "ViTConfig", image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2,
                           num_attention_heads=4, intermediate_size=48), _image(32), "huggingface",
                       _hf_out("last_hidden_state"), ("eager", "sdpa")),
    "hf_gpt2": ZooEntry(_hf("GPT2LMHeadModel", "GPT2Config", vocab_size=96, n_embd=32, n_layer=2, n_head=4,
                            n_positions=32), _tokens(), "huggingface", _hf_out("logits"), ("eager", "sdpa")),
    "hf_llama": ZooEntry(_hf("LlamaForCausalLM", "LlamaConfig", **_LLAMA), _tokens(), "huggingface",
                         _hf_out("logits"), ("eager", "sdpa")),
    "hf_llama_tied": ZooEntry(_hf("LlamaForCausalLM", "LlamaConfig", tie_word_embeddings=True, **_LLAMA),
                              _tokens(), "huggingface", _hf_out("logits"), ("eager", "sdpa")),
    "hf_qwen2": ZooEntry(_hf("Qwen2ForCausalLM", "Qwen2Config", **_LLAMA), _tokens(), "huggingface",
                         _hf_out("logits"), ("eager", "sdpa")),
    "hf_mistral": ZooEntry(_hf("MistralForCausalLM", "MistralConfig", **_LLAMA), _tokens(), "huggingface",
                           _hf_out("logits"), ("eager", "sdpa")),
    "hf_phi3": ZooEntry(_hf("Phi3ForCausalLM", "Phi3Config", vocab_size=96, hidden_size=64, intermediate_size=96,
                            num_hidden_layers=2, num_attention_heads=8, num_key_value_heads=2,
                            max_position_embeddings=64, pad_token_id=0), _tokens(), "huggingface",
                        _hf_out("logits"), ("eager", "sdpa")),
    "hf_t5_encoder": ZooEntry(_hf("T5EncoderModel", "T5Config", vocab_size=96, d_model=32, d_kv=8, d_ff=48,
                                  num_layers=2, num_heads=4), _tokens(), "huggingface",
                              _hf_out("last_hidden_state"), ("eager",)),
    "hf_clip_vision": ZooEntry(_hf("CLIPVisionModel", "CLIPVisionConfig", image_size=32, patch_size=8,
                                   hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4),
                               _image(32), "huggingface", _hf_out("last_hidden_state"), ("eager", "sdpa")),
    "hf_swin": ZooEntry(_hf("SwinModel", "SwinConfig", image_size=32, patch_size=4, embed_dim=16, depths=[2, 2],
                            num_heads=[2, 4], window_size=4), _image(32), "huggingface",
                        _hf_out("last_hidden_state"), ("eager",)),
}


def list_models(include: str = "*") -> list[str]:
    return [n for n in TRANSFORMER_ZOO if fnmatch.fnmatch(n, include)]


def build(name: str, attn: str | None = None, **over: Any) -> nn.Module:
    """The model with random weights (seeded), in eval mode."""
    entry = TRANSFORMER_ZOO[name]
    torch.manual_seed(0)
    if entry.family == "huggingface":
        model = entry.make(attn or entry.attn[0], **over)
    else:
        model = entry.make()
    return model.eval()


def example_inputs(name: str) -> Any:
    return TRANSFORMER_ZOO[name].inputs()


def output_transform(name: str) -> Callable[[Any], Any] | None:
    return TRANSFORMER_ZOO[name].out
