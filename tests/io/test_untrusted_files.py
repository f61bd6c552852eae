"""Loading crafted files: everything is checked before the model changes, and a failure leaves it as it was."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

import anyprune as tp
from anyprune.apply.transaction import Transaction
from anyprune.io import saving
from tests.helpers import assert_same_state, state


class Tied(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(10, 8)
        self.conv = nn.Conv1d(8, 6, 1, stride=1)
        self.head = nn.Linear(6, 10)
        self.out = nn.Linear(8, 10, bias=False)
        self.out.weight = self.emb.weight  # tied

    def forward(self, ids):
        h = self.emb(ids)
        y = self.conv(h.transpose(1, 2)).transpose(1, 2)
        return self.head(torch.relu(y)) + self.out(h)


def _saved(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    model = Tied().eval()
    tp.prune_conv_out_channels(model.conv, [0, 1])
    tp.prune_linear_in_channels(model.head, [0, 1])
    return tp.save_pruned(model, tmp_path / "saved")


def _edit_record(path: Path, edit) -> None:
    record = json.loads((path / saving.RECORD).read_text())
    edit(record)
    (path / saving.RECORD).write_text(json.dumps(record))


def _edit_weights(path: Path, edit) -> None:
    weights = load_file(str(path / saving.WEIGHTS))
    edit(weights)
    save_file(weights, str(path / saving.WEIGHTS))


def _rejected(path: Path, match: str) -> None:
    torch.manual_seed(1)
    fresh = Tied().eval()
    before = state(fresh)
    config_like = {n: dict(vars(m)) for n, m in fresh.named_modules()}
    with pytest.raises(tp.ConfigError, match=match):
        tp.load_pruned(fresh, path)
    assert_same_state(before, state(fresh))
    assert fresh.out.weight is fresh.emb.weight
    for n, m in fresh.named_modules():
        assert {k: v for k, v in vars(m).items() if k not in ("_parameters", "_buffers", "_modules")} == \
            {k: v for k, v in config_like[n].items() if k not in ("_parameters", "_buffers", "_modules")}


def test_a_valid_file_loads(tmp_path):
    path = _saved(tmp_path)
    fresh = tp.load_pruned(Tied().eval(), path)
    assert fresh.conv.out_channels == 4
    assert fresh.out.weight is fresh.emb.weight


@pytest.mark.parametrize("shape", [(1, 8), (10, 8), (3, 3)])
def test_weights_under_a_tied_alias_name_are_rejected(tmp_path, shape):
    path = _saved(tmp_path)
    _edit_weights(path, lambda w: w.update({"out.weight": torch.zeros(shape)}))
    _rejected(path, "tied alias of 'emb.weight': tied tensors are stored once")


def test_two_names_of_one_tied_tensor_listed_as_independent_entries_are_rejected(tmp_path):
    path = _saved(tmp_path)
    _edit_record(path, lambda r: r["tensors"].update({"out.weight": {"shape": [10, 8], "dtype": "float32"}}))
    _edit_weights(path, lambda w: w.update({"out.weight": torch.zeros(10, 8)}))
    _rejected(path, "one tied tensor in the model, but the file lists them as two")


@pytest.mark.parametrize(("edit", "match"), [
    (lambda r: r["tensors"]["conv.weight"].update(dtype="int64"), "bad dtype for 'conv.weight': 'int64' does not fit"),
    (lambda r: r["tensors"]["conv.weight"].update(shape=[2**40, 8, 1]), "dim 0 has size 1099511627776, which pruning"),
    (lambda r: r["tensors"]["conv.weight"].update(shape=[0, 8, 1]), "dim 0 has size 0, which pruning cannot give"),
    (lambda r: r["tensors"]["head.weight"].update(shape=[10, 9]), "dim 1 has size 9, which pruning cannot give"),
    (lambda r: r["modules"]["conv"].update(groups=1.5), "attribute 'groups' of module 'conv' cannot be set to 1.5"),
    (lambda r: r["modules"]["conv"].update(stride=["a"]), "attribute 'stride' of module 'conv' cannot be set"),
    (lambda r: r["modules"]["conv"].update(stride=[1, 1, 1, 1, 1]), "attribute 'stride' of module 'conv'"),
    (lambda r: r["modules"]["conv"].update(out_channels=0), "attribute 'out_channels' of module 'conv'"),
    (lambda r: r["modules"]["conv"].update(out_channels=7), "attribute 'out_channels' of module 'conv'"),
    (lambda r: r["tensors"]["out.weight"].update(alias=["emb.weight"]), "bad alias entry for 'out.weight'"),
])
def test_crafted_records_are_rejected_before_anything_changes(tmp_path, edit, match):
    path = _saved(tmp_path)
    _edit_record(path, edit)
    _rejected(path, match)


def test_an_interrupt_while_writing_restores_the_model(tmp_path, monkeypatch):
    path = _saved(tmp_path)
    real = Transaction.set_data
    calls = []

    def flaky(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Transaction, "set_data", flaky)
    fresh = Tied().eval()
    before = state(fresh)
    with pytest.raises(KeyboardInterrupt):
        tp.load_pruned(fresh, path)
    assert_same_state(before, state(fresh))


def test_load_state_dict_needs_every_tensor(tmp_path):
    torch.manual_seed(0)
    model = Tied().eval()
    tp.prune_conv_out_channels(model.conv, [0, 1])
    tp.prune_linear_in_channels(model.head, [0, 1])
    sd = tp.state_dict(model)
    del sd["state_dict"]["conv.bias"]
    fresh = Tied().eval()
    before = state(fresh)
    with pytest.raises(tp.ConfigError, match=r"the weights have no tensor for 'conv\.bias'"):
        tp.load_state_dict(fresh, sd)
    assert_same_state(before, state(fresh))
    sd = tp.state_dict(model)
    assert tp.load_state_dict(Tied().eval(), sd).conv.out_channels == 4


def test_files_that_are_not_regular_files_or_too_large_are_refused(tmp_path, monkeypatch):
    path = _saved(tmp_path)
    record = path / saving.RECORD
    record.unlink()
    record.symlink_to("/dev/zero")
    _rejected(path, "is not a regular file")
    record.unlink()
    os.mkfifo(record)
    _rejected(path, "is not a regular file")
    record.unlink()
    record.write_text(" " * 2048 + "{}")
    monkeypatch.setattr(saving, "RECORD_LIMIT", 1024)
    _rejected(path, "more than the 1,024 allowed")


def test_deeply_nested_json_is_a_config_error(tmp_path):
    path = _saved(tmp_path)
    (path / saving.RECORD).write_text("[" * 100_000 + "]" * 100_000)
    _rejected(path, "nested too deeply|not an anyprune structure record")


transformers = pytest.importorskip("transformers")


def _tiny_llama():
    from anyprune.testing import zoo_transformers as zoo

    return zoo.build("hf_llama")


def _saved_llama(tmp_path: Path) -> Path:
    model = _tiny_llama()
    x = {"input_ids": torch.randint(0, 96, (1, 7))}
    tp.pruner.MetaPruner(model, x, pruning_ratio=0.5, output_transform=lambda o: o.logits,
                         ignored_layers=[model.lm_head], prune_head_dims=False).step()
    return tp.save_pruned(model, tmp_path / "llama")


@pytest.mark.parametrize(("field", "value", "match"), [
    ("auto_map", {"AutoModel": "evil.Model"}, "field 'auto_map' cannot be changed by loading"),
    ("trust_remote_code", True, "field 'trust_remote_code' cannot be changed by loading"),
    ("intermediate_size", "48", "field 'intermediate_size' cannot be set to '48'"),
    ("intermediate_size", 4096, "field 'intermediate_size' cannot be set to 4096"),
    ("rope_parameters", {"rope_type": "no-such-rope"}, "do not build a LlamaForCausalLM"),
])
def test_the_hugging_face_config_section_only_changes_sizes(tmp_path, field, value, match):
    path = _saved_llama(tmp_path)
    _edit_record(path, lambda r: r["configs"][""].update({field: value}))
    fresh = _tiny_llama()
    before, config = state(fresh), fresh.config.to_dict()
    with pytest.raises(tp.ConfigError, match=match):
        tp.load_pruned(fresh, path)
    assert_same_state(before, state(fresh))
    assert fresh.config.to_dict() == config


def test_the_seed_one_argument_load_builds_the_original_from_the_source(tmp_path):
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.resnet18().eval()
    x = torch.randn(1, 3, 64, 64)
    tp.pruner.MetaPruner(model, x, pruning_ratio=0.5, ignored_layers=[model.fc]).step()
    tp.save(model, tmp_path / "r18", source="torchvision:resnet18")
    again = tp.load(tmp_path / "r18")
    with torch.no_grad():
        torch.testing.assert_close(again(x), model(x))
    tp.save(model, tmp_path / "nosource")
    with pytest.raises(tp.ConfigError, match="does not say which original model"):
        tp.load(tmp_path / "nosource")
    with pytest.raises(tp.ConfigError, match="pass the directory written by save_pruned"):
        tp.load(model)


def test_modes_may_differ_but_structural_flags_may_not(tmp_path):
    path = _saved(tmp_path)  # saved in eval mode
    fresh = tp.load_pruned(Tied().train(), path)
    assert not fresh.training  # the saved model's mode comes back
    _edit_record(path, lambda r: r["modules"]["conv"].update(padding_mode="reflect"))
    _rejected(path, "attribute 'padding_mode' of module 'conv' cannot be set")


# ---------------------------------------------------------------- widths that do not fit together
def _saved_with_inputs(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    model = Tied().eval()
    tp.prune_conv_out_channels(model.conv, [0, 1])
    tp.prune_linear_in_channels(model.head, [0, 1])
    return tp.save_pruned(model, tmp_path / "saved", example_inputs=torch.zeros(2, 5, dtype=torch.long))


def _mismatch(record: dict) -> None:
    """The head reads 5 features while the conv still writes 4: each width alone is within the original's."""
    record["tensors"]["head.weight"]["shape"] = [10, 5]
    record["modules"]["head"]["in_features"] = 5


