"""A pruning step is all or nothing: a failure anywhere in ``MetaPruner.step()`` or a history replay leaves the
model, its attributes and its config exactly as they were."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import anyprune as tp
from anyprune.groups.group import Group
from anyprune.integrations.huggingface import config_matches
from anyprune.testing import zoo_transformers as zoo
from tests.helpers import assert_same_state, state


class WidthCheck(nn.Module):
    """A CNN whose forward breaks once its first conv is narrower than ``expect`` (code that asserts a width)."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.bn, self.b = nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.Conv2d(8, 4, 3)
        self.expect: int | None = None

    def forward(self, x):
        y = self.a(x)
        if self.expect is not None:
            assert y.shape[1] == self.expect, "width changed"
        return self.b(torch.relu(self.bn(y)))


def test_a_failing_verify_undoes_the_whole_step_and_names_the_line():
    torch.manual_seed(0)
    model = WidthCheck().eval()
    x = torch.randn(2, 3, 8, 8)
    pruner = tp.pruner.MetaPruner(model, x, pruning_ratio=0.5)
    model.expect = 8
    before = state(model)
    with pytest.raises(tp.VerificationError,
                       match=r"(?s)test_step_transaction\.py:\d+.*width changed.*step was undone"):
        pruner.step()
    assert_same_state(before, state(model))
    assert pruner.current_step == 0
    assert pruner.DG.pruning_history() == []
    pruner.DG.lint()
    model.expect = None
    pruner.step()
    assert model.a.out_channels == model.bn.num_features == model.b.in_channels == 4
    assert model(x).shape == (2, 4, 4, 4)


def test_a_failure_after_reconstruction_restores_batch_norm_statistics_by_value():
    torch.manual_seed(0)
    model = WidthCheck().eval()
    x = torch.randn(2, 3, 8, 8)
    calib = torch.randn(16, 3, 8, 8)
    pruner = tp.pruner.MetaPruner(model, x, pruning_ratio=0.5, importance=tp.importance.OBSImportance(),
                                  calibration=calib, reconstruct=True)
    model.expect = 8
    before = state(model)
    with pytest.raises(tp.VerificationError, match="step was undone"):
        pruner.step()
    assert_same_state(before, state(model))
    assert pruner.reconstruction == []


@pytest.mark.parametrize("fail_at", [0, 1, 2])
def test_an_interrupt_between_groups_undoes_the_groups_already_pruned(monkeypatch, fail_at):
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3),
                          nn.ReLU(), nn.Conv2d(8, 2, 1)).eval()
    x = torch.randn(1, 3, 10, 10)
    pruner = tp.pruner.MetaPruner(model, x, pruning_ratio=0.5)
    before = state(model)
    real = Group.prune
    calls = []

    def prune(self, *args, **kwargs):
        if len(calls) == fail_at:
            raise KeyboardInterrupt
        calls.append(1)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Group, "prune", prune)
    with pytest.raises(KeyboardInterrupt):
        pruner.step()
    assert len(calls) == fail_at
    assert_same_state(before, state(model))
    monkeypatch.setattr(Group, "prune", real)
    pruner.step()
    assert [m.out_channels for m in model if isinstance(m, nn.Conv2d)] == [4, 4, 4, 2]


def test_a_failing_step_on_a_hugging_face_model_restores_its_config_and_attributes():
    model = zoo.build("hf_llama")
    inputs = zoo.example_inputs("hf_llama")
    broken = {"on": False}

    def forward_fn(m, kw):
        if broken["on"]:
            raise RuntimeError("user code rejects the pruned model")
        return m(**kw)

    pruner = tp.pruner.MetaPruner(model, inputs, pruning_ratio=0.5, prune_num_heads=True, head_pruning_ratio=0.5,
                                  forward_fn=forward_fn, output_transform=zoo.output_transform("hf_llama"),
                                  ignored_layers=[model.lm_head])
    before, config = state(model), copy.deepcopy(model.config.to_dict())
    attn = model.model.layers[0].self_attn
    attrs = dict(vars(attn))
    broken["on"] = True
    with pytest.raises(tp.VerificationError, match="step was undone"):
        pruner.step()
    assert_same_state(before, state(model))
    assert model.config.to_dict() == config
    assert {k: v for k, v in vars(attn).items() if k != "_modules"} == \
        {k: v for k, v in attrs.items() if k != "_modules"}
    broken["on"] = False
    pruner.step()
    assert model.config.intermediate_size == 48
    assert model.config.num_attention_heads == 4
    assert config_matches(model)


def test_a_history_that_fails_half_way_is_not_replayed_at_all():
    def make():
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))

    x = torch.randn(1, 4)
    done = make()
    dg = tp.DependencyGraph().build_dependency(done, x)
    for g in list(dg.get_all_groups()):
        g.prune([0, 1])
    history = dg.pruning_history()
    assert len(history) == 2
    bad = [history[0], (history[1][0], history[1][1], [0, 99])]
    fresh = make()
    before = state(fresh)
    dg2 = tp.DependencyGraph().build_dependency(fresh, x)
    with pytest.raises(tp.PruningError):
        dg2.load_pruning_history(bad)
    assert_same_state(before, state(fresh))
    assert dg2.pruning_history() == []
    dg2.lint()
    dg2.load_pruning_history(history)
    torch.testing.assert_close(fresh(x), done(x))
