"""Repeated pruning: ten iterative steps to a 90% channel ratio keep the model valid at every step.

After every ``step()``: the forward runs on the example input and on an input of another batch size (and
sequence length or resolution) with the right output shape, the graph agrees with the model
(``DependencyGraph.lint``), no dim of any parameter or graph atom reaches zero width, and a Hugging Face
config still describes the weights. After the last step every group the pruner acts on keeps
``max(1, floor(width * (1 - ratio)))`` of its original width (0.9 for channels and head_dim positions,
``head_pruning_ratio`` for whole heads with ``prune_num_heads=True``, none removed without it).
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import anyprune as tp
from anyprune.groups.group import ParamSlice
from anyprune.testing import zoo_transformers

RATIO = 0.9
STEPS = 10


def _kept(width: int, ratio: float) -> int:
    return max(1, math.floor(width * (1.0 - ratio) + 1e-9))


def _check_no_zero_width(model: nn.Module, dg: tp.DependencyGraph, where: str) -> None:
    for name, m in model.named_modules():
        if isinstance(m, nn.Linear):
            assert min(m.in_features, m.out_features) >= 1, f"{where}: {name} is {m}"
        elif isinstance(m, nn.modules.conv._ConvNd):
            assert min(m.in_channels, m.out_channels) >= 1, f"{where}: {name} is {m}"
    for name, p in model.named_parameters():
        assert p.numel() > 0, f"{where}: {name} has shape {tuple(p.shape)}"
    table = dg.dims.atoms
    for s in dg.index.slices:
        if isinstance(s, ParamSlice):
            sizes = [table.atom_size(a) for a in table.atoms(s.layout)]
            assert min(sizes, default=1) >= 1, f"{where}: {s.fqn} dim {s.dim} has an empty atom: {sizes}"
    for g in dg.get_all_groups(root_module_types=None):
        assert g.size >= 1, f"{where}: group rooted at {g.root} has size {g.size}"


def _run_steps(model, pruner, inputs, forward, out_shapes, name: str, head_ratio: float | None = None,
               extra_check=None) -> None:
    """Step ``STEPS`` times, checking the model after each; then check the final widths of every group."""
    dg = pruner.DG
    table = dg.dims.atoms
    groups = dg.get_all_groups(root_module_types=pruner.root_module_types)
    initial = [(g.atoms[0], g.size, g.structure, getattr(g.root, "fqn", "?")) for g in groups]
    assert initial, f"{name}: no group to prune"
    params = [sum(p.numel() for p in model.parameters())]
    for step in range(1, STEPS + 1):
        result = pruner.step()
        where = f"{name} after step {step}"
        assert result is not None, f"{where}: step() did nothing"
        dg.lint()
        _check_no_zero_width(model, dg, where)
        with torch.no_grad():
            for x, shape in zip(inputs, out_shapes):
                assert tuple(forward(model, x).shape) == shape, f"{where}: output shape changed"
        if extra_check is not None:
            extra_check(model, where)
        params.append(sum(p.numel() for p in model.parameters()))
        assert params[-1] <= params[-2], f"{where}: parameters grew ({params[-2]} -> {params[-1]})"
    assert params[-1] < 0.2 * params[0], f"{name}: only {params[0]} -> {params[-1]} parameters after {STEPS} steps"
    wrong = []
    for atom, width, structure, root in initial:
        if structure == "heads" and head_ratio is not None:
            continue  # heads are chosen per attention (the product of its factors): see the model's own checks
        ratio = RATIO if structure != "heads" else 0.0
        if table.atom_size(atom) != _kept(width, ratio):
            wrong.append(f"{root} ({structure}): {width} -> {table.atom_size(atom)}, expected {_kept(width, ratio)}")
    assert not wrong, f"{name}: final widths off the {RATIO} target: {wrong}"


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_resnet50_to_ninety_percent_in_ten_steps():
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.resnet50().eval()
    x = torch.randn(1, 3, 64, 64)
    other = torch.randn(2, 3, 80, 80)
    pruner = tp.pruner.MetaPruner(model, x, pruning_ratio=RATIO, iterative_steps=STEPS)
    _run_steps(model, pruner, [x, other], lambda m, t: m(t), [(1, 1000), (2, 1000)], "resnet50")
    # the widths, read from the modules themselves
    assert model.conv1.out_channels == _kept(64, RATIO) == 6
    assert model.layer1[0].conv2.out_channels == 6
    assert model.layer4[2].conv2.out_channels == _kept(512, RATIO) == 51
    assert model.fc.in_features == _kept(2048, RATIO) == 204
    assert model.fc.out_features == 1000


def _llama_checks(model, where: str) -> None:
    from anyprune.integrations.huggingface import config_matches

    assert config_matches(model), f"{where}: the config no longer describes the weights ({model.config})"
    c = model.config
    assert c.num_attention_heads % c.num_key_value_heads == 0, f"{where}: {c}"
    for layer in model.model.layers:
        attn = layer.self_attn
        assert attn.head_dim == attn.q_proj.out_features // c.num_attention_heads, f"{where}: stale head_dim"
        assert attn.num_key_value_groups == c.num_attention_heads // c.num_key_value_heads, f"{where}: stale groups"


@pytest.mark.parametrize("heads", [False, True], ids=["channels", "heads"])
def test_llama_to_ninety_percent_in_ten_steps(heads):
    pytest.importorskip("transformers")
    model = zoo_transformers.build("hf_llama")
    x = zoo_transformers.example_inputs("hf_llama")
    vocab = model.config.vocab_size
    other = {"input_ids": torch.randint(0, vocab, (2, 11), generator=torch.Generator().manual_seed(1))}
    kwargs = {"prune_num_heads": True, "head_pruning_ratio": 0.5} if heads else {}
    pruner = tp.pruner.MetaPruner(model, x, pruning_ratio=RATIO, iterative_steps=STEPS,
                                  output_transform=zoo_transformers.output_transform("hf_llama"), **kwargs)
    n = x["input_ids"].shape[1]
    _run_steps(model, pruner, [x, other], lambda m, t: m(**t).logits, [(1, n, vocab), (2, 11, vocab)],
               f"hf_llama ({'heads' if heads else 'channels'})", head_ratio=0.5 if heads else None,
               extra_check=_llama_checks)
    c = model.config
    assert (c.hidden_size, c.intermediate_size) == (_kept(64, RATIO), _kept(96, RATIO)) == (6, 9)
    # rotary pairs (j, j + d/2) go together: 8 pairs keep 1, so head_dim 16 -> 2
    assert c.head_dim == 2
    if heads:  # half of the 8 heads: 2 KV heads x 2 query heads each, or 1 x 4 (whichever scores lower)
        assert c.num_attention_heads == 4
        assert c.num_key_value_heads in (1, 2)
    else:  # whole heads are left alone without prune_num_heads
        assert (c.num_key_value_heads, c.num_attention_heads) == (2, 8)