def test_widths_that_do_not_fit_together_are_refused_and_the_model_is_untouched(tmp_path):
    path = _saved_with_inputs(tmp_path)
    record = json.loads((path / saving.RECORD).read_text())
    assert record["example_inputs"] == {"kind": "tensor", "tensors": [{"key": None, "shape": [2, 5],
                                                                      "dtype": "int64"}]}
    _edit_record(path, _mismatch)
    _edit_weights(path, lambda w: w.__setitem__("head.weight", torch.zeros(10, 5)))
    _rejected(path, "do not fit together")


def test_the_check_runs_on_inputs_passed_to_load_when_the_record_has_none(tmp_path):
    path = _saved(tmp_path)
    _edit_record(path, _mismatch)
    _edit_weights(path, lambda w: w.__setitem__("head.weight", torch.zeros(10, 5)))
    fresh = Tied().eval()
    tp.load_pruned(fresh, path)  # nothing to run it on: the widths alone are within bounds
    fresh = Tied().eval()
    before = state(fresh)
    with pytest.raises(tp.ConfigError, match="do not fit together"):
        tp.load_pruned(fresh, path, example_inputs=torch.zeros(1, 3, dtype=torch.long))
    assert_same_state(before, state(fresh))


def test_a_record_with_example_inputs_round_trips(tmp_path):
    path = _saved_with_inputs(tmp_path)
    fresh = tp.load_pruned(Tied().eval(), path)
    assert (fresh.conv.out_channels, fresh.head.in_features) == (4, 4)
    assert fresh(torch.zeros(1, 3, dtype=torch.long)).shape == (1, 3, 10)


