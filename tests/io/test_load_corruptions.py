"""Property test: random corruptions of a saved model never leave a half-changed model and only raise anyprune's
errors."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file

import anyprune as tp
from anyprune.io import saving
from tests.helpers import assert_same_state, state
from tests.io.test_untrusted_files import Tied

_VALUES = st.one_of(st.none(), st.booleans(), st.integers(-3, 2**64), st.floats(allow_nan=True),
                    st.text(max_size=5), st.lists(st.integers(-2, 12), max_size=5),
                    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))


def _corrupt_record(record: dict, data) -> None:
    kind = data.draw(st.sampled_from(["drop", "shape", "dtype", "alias", "attr", "config", "retype", "new"]))
    tensors = record["tensors"]
    names = sorted(tensors)
    name = data.draw(st.sampled_from(names))
    if kind == "drop":
        section = data.draw(st.sampled_from(["tensors", "modules"]))
        keys = sorted(record[section])
        if keys:
            del record[section][data.draw(st.sampled_from(keys))]
    elif kind == "shape" and "shape" in tensors[name]:
        shape = tensors[name]["shape"]
        if shape:
            shape[data.draw(st.integers(0, len(shape) - 1))] = data.draw(st.integers(-2, 2**41))
    elif kind == "dtype" and "dtype" in tensors[name]:
        tensors[name]["dtype"] = data.draw(st.sampled_from(["int64", "bool", "float16", "os.system", "", "complex64"]))
    elif kind == "alias":
        tensors[name] = {"alias": data.draw(st.one_of(st.sampled_from(names), _VALUES))}
    elif kind == "attr":
        mods = sorted(record["modules"])
        m = data.draw(st.sampled_from(mods))
        attrs = sorted(record["modules"][m])
        key = data.draw(st.sampled_from(attrs)) if attrs else "x"
        record["modules"][m][key] = data.draw(_VALUES)
    elif kind == "config":
        record["configs"][data.draw(st.sampled_from(["", "conv", "nope"]))] = {"hidden_size": data.draw(_VALUES)}
    elif kind == "retype":
        record[data.draw(st.sampled_from(["tensors", "modules", "configs", "format"]))] = data.draw(_VALUES)
    else:
        tensors[data.draw(st.text(min_size=1, max_size=8))] = {"shape": [1], "dtype": "float32"}


def _corrupt_weights(weights: dict, data) -> None:
    kind = data.draw(st.sampled_from(["drop", "resize", "dtype", "extra", "alias"]))
    name = data.draw(st.sampled_from(sorted(weights)))
    if kind == "drop":
        del weights[name]
    elif kind == "resize":
        weights[name] = torch.zeros(*[data.draw(st.integers(0, 12)) for _ in range(weights[name].ndim)])
    elif kind == "dtype":
        weights[name] = weights[name].to(data.draw(st.sampled_from([torch.int64, torch.float16, torch.bool])))
    elif kind == "extra":
        weights[data.draw(st.text(min_size=1, max_size=8))] = torch.zeros(2)
    else:
        weights["out.weight"] = torch.zeros(data.draw(st.sampled_from([(1, 8), (10, 8), (2, 2)])))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_corrupted_files_leave_the_model_unchanged_or_load_whole(tmp_path, data):
    torch.manual_seed(0)
    pruned = Tied().eval()
    tp.prune_conv_out_channels(pruned.conv, [0, 1])
    tp.prune_linear_in_channels(pruned.head, [0, 1])
    path = Path(tmp_path) / "case"
    shutil.rmtree(path, ignore_errors=True)
    tp.save_pruned(pruned, path)
    target = data.draw(st.sampled_from(["record", "weights", "truncate"]))
    if target == "record":
        record = json.loads((path / saving.RECORD).read_text())
        _corrupt_record(record, data)
        (path / saving.RECORD).write_text(json.dumps(record))
    elif target == "weights":
        weights = load_file(str(path / saving.WEIGHTS))
        _corrupt_weights(weights, data)
        save_file(weights, str(path / saving.WEIGHTS))
    else:
        raw = (path / saving.WEIGHTS).read_bytes()
        (path / saving.WEIGHTS).write_bytes(raw[:data.draw(st.integers(0, max(0, len(raw) - 1)))])
    fresh = Tied().eval()
    before = state(fresh)
    attrs = {n: {k: copy.copy(v) for k, v in vars(m).items() if not k.startswith("_")}
             for n, m in fresh.named_modules()}
    try:
        tp.load_pruned(fresh, path)
    except tp.AnyPruneError:
        assert_same_state(before, state(fresh))
        assert {n: {k: v for k, v in vars(m).items() if not k.startswith("_")} for n, m in fresh.named_modules()} \
            == attrs
        assert fresh.out.weight is fresh.emb.weight
        return
    # accepted: then it is a consistent model (every tensor as the record says, and it runs)
    ids = torch.randint(0, 10, (2, 5))
    assert fresh(ids).shape == (2, 5, 10)
