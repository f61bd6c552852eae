"""Out-of-core pruning of a sharded Hugging Face checkpoint: the same result as pruning the loaded model."""

from __future__ import annotations

import json

import pytest
import torch

import anyprune as tp
from anyprune.io.sharded import CheckpointReader, parse_memory, prune_checkpoint

transformers = pytest.importorskip("transformers")


def _llama(tied: bool = False, vocab: int = 50):
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
                                   num_key_value_heads=2, vocab_size=vocab, tie_word_embeddings=tied)
    return transformers.LlamaForCausalLM(cfg).eval()


def _in_memory(model, **kwargs):
    ids = torch.randint(0, 50, (1, 16))
    pruner = tp.pruner.MetaPruner(model, {"input_ids": ids}, importance=tp.importance.GroupMagnitudeImportance(p=2),
                                  **kwargs)
    pruner.step()
    return model


@pytest.mark.parametrize("tied", [False, True])
@pytest.mark.parametrize("heads", [False, True])
def test_out_of_core_equals_in_memory_pruning_tensor_for_tensor(tmp_path, tied, heads):
    model = _llama(tied)
    model.save_pretrained(tmp_path / "src", max_shard_size="40KB")
    assert (tmp_path / "src" / "model.safetensors.index.json").exists()  # really sharded
    kwargs = {"pruning_ratio": 0.5, "prune_head_dims": False}  # a config can describe the result
    if heads:
        kwargs.update(prune_num_heads=True, head_pruning_ratio=0.5)
    prune_checkpoint(tmp_path / "src", tmp_path / "out", progress=False, max_memory="100KB", **kwargs)
    reference = _in_memory(_llama(tied), **kwargs)
    loaded = transformers.LlamaForCausalLM.from_pretrained(tmp_path / "out").eval()
    want = reference.state_dict()
    got = loaded.state_dict()
    assert sorted(got) == sorted(want)
    for name, t in want.items():
        assert torch.equal(got[name], t), name
    assert loaded.config.intermediate_size == reference.config.intermediate_size == 32
    if heads:
        assert loaded.config.num_attention_heads == reference.config.num_attention_heads == 2
        assert loaded.config.num_key_value_heads == reference.config.num_key_value_heads
    ids = torch.randint(0, 50, (2, 7))
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, reference(ids).logits)
    index = json.loads((tmp_path / "out" / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1  # written as several shards


def test_a_single_file_checkpoint_and_the_other_files_are_carried(tmp_path):
    model = _llama()
    model.save_pretrained(tmp_path / "src")
    (tmp_path / "src" / "tokenizer.json").write_text("{}")
    prune_checkpoint(tmp_path / "src", tmp_path / "out", progress=False, pruning_ratio=0.25, prune_head_dims=False)
    assert (tmp_path / "out" / "model.safetensors").exists()
    assert (tmp_path / "out" / "tokenizer.json").read_text() == "{}"
    loaded = transformers.LlamaForCausalLM.from_pretrained(tmp_path / "out")
    assert loaded.model.layers[0].mlp.gate_proj.out_features == 48


def test_errors_leave_no_output(tmp_path):
    model = _llama(vocab=300)  # a 38 KB embedding
    model.save_pretrained(tmp_path / "src")
    with pytest.raises(tp.ConfigError, match="more than half of max_memory"):
        prune_checkpoint(tmp_path / "src", tmp_path / "out", progress=False, max_memory="64KiB")
    with pytest.raises(tp.ConfigError, match="magnitude criteria only"):
        prune_checkpoint(tmp_path / "src", tmp_path / "out", progress=False,
                         importance=tp.importance.GroupTaylorImportance())
    with pytest.raises(tp.ConfigError, match=r"no config\.json"):
        prune_checkpoint(tmp_path, tmp_path / "out", progress=False)
    with pytest.raises(tp.ConfigError, match=r"must differ"):
        prune_checkpoint(tmp_path / "src", tmp_path / "src2" / ".." / "src", progress=False)
    assert not (tmp_path / "out").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]


def test_a_result_the_config_cannot_describe_is_refused_before_writing(tmp_path):
    _llama().save_pretrained(tmp_path / "src")
    with pytest.raises(tp.ConfigError, match="cannot describe the pruned"):
        prune_checkpoint(tmp_path / "src", tmp_path / "out", progress=False, pruning_ratio=0.5)  # head_dim pruned
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]


def test_parse_memory():
    assert parse_memory("2GB") == 2 * 10**9
    assert parse_memory("1.5 GiB") == int(1.5 * 2**30)
    assert parse_memory(5 * 2**20) == 5 * 2**20
    for bad in ("lots", "2XB", 100, True, "10KB"):
        with pytest.raises(tp.ConfigError, match="max_memory"):
            parse_memory(bad)


def test_reader_refuses_files_outside_the_directory(tmp_path):
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"a": "../x.safetensors"}}))
    with pytest.raises(tp.ConfigError, match="outside the directory"):
        CheckpointReader(tmp_path)


def test_writer_and_reader_round_trip_every_dtype_against_safetensors(tmp_path):
    from safetensors.torch import load_file, save_file

    from anyprune.io.sharded import write_safetensors

    torch.manual_seed(0)
    tensors = {"f32": torch.randn(3, 4), "bf16": torch.randn(5).bfloat16(), "f16": torch.randn(2, 2).half(),
               "i64": torch.arange(6).reshape(2, 3), "b": torch.tensor([True, False]), "empty": torch.zeros(0, 3),
               "f64": torch.randn(1, dtype=torch.float64)}
    write_safetensors(tmp_path / "model.safetensors", tensors, {"format": "pt"})
    official = load_file(str(tmp_path / "model.safetensors"))
    assert sorted(official) == sorted(tensors)
    for k, t in tensors.items():
        assert official[k].dtype == t.dtype
        assert torch.equal(official[k], t)
    save_file(tensors, str(tmp_path / "other.safetensors"))
    (tmp_path / "other.safetensors").rename(tmp_path / "model.safetensors")
    read = dict(CheckpointReader(tmp_path).tensors())
    for k, t in tensors.items():
        assert torch.equal(read[k], t), k


def test_a_truncated_shard_is_refused(tmp_path):
    _llama().save_pretrained(tmp_path / "src")
    path = tmp_path / "src" / "model.safetensors"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(tp.ConfigError, match="does not fit its shape or the file"):
        prune_checkpoint(tmp_path / "src", tmp_path / "out", progress=False)
    path.write_bytes(b"\xff" * 16)
    with pytest.raises(tp.ConfigError, match="not a safetensors file"):
        prune_checkpoint(tmp_path / "src", tmp_path / "out", progress=False)