@pytest.mark.parametrize(("spec", "match"), [
    ({"kind": "tensors", "tensors": [{"key": None, "shape": [1], "dtype": "int64"}]}, "kind"),
    ({"kind": "tensor", "tensors": []}, "1 to 16"),
    ({"kind": "tensor", "tensors": [{"key": None, "shape": [2**20, 2**20], "dtype": "int64"}]}, "elements"),
    ({"kind": "tensor", "tensors": [{"key": None, "shape": [0, 3], "dtype": "int64"}]}, "positive ints"),
    ({"kind": "tensor", "tensors": [{"key": None, "shape": [1.5], "dtype": "int64"}]}, "positive ints"),
    ({"kind": "tensor", "tensors": [{"key": None, "shape": [1] * 9, "dtype": "int64"}]}, "at most 8"),
    ({"kind": "tensor", "tensors": [{"key": None, "shape": [2, 5], "dtype": "object"}]}, "dtype"),
    ({"kind": "dict", "tensors": [{"key": None, "shape": [2, 5], "dtype": "int64"}]}, "string key"),
    ({"kind": "tensor", "tensors": [{"key": None, "shape": [2, 5], "dtype": "int64"}] * 2}, "one tensor"),
    ("zeros", "kind"),
])
def test_crafted_example_input_specs_are_refused(tmp_path, spec, match):
    path = _saved_with_inputs(tmp_path)
    _edit_record(path, lambda r: r.__setitem__("example_inputs", spec))
    _rejected(path, match)


def test_example_inputs_that_cannot_be_recorded():
    with pytest.raises(tp.ConfigError, match="example_inputs"):
        saving.input_spec("text")
    with pytest.raises(tp.ConfigError, match="only tensors"):
        saving.input_spec((torch.zeros(1), 3))
    assert saving.inputs_from_spec(saving.input_spec({"a": torch.ones(2, dtype=torch.bool)}))["a"].dtype == torch.bool
