"""The bad-input table: every public entry point with wrong arguments, and what it must do.

Each :class:`Row` names an entry point, says what is wrong, makes the call on a
fresh :class:`Setup` (a small CNN, its example input and, on first use, its
graph), and states the outcome: the exception type and a fragment of its
message, or ``None`` for "must work" (then ``check`` looks at the result). The
test (``tests/test_bad_inputs.py``) also checks that a failing call leaves the
model exactly as it was. ``docs/bad_inputs.md`` is rendered from ``ROWS`` by
:func:`render_markdown`.

The rows cover the graph (``DependencyGraph`` and ``Group``), the low-level
``prune_*`` functions, verification, the pruners (``MetaPruner`` and the
regularised pruners), every importance criterion, save/load, attribute
updaters and pruning-history replay. Adding rows for another entry point is
adding ``Row`` s to ``ROWS``; ``Setup`` builds what the call needs lazily.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import pathlib
import tempfile
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

import anyprune as tp


def small_cnn() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 1)).eval()


class Setup:
    """A fresh model and its example input; the graph and a group are built on first use."""

    def __init__(self, make_model: Callable[[], nn.Module] = small_cnn, shape: tuple[int, ...] = (1, 3, 6, 6)) -> None:
        torch.manual_seed(0)
        self.model = make_model()
        self.x = torch.randn(*shape)

    @functools.cached_property
    def dg(self) -> tp.DependencyGraph:
        return tp.DependencyGraph().build_dependency(self.model, self.x)

    @functools.cached_property
    def group(self):
        """The first group of ``get_all_groups`` (conv 0's output channels: 8 indices)."""
        return self.dg.groups()[0]


@dataclasses.dataclass(frozen=True)
class Row:
    """One bad input of one entry point and its expected outcome."""

    entry: str
    case: str
    call: Callable[[Setup], Any]
    error: type[BaseException] | None
    message: str  # a fragment of the error message, or what happens when the call must work
    setup: Callable[[], Setup] = Setup
    check: Callable[[Setup, Any], None] | None = None

    @property
    def id(self) -> str:
        return f"{self.entry}: {self.case}"


def _build(**kwargs: Any) -> Callable[[Setup], Any]:
    return lambda s: tp.DependencyGraph().build_dependency(s.model, s.x, **kwargs)


def _half() -> Setup:
    s = Setup()
    s.model.half()
    s.x = s.x.half()
    return s


def _frozen() -> Setup:
    s = Setup()
    for p in s.model.parameters():
        p.requires_grad_(False)
    return s


class _WidthAssert(nn.Module):
    """A forward that checks a width in plain Python: only running the model shows it."""

    def __init__(self) -> None:
        super().__init__()
        self.body = small_cnn()

    def __getitem__(self, k: int) -> nn.Module:
        return self.body[k]

    def forward(self, x):
        y = self.body[0](x)
        assert y.shape[1] == 8, "needs all 8 channels"
        return self.body[3](torch.relu(self.body[1](y)))


def _width_assert() -> Setup:
    return Setup(_WidthAssert)


def _mixed_devices() -> Setup:
    s = Setup()
    s.model[3].to("meta")
    return s


def _pruned_once() -> Setup:
    """A group of fixed positions, pruned once (the state the bad call starts from)."""
    s = Setup()
    s.stale = s.dg.get_pruning_group(s.model[0], tp.prune_conv_out_channels, idxs=[0, 1])  # type: ignore[attr-defined]
    s.stale.prune()  # type: ignore[attr-defined]
    return s


def _interactive_pruned_once() -> Setup:
    """A group from ``step(interactive=True)``, pruned once."""
    s = Setup()
    pruner = tp.pruner.MetaPruner(s.model, s.x, pruning_ratio=0.5)
    s.stale = next(iter(pruner.step(interactive=True)))  # type: ignore[attr-defined]
    s.stale.prune()  # type: ignore[attr-defined]
    return s


def _prune_first_group(s: Setup) -> tuple:
    params = {n: p for n, p in s.model.named_parameters()}
    s.group.prune(idxs=[0, 5])
    return params


def _check_pruned(dtype: torch.dtype, requires_grad: bool, run: bool = True) -> Callable[[Setup, Any], None]:
    def check(s: Setup, params: dict) -> None:
        assert s.model[0].out_channels == 6
        assert s.model[1].num_features == 6
        assert s.model[3].in_channels == 6
        for n, p in s.model.named_parameters():
            assert p is params[n], f"{n}: the Parameter object was replaced"
            assert p.dtype == dtype, f"{n}: dtype {p.dtype}"
            assert p.requires_grad is requires_grad, f"{n}: requires_grad changed"
        if run:
            with torch.no_grad():
                assert s.model(s.x).shape == (1, 4, 6, 6)

    return check


def _no_group_check(s: Setup, groups: list) -> None:
    assert groups == []


def _unchanged(s: Setup, result: Any) -> None:
    assert s.model[0].out_channels == 8


def _is_false(s: Setup, result: Any) -> None:
    assert result is False


class _NoMethods:
    pass


_conv = tp.prune_conv_out_channels


class _Unused(nn.Module):
    """A module type that no row manages to register an updater for."""


def _no_update(module: nn.Module, sizes: Any) -> dict[str, Any]:
    return {}


def _pruner_cls(name: str, **kwargs: Any) -> Callable[[Setup], Any]:
    return lambda s: getattr(tp.pruner, name)(s.model, s.x, **kwargs)


def _score(name: str, arg: Any) -> Callable[[Setup], Any]:
    return lambda s: getattr(tp.importance, name)()(arg)


def _regularize_other(name: str) -> Callable[[Setup], Any]:
    return lambda s: getattr(tp.pruner, name)(s.model, s.x).regularize(small_cnn())


def _shrunk_state(model: nn.Module) -> dict[str, Any]:
    """``anyprune.state_dict`` of ``model`` whose record says conv 0 has 6 channels, tensors still 8."""
    sd = tp.state_dict(model)
    sd["structure"]["tensors"]["0.weight"]["shape"] = [6, 3, 3, 3]
    return sd

ROWS: list[Row] = [
    # ------------------------------------------------------------ build_dependency
    Row("DependencyGraph.build_dependency", "a group whose pruning breaks the forward pass (the safety net)",
        lambda s: s.dg.get_pruning_group(s.model[0], tp.prune_conv_out_channels, idxs=[0]),
        tp.PruningError, "no longer fits after pruning: AssertionError: needs all 8 channels", setup=_width_assert),
    Row("DependencyGraph.build_dependency", "model is None",
        lambda s: tp.DependencyGraph().build_dependency(None, s.x),
        tp.ConfigError, "model must be a torch.nn.Module, got NoneType"),
    Row("DependencyGraph.build_dependency", "model is a name (str)",
        lambda s: tp.DependencyGraph().build_dependency("resnet18", s.x),
        tp.ConfigError, "model must be a torch.nn.Module, got str"),
    Row("DependencyGraph.build_dependency", "example_inputs is None",
        lambda s: tp.DependencyGraph().build_dependency(s.model, None),
        tp.TraceError, "the model failed on the example inputs: TypeError"),
    Row("DependencyGraph.build_dependency", "example_inputs with the wrong number of channels",
        lambda s: tp.DependencyGraph().build_dependency(s.model, torch.randn(1, 4, 6, 6)),
        tp.TraceError, "expected input[1, 4, 6, 6] to have 3 channels"),
    Row("DependencyGraph.build_dependency", "example_inputs of the wrong rank",
        lambda s: tp.DependencyGraph().build_dependency(s.model, torch.randn(6)),
        tp.TraceError, "the model failed on the example inputs: RuntimeError"),
    Row("DependencyGraph.build_dependency", "example_inputs is a str",
        lambda s: tp.DependencyGraph().build_dependency(s.model, "image.png"),
        tp.TraceError, "Check that example_inputs match model.forward"),
    Row("DependencyGraph.build_dependency", "forward_fn is not callable", _build(forward_fn=3),
        tp.ConfigError, "forward_fn must be a callable or None, got int"),
    Row("DependencyGraph.build_dependency", "forward_fn raises", _build(forward_fn=lambda m, x: 1 / 0),
        tp.TraceError, "the model failed on the example inputs: ZeroDivisionError"),
    Row("DependencyGraph.build_dependency", "output_transform is not callable", _build(output_transform="sum"),
        tp.ConfigError, "output_transform must be a callable or None, got str"),
    Row("DependencyGraph.build_dependency", "ignored_layers holds a module of another model",
        _build(ignored_layers=[nn.Linear(2, 2)]),
        tp.ConfigError, "ignored_layers: Linear is not a submodule of the model"),
    Row("DependencyGraph.build_dependency", "ignored_layers holds a module name (str)", _build(ignored_layers=["0"]),
        tp.ConfigError, "ignored_layers entries must be modules, module types or parameters, got '0'"),
    Row("DependencyGraph.build_dependency", "ignored_layers is an int", _build(ignored_layers=3),
        tp.ConfigError, "ignored_layers must be a list of modules, module types or parameters, got int"),
    Row("DependencyGraph.build_dependency", "unwrapped_parameters holds a parameter of another model",
        _build(unwrapped_parameters=[(nn.Parameter(torch.ones(3)), 0)]),
        tp.ConfigError, "is not a parameter of the model; pass (param, dim) pairs"),
    Row("DependencyGraph.build_dependency", "customized_pruners is a list", _build(customized_pruners=[_NoMethods()]),
        tp.ConfigError, "customized_pruners must be a dict {LayerType: pruner}"),
    Row("DependencyGraph.build_dependency", "a customized pruner without its methods",
        _build(customized_pruners={nn.BatchNorm2d: _NoMethods()}),
        tp.ConfigError, "customized pruner for BatchNorm2d has no method prune_out_channels()"),
    Row("DependencyGraph.build_dependency", "half-precision model, float32 example_inputs",
        lambda s: tp.DependencyGraph().build_dependency(s.model, s.x.float()),
        tp.TraceError, "Input type (float) and bias type (c10::Half) should be the same", setup=_half),
    Row("DependencyGraph.build_dependency", "half-precision model and inputs", _prune_first_group,
        None, "groups prune in float16, Parameters kept", setup=_half,
        check=_check_pruned(torch.float16, True, run=False)),
    Row("DependencyGraph.build_dependency", "frozen parameters (requires_grad=False)", _prune_first_group,
        None, "groups prune, requires_grad stays False", setup=_frozen,
        check=_check_pruned(torch.float32, False)),
    Row("DependencyGraph.build_dependency", "model on mixed devices (cpu and meta)", _prune_first_group,
        None, "the graph is built and groups prune on both devices", setup=_mixed_devices,
        check=_check_pruned(torch.float32, True, run=False)),
    Row("DependencyGraph.build_dependency", "a model with no prunable group",
        lambda s: s.dg.groups(), None, "get_all_groups yields nothing",
        setup=lambda: Setup(lambda: nn.Linear(4, 3), (2, 4)), check=_no_group_check),
    Row("DependencyGraph.build_dependency", "example_inputs that make the forward fail",
        lambda s: tp.DependencyGraph().build_dependency(s.model, torch.randn(1, 3, 6, 6), forward_fn=lambda m, x: m(x)),
        tp.TraceError, "mat1 and mat2 shapes cannot be multiplied",
        setup=lambda: Setup(lambda: nn.Sequential(nn.Conv2d(3, 4, 1), nn.Flatten(), nn.Linear(5, 2)))),
    # ------------------------------------------------------------ get_pruning_group
    Row("DependencyGraph.get_pruning_group", "graph not built",
        lambda s: tp.DependencyGraph().get_pruning_group(s.model[0], _conv, [0]),
        tp.ConfigError, "call build_dependency(model, example_inputs) first"),
    Row("DependencyGraph.get_pruning_group", "idxs is None", lambda s: s.dg.get_pruning_group(s.model[0], _conv, None),
        tp.PruningError, "indices must be a sequence of ints or a tensor, got NoneType"),
    Row("DependencyGraph.get_pruning_group", "idxs is an int", lambda s: s.dg.get_pruning_group(s.model[0], _conv, 3),
        tp.PruningError, "indices must be a sequence of ints or a tensor, got int"),
    Row("DependencyGraph.get_pruning_group", "duplicated idxs",
        lambda s: s.dg.get_pruning_group(s.model[0], _conv, [1, 1]),
        tp.PruningError, "duplicated indices in [1, 1]; pass each index once"),
    Row("DependencyGraph.get_pruning_group", "negative idxs", lambda s: s.dg.get_pruning_group(s.model[0], _conv, [-1]),
        tp.PruningError, "indices [-1] out of range [0, 8); negative indices are not accepted"),
    Row("DependencyGraph.get_pruning_group", "idxs out of range",
        lambda s: s.dg.get_pruning_group(s.model[0], _conv, [8]),
        tp.PruningError, "indices [8] out of range [0, 8)"),
    Row("DependencyGraph.get_pruning_group", "NaN in idxs",
        lambda s: s.dg.get_pruning_group(s.model[0], _conv, [math.nan]),
        tp.PruningError, "indices must be ints, got nan (float)"),
    Row("DependencyGraph.get_pruning_group", "float tensor idxs",
        lambda s: s.dg.get_pruning_group(s.model[0], _conv, torch.tensor([1.0])),
        tp.PruningError, "indices must be ints, got a torch.float32 tensor"),
    Row("DependencyGraph.get_pruning_group", "boolean mask as idxs",
        lambda s: s.dg.get_pruning_group(s.model[0], _conv, torch.ones(8, dtype=torch.bool)),
        tp.PruningError, "pass integer indices, not a boolean mask"),
    Row("DependencyGraph.get_pruning_group", "2-D tensor idxs",
        lambda s: s.dg.get_pruning_group(s.model[0], _conv, torch.tensor([[0, 1]])),
        tp.PruningError, "indices must be a 1-D tensor or a list, got a tensor of shape (1, 2)"),
    Row("DependencyGraph.get_pruning_group", "pruning_fn given by name (str)",
        lambda s: s.dg.get_pruning_group(s.model[0], "prune_conv_out_channels", [0]),
        tp.PruningError, "is not a pruning function; use one of the tp.prune_* functions"),
    Row("DependencyGraph.get_pruning_group", "module of another model",
        lambda s: s.dg.get_pruning_group(nn.Conv2d(3, 8, 1), _conv, [0]),
        tp.PruningError, "Conv2d is not a module of the model this graph was built for"),
    Row("DependencyGraph.get_pruning_group", "pruning_fn that does not fit the module",
        lambda s: s.dg.get_pruning_group(s.model[1], _conv, [0]),
        tp.PruningError, "prune_conv_out_channels does not fit module BatchNorm2d"),
    Row("DependencyGraph.get_pruning_group", "the model's output channels",
        lambda s: s.dg.get_pruning_group(s.model[3], _conv, [0]),
        tp.PruningError, "its dim is pinned (model output"),
    Row("DependencyGraph.get_pruning_group", "empty idxs",
        lambda s: s.dg.get_pruning_group(s.model[0], _conv, []).prune(),
        None, "nothing is pruned", check=_unchanged),
    # ------------------------------------------------------------ get_all_groups
    Row("DependencyGraph.get_all_groups", "graph not built", lambda s: list(tp.DependencyGraph().get_all_groups()),
        tp.ConfigError, "call build_dependency(model, example_inputs) first"),
    Row("DependencyGraph.get_all_groups", "ignored_layers holds a module of another model",
        lambda s: list(s.dg.get_all_groups(ignored_layers=[nn.Conv2d(1, 1, 1)])),
        tp.ConfigError, "ignored_layers: Conv2d is not a submodule of the model"),
    Row("DependencyGraph.get_all_groups", "root_module_types holds type names (str)",
        lambda s: list(s.dg.get_all_groups(root_module_types=["Conv2d"])),
        tp.ConfigError, "root_module_types must be a list of module types"),
    Row("DependencyGraph.get_all_groups", "root_module_types is an int",
        lambda s: list(s.dg.get_all_groups(root_module_types=3)),
        tp.ConfigError, "module types (e.g. [nn.Conv2d, nn.Linear]) or None, got 3"),
    # ------------------------------------------------------------ Group.prune
    Row("Group.prune", "no idxs for a group of get_all_groups", lambda s: s.group.prune(),
        tp.PruningError, "this group has no indices to prune: pass them"),
    Row("Group.prune", "an index beyond 64 bits", lambda s: s.group.prune(idxs=[2**63]),
        tp.PruningError, "Group.prune: indices [9223372036854775808] out of range [0, 8)"),
    Row("Group.prune", "every index", lambda s: s.group.prune(idxs=list(range(8))),
        tp.PruningError, "Cannot prune all 8 positions of `0.weight` dim 0: every dim must keep at least one"),
    Row("Group.prune", "duplicated idxs", lambda s: s.group.prune(idxs=[2, 2]),
        tp.PruningError, "Group.prune: duplicated indices in [2, 2]"),
    Row("Group.prune", "idxs out of range", lambda s: s.group.prune(idxs=[0, 9]),
        tp.PruningError, "Group.prune: indices [9] out of range [0, 8)"),
    Row("Group.prune", "NaN in idxs", lambda s: s.group.prune(idxs=[0, math.nan]),
        tp.PruningError, "Group.prune: indices must be ints, got nan (float)"),
    Row("Group.prune", "bool in idxs", lambda s: s.group.prune(idxs=[True]),
        tp.PruningError, "Group.prune: indices must be ints, got True (bool)"),
    Row("Group.prune", "the same group of fixed positions pruned twice", lambda s: s.stale.prune(),
        tp.PruningError, "pruning it again would remove the wrong positions. Get a fresh group",
        setup=_pruned_once),
    Row("Group.prune", "a group of an interactive step pruned twice", lambda s: s.stale.prune(),
        tp.PruningError, "pruning it again would remove the wrong positions. Get a fresh group",
        setup=_interactive_pruned_once),
    # ------------------------------------------------------------ check_pruning_group
    Row("DependencyGraph.check_pruning_group", "not a group", lambda s: s.dg.check_pruning_group("conv"),
        tp.ConfigError, "check_pruning_group expects a Group (from get_pruning_group or get_all_groups), got str"),
    Row("DependencyGraph.check_pruning_group", "a group of another graph",
        lambda s: tp.DependencyGraph().build_dependency(s.model, s.x).check_pruning_group(s.group),
        tp.ConfigError, "the group comes from another DependencyGraph"),
    Row("DependencyGraph.check_pruning_group", "a group that would empty a layer",
        lambda s: s.dg.check_pruning_group(s.dg.get_pruning_group(s.model[0], _conv, list(range(8)))),
        None, "returns False", check=_is_false),
    # ------------------------------------------------------------ prune_* functions
    Row("prune_* functions", "layer is None", lambda s: _conv(None, [0]),
        tp.PruningError, "prune_conv_out_channels does not fit a NoneType"),
    Row("prune_* functions", "layer of another type", lambda s: tp.prune_linear_in_channels(s.model[0], [0]),
        tp.PruningError, "prune_linear_in_channels does not fit a Conv2d: it prunes Linear layers"),
    Row("prune_* functions", "idxs is None", lambda s: _conv(s.model[0], None),
        tp.PruningError, "prune_conv_out_channels on Conv2d: indices must be a sequence of ints or a tensor"),
    Row("prune_* functions", "duplicated idxs", lambda s: _conv(s.model[0], [3, 3]),
        tp.PruningError, "duplicated indices in [3, 3]"),
    Row("prune_* functions", "every channel", lambda s: _conv(s.model[0], list(range(8))),
        tp.PruningError, "Cannot prune all 8 channels of Conv2d"),
    Row("prune_* functions", "negative idxs", lambda s: tp.prune_batchnorm_out_channels(s.model[1], [-2]),
        tp.PruningError, "indices [-2] out of range [0, 8)"),
    Row("prune_* functions", "NaN in idxs", lambda s: _conv(s.model[0], [math.nan]),
        tp.PruningError, "indices must be ints, got nan (float)"),
    # ------------------------------------------------------------ verify_group / verify_forward
    Row("verify_group", "graph is not a DependencyGraph", lambda s: tp.verify_group(None, s.group, [0], s.x),
        tp.ConfigError, "verify_group: graph must be a DependencyGraph, got NoneType"),
    Row("verify_group", "group is not a Group", lambda s: tp.verify_group(s.dg, "conv", [0], s.x),
        tp.ConfigError, "verify_group expects a Group"),
    Row("verify_group", "negative atol", lambda s: tp.verify_group(s.dg, s.group, [0], s.x, atol=-1e-6),
        tp.ConfigError, "verify_group: atol must be a finite number >= 0, got -1e-06"),
    Row("verify_group", "NaN rtol", lambda s: tp.verify_group(s.dg, s.group, [0], s.x, rtol=math.nan),
        tp.ConfigError, "verify_group: rtol must be a finite number >= 0, got nan"),
    Row("verify_group", "example_inputs that make the forward fail",
        lambda s: tp.verify_group(s.dg, s.group, [0], torch.randn(1, 5, 6, 6)),
        tp.TraceError, "the model failed on the example inputs"),
    Row("verify_group", "idxs out of range", lambda s: tp.verify_group(s.dg, s.group, [8], s.x),
        tp.PruningError, "indices [8] out of range [0, 8)"),
    Row("verify_forward", "model is a str", lambda s: tp.verify_forward("model", s.x),
        tp.ConfigError, "verify_forward: model must be a torch.nn.Module, got str"),
    Row("verify_forward", "example_inputs that make the forward fail",
        lambda s: tp.verify_forward(s.model, torch.randn(1, 5, 6, 6)),
        tp.VerificationError, "F.conv2d at"),
    # ------------------------------------------------------------ count_ops_and_params
    Row("count_ops_and_params", "model is a str", lambda s: tp.count_ops_and_params("model", s.x),
        tp.ConfigError, "count_ops_and_params: model must be a torch.nn.Module, got str"),
    Row("count_ops_and_params", "example_inputs that make the forward fail",
        lambda s: tp.count_ops_and_params(s.model, torch.randn(1, 5, 6, 6)),
        tp.TraceError, "the model failed on the example inputs: RuntimeError"),
    Row("count_ops_and_params", "example_inputs is None", lambda s: tp.count_ops_and_params(s.model, None),
        tp.TraceError, "the model failed on the example inputs: TypeError"),
]


# ---------------------------------------------------------------- pruners, importance, save/load, updaters
_P = tp.pruner.MetaPruner


def _pruner(**kwargs: Any) -> Callable[[Setup], Any]:
    return lambda s: _P(s.model, s.x, **kwargs)


def _step(**kwargs: Any) -> Callable[[Setup], Any]:
    return lambda s: _P(s.model, s.x, **kwargs).step()


def _warned(call: Callable[[Setup], Any]) -> Callable[[Setup], Any]:
    """Run ``call`` and return ``(result, [warning messages])``."""
    import warnings

    def run(s: Setup) -> tuple[Any, list[str]]:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = call(s)
        return result, [str(w.message) for w in caught]

    return run


def _pruned_by_half(dtype: torch.dtype, requires_grad: bool, run: bool = True) -> Callable[[Setup], Any]:
    """Check of a ``MetaPruner(pruning_ratio=0.5).step()`` on the small CNN (conv 0's 8 channels -> 4)."""
    def check(s: Setup, result: Any) -> None:
        assert (result.groups_pruned, result.indices_pruned) == (1, 4), result
        assert (s.model[0].out_channels, s.model[1].num_features, s.model[3].in_channels) == (4, 4, 4)
        for n, p in s.model.named_parameters():
            assert p.dtype == dtype, f"{n}: dtype {p.dtype}"
            assert p.requires_grad is requires_grad, f"{n}: requires_grad changed"
        if run:
            with torch.no_grad():
                assert s.model(s.x).shape == (1, 4, 6, 6)

    return check


def _warns(fragment: str, unchanged: bool = True) -> Callable[[Setup, Any], None]:
    def check(s: Setup, outcome: tuple[Any, list[str]]) -> None:
        _, messages = outcome
        assert any(fragment in m for m in messages), f"no warning containing {fragment!r}: {messages}"
        if unchanged:
            assert all(p.shape == q.shape for p, q in zip(s.model.parameters(), Setup().model.parameters()))

    return check


def _linear() -> Setup:
    return Setup(lambda: nn.Linear(4, 3), (2, 4))


def _bad_forward() -> Setup:
    return Setup(lambda: nn.Sequential(nn.Conv2d(3, 4, 1), nn.Flatten(), nn.Linear(5, 2)))


def _in_tmp(call: Callable[[Setup, pathlib.Path], Any]) -> Callable[[Setup], Any]:
    def run(s: Setup) -> Any:
        with tempfile.TemporaryDirectory() as d:
            return call(s, pathlib.Path(d))

    return run


def _edited_save(s: Setup, d: pathlib.Path, edit: Callable[[dict, dict], None]) -> pathlib.Path:
    """Save a pruned copy of the small CNN with its example input, then let ``edit(record, weights)`` tamper."""
    import json

    from safetensors.torch import load_file, save_file

    pruned = small_cnn()
    tp.DependencyGraph().build_dependency(pruned, s.x).groups()[0].prune([0, 1])
    tp.save_pruned(pruned, d, example_inputs=s.x)
    record = json.loads((d / "anyprune.json").read_text())
    weights = load_file(str(d / "model.safetensors"))
    edit(record, weights)
    (d / "anyprune.json").write_text(json.dumps(record))
    save_file(weights, str(d / "model.safetensors"))
    return d


def _mismatched_save(s: Setup, d: pathlib.Path) -> pathlib.Path:
    def edit(record: dict, weights: dict) -> None:  # conv 3 reads 7 channels, conv 0 writes 6
        record["tensors"]["3.weight"]["shape"] = [4, 7, 1, 1]
        record["modules"]["3"]["in_channels"] = 7
        weights["3.weight"] = torch.zeros(4, 7, 1, 1)

    return _edited_save(s, d, edit)


def _huge_input_save(s: Setup, d: pathlib.Path) -> pathlib.Path:
    def edit(record: dict, weights: dict) -> None:
        record["example_inputs"]["tensors"][0]["shape"] = [2**20, 2**20]

    return _edited_save(s, d, edit)


def _history(*steps: Any) -> Callable[[Setup], Any]:
    return lambda s: s.dg.load_pruning_history(list(steps))


IMPORTANCES = ["GroupMagnitudeImportance", "BNScaleImportance", "LAMPImportance", "FPGMImportance",
               "RandomImportance", "GroupTaylorImportance", "GroupHessianImportance", "ActivationImportance"]
REGULARIZED = ["BNScalePruner", "GroupNormPruner", "GrowingRegPruner"]

ROWS += [
    # ------------------------------------------------------------ MetaPruner
    Row("pruner.MetaPruner", "model is a str", lambda s: _P("resnet50", s.x),
        tp.ConfigError, "model must be a torch.nn.Module, got str"),
    Row("pruner.MetaPruner", "an importance that returns a string",
        lambda s: _P(s.model, s.x, importance=lambda g: "high").step(),
        tp.PruningError, "returned str for a group; it must return one number per index"),
    Row("PruneConfig.from_json", "a JSON number", lambda s: tp.PruneConfig.from_json("1"),
        tp.ConfigError, "a PruneConfig is a mapping of its fields, got int"),
    Row("PruneConfig.from_json", "JSON null", lambda s: tp.PruneConfig.from_json("null"),
        tp.ConfigError, "a PruneConfig is a mapping of its fields, got NoneType"),
    Row("PruneConfig.from_json", "deeply nested JSON", lambda s: tp.PruneConfig.from_json("[" * 100_000),
        tp.ConfigError, "PruneConfig.from_json: the JSON is nested too deeply"),
    Row("PruneConfig.build", "an unknown key in importance_kwargs",
        lambda s: tp.PruneConfig(importance="magnitude", importance_kwargs={"nope": 1}).build(s.model, s.x),
        tp.ConfigError, "importance_kwargs ['nope'] do not fit importance 'magnitude'"),
    Row("pruner.MetaPruner", "negative pruning_ratio", _pruner(pruning_ratio=-0.1),
        tp.ConfigError, "pruning_ratio must be a number in [0, 1] (the fraction of channels to remove), got -0.1"),
    Row("pruner.MetaPruner", "pruning_ratio > 1", _pruner(pruning_ratio=1.5),
        tp.ConfigError, "pruning_ratio must be a number in [0, 1] (the fraction of channels to remove), got 1.5"),
    Row("pruner.MetaPruner", "NaN pruning_ratio", _pruner(pruning_ratio=math.nan),
        tp.ConfigError, "pruning_ratio must be a number in [0, 1] (the fraction of channels to remove), got nan"),
    Row("pruner.MetaPruner", "pruning_ratio is a str", _pruner(pruning_ratio="0.5"),
        tp.ConfigError, "pruning_ratio must be a number in [0, 1] (the fraction of channels to remove), got '0.5'"),
    Row("pruner.MetaPruner", "pruning_ratio_dict with a module of another model",
        _pruner(pruning_ratio_dict={nn.Conv2d(3, 8, 3): 0.5}),
        tp.ConfigError, "pruning_ratio_dict key Conv2d is not a submodule of the model; use modules of the model"),
    Row("pruner.MetaPruner", "pruning_ratio_dict with a module name (str)", _pruner(pruning_ratio_dict={"0": 0.5}),
        tp.ConfigError, "pruning_ratio_dict keys must be modules or tuples of modules, got '0'"),
    Row("pruner.MetaPruner", "pruning_ratio_dict with a ratio > 1",
        lambda s: _P(s.model, s.x, pruning_ratio_dict={s.model[0]: 2.0}),
        tp.ConfigError, "pruning_ratio_dict[Conv2d] must be a number in [0, 1]"),
    Row("pruner.MetaPruner", "pruning_ratio_dict with a NaN ratio",
        lambda s: _P(s.model, s.x, pruning_ratio_dict={(s.model[0], s.model[3]): math.nan}),
        tp.ConfigError, "pruning_ratio_dict[Conv2d] must be a number in [0, 1]"),
    Row("pruner.MetaPruner", "pruning_ratio_dict with an empty tuple key", _pruner(pruning_ratio_dict={(): 0.5}),
        tp.ConfigError, "pruning_ratio_dict has an empty tuple as a key"),
    Row("pruner.MetaPruner", "pruning_ratio_dict is a list", _pruner(pruning_ratio_dict=[0.5]),
        tp.ConfigError, "pruning_ratio_dict must be a dict {module or tuple of modules: ratio}, got list"),
    Row("pruner.MetaPruner", "ignored_layers with a module of another model",
        _pruner(ignored_layers=[nn.Conv2d(3, 8, 3)]),
        tp.ConfigError, "ignored_layers: Conv2d is not a submodule of the model"),
    Row("pruner.MetaPruner", "ignored_layers with a module name (str)", _pruner(ignored_layers=["0"]),
        tp.ConfigError, "ignored_layers entries must be modules, module types or parameters, got '0'"),
    Row("pruner.MetaPruner", "iterative_steps = 0", _pruner(iterative_steps=0),
        tp.ConfigError, "iterative_steps must be an int >= 1, got 0"),
    Row("pruner.MetaPruner", "iterative_steps is a float", _pruner(iterative_steps=2.5),
        tp.ConfigError, "iterative_steps must be an int >= 1, got 2.5"),
    Row("pruner.MetaPruner", "a scheduler that returns the wrong number of ratios",
        _pruner(iterative_steps=3, iterative_pruning_ratio_scheduler=lambda r, n: [0.0, r]),
        tp.ConfigError, "returned 2 values; it must return steps + 1 = 4"),
    Row("pruner.MetaPruner", "a scheduler whose ratios decrease",
        _pruner(iterative_steps=2, iterative_pruning_ratio_scheduler=lambda r, n: [0.0, r, 0.1]),
        tp.ConfigError, "ratios must not decrease (pruned channels cannot come back)"),
    Row("pruner.MetaPruner", "a scheduler that returns ratios > 1",
        _pruner(iterative_steps=1, iterative_pruning_ratio_scheduler=lambda r, n: [0.0, 2.0]),
        tp.ConfigError, "every ratio must lie in [0, 1]"),
    Row("pruner.MetaPruner", "a scheduler that is not callable", _pruner(iterative_pruning_ratio_scheduler=[0, 0.5]),
        tp.ConfigError, "iterative_pruning_ratio_scheduler must be a callable (ratio, steps)"),
    Row("pruner.MetaPruner", "round_to = 0", _pruner(round_to=0),
        tp.ConfigError, "round_to must be None or an int >= 1 (e.g. 8), got 0"),
    Row("pruner.MetaPruner", "max_pruning_ratio = 0", _pruner(max_pruning_ratio=0),
        tp.ConfigError, "max_pruning_ratio must be in (0, 1] (the most any group may lose), got 0"),
    Row("pruner.MetaPruner", "negative target_macs", _pruner(target_macs=-5),
        tp.ConfigError, "target_macs must be a fraction in (0, 1] of the original or an absolute count > 1, got -5"),
    Row("pruner.MetaPruner", "NaN target_params", _pruner(target_params=math.nan),
        tp.ConfigError, "target_params must be a fraction in (0, 1] of the original or an absolute count > 1"),
    Row("pruner.MetaPruner", "target_macs larger than the model's MACs", _pruner(target_macs=1e12),
        tp.ConfigError, "target_macs=1000000000000.0 is more than the model has (8,928 MACs): nothing would be pruned"),
    Row("pruner.MetaPruner", "target_params larger than the model", _pruner(target_params=10_000),
        tp.ConfigError, "target_params=10000 is more than the model has (276 parameters)"),
    Row("pruner.MetaPruner", "a budget that cannot be met", _step(target_params=3),
        tp.PruningError, "the budget cannot be met: pruning every group as far as allowed gives params"),
    Row("pruner.MetaPruner", "head_pruning_ratio > 1", _pruner(prune_num_heads=True, head_pruning_ratio=1.5),
        tp.ConfigError, "head_pruning_ratio must be a number in [0, 1] (the fraction of channels to remove), got 1.5"),
    Row("pruner.MetaPruner", "negative head_pruning_ratio", _pruner(prune_num_heads=True, head_pruning_ratio=-0.5),
        tp.ConfigError, "head_pruning_ratio must be a number in [0, 1]"),
    Row("pruner.MetaPruner", "num_heads that does not divide the width",
        lambda s: _P(s.model, s.x, num_heads={s.model[0]: 3}),
        tp.ConfigError, "num_heads[Conv2d] = 3 does not divide its width 8"),
    Row("pruner.MetaPruner", "importance is not callable", _pruner(importance="l2"),
        tp.ConfigError, "importance must be callable as importance(group) -> scores, got 'l2'"),
    Row("pruner.MetaPruner", "importance returns the wrong number of scores",
        _step(importance=lambda g: torch.ones(3)),
        tp.PruningError, "returned 3 scores for the group rooted at 0.weight of size 8"),
    Row("pruner.MetaPruner", "importance returns NaN scores",
        _step(importance=lambda g: torch.full((g.size,), math.nan)),
        tp.PruningError, "returned non-finite scores for the group rooted at 0.weight"),
    Row("pruner.MetaPruner", "example_inputs that make the forward fail",
        lambda s: _P(s.model, torch.randn(1, 3, 6, 6)),
        tp.TraceError, "mat1 and mat2 shapes cannot be multiplied", setup=_bad_forward),
    Row("pruner.MetaPruner", "example_inputs with the wrong number of channels",
        lambda s: _P(s.model, torch.randn(1, 5, 6, 6)),
        tp.TraceError, "expected input[1, 5, 6, 6] to have 3 channels"),
    Row("pruner.MetaPruner", "forward_fn is not callable", _pruner(forward_fn="forward"),
        tp.ConfigError, "forward_fn must be a callable or None, got str"),
    Row("pruner.MetaPruner", "half-precision model and inputs", _step(pruning_ratio=0.5),
        None, "prunes in float16", setup=_half, check=_pruned_by_half(torch.float16, True, run=False)),
    Row("pruner.MetaPruner", "frozen parameters (requires_grad=False)", _step(pruning_ratio=0.5),
        None, "prunes, requires_grad stays False", setup=_frozen, check=_pruned_by_half(torch.float32, False)),
    Row("pruner.MetaPruner", "model on mixed devices (cpu and meta)", _step(pruning_ratio=0.5),
        None, "prunes on both devices", setup=_mixed_devices, check=_pruned_by_half(torch.float32, True, run=False)),
    Row("pruner.MetaPruner", "a model with no prunable group", _warned(_step(pruning_ratio=0.5)),
        None, "warns: found no prunable group; step() prunes nothing", setup=_linear,
        check=_warns("MetaPruner found no prunable group in Linear", unchanged=False)),
    Row("pruner.MetaPruner", "step() after the last step",
        _warned(lambda s: (lambda p: (p.step(), p.step())[1])(_P(s.model, s.x, pruning_ratio=0.5))),
        None, "warns: all 1 iterative steps are done; returns None",
        check=lambda s, out: (_warns("all 1 iterative steps are done", unchanged=False)(s, out), out[0] is None)),
    # ------------------------------------------------------------ regularised pruners
    *[Row(f"pruner.{name}", "regularize(another model)",
          _regularize_other(name),
          tp.ConfigError, "regularize(model) must get the model this pruner was built for") for name in REGULARIZED],
    *[Row(f"pruner.{name}", "negative reg", _pruner_cls(name, reg=-1),
          tp.ConfigError, "reg must be a finite number >= 0 (the penalty's strength), got -1") for name in REGULARIZED],
    Row("pruner.GrowingRegPruner", "NaN delta_reg", _pruner_cls("GrowingRegPruner", delta_reg=math.nan),
        tp.ConfigError, "delta_reg must be a finite number >= 0 (the penalty's strength), got nan"),
    # ------------------------------------------------------------ importance criteria
    *[Row(f"importance.{name}", "called on a str instead of a group",
          _score(name, "conv"),
          tp.ConfigError, f"{name} scores a Group (from DependencyGraph.get_all_groups, get_pruning_group or a "
                          "pruner), got str") for name in IMPORTANCES],
    Row("importance.GroupMagnitudeImportance", "called on a module instead of a group",
        lambda s: tp.importance.GroupMagnitudeImportance()(s.model[0]),
        tp.ConfigError, "GroupMagnitudeImportance scores a Group"),
    Row("importance.GroupTaylorImportance", "no gradients", lambda s: tp.importance.GroupTaylorImportance()(s.group),
        tp.PruningError, "needs gradients, but no parameter of the group rooted at 0.weight has a .grad"),
    Row("importance.ActivationImportance", "not calibrated", lambda s: tp.importance.ActivationImportance()(s.group),
        tp.PruningError, "ActivationImportance is not calibrated: call imp.calibrate(model, batches) first"),
    *[Row(f"importance.{name}", "not calibrated", lambda s, name=name: getattr(tp.importance, name)()(s.group),
          tp.PruningError, f"{name} is not calibrated: call imp.calibrate(model, data) first")
      for name in ("OBSImportance", "WandaSPImportance", "FluctuationImportance")],
    Row("importance.OBSImportance", "calibration data is empty",
        lambda s: tp.importance.OBSImportance().calibrate(s.model, []),
        tp.ConfigError, "calibration data is empty; give at least one batch of example inputs"),
    Row("importance.OBSImportance", "calibration data is an int",
        lambda s: tp.importance.OBSImportance().calibrate(s.model, 3),
        tp.ConfigError, "calibration data must be a tensor, a DataLoader or an iterable of example inputs, got int"),
    Row("importance.OBSImportance", "negative damp", lambda s: tp.importance.OBSImportance(damp=-0.1),
        tp.ConfigError, "damp must be a number >= 0"),
    Row("importance.OBSImportance", "calibration data of the wrong shape",
        lambda s: tp.importance.OBSImportance().calibrate(s.model, [torch.randn(2, 5, 6, 6)]),
        tp.TraceError, "the model failed on calibration batch 0: RuntimeError: Given groups=1"),
    # ------------------------------------------------------------ calibration and reconstruction (MetaPruner)
    Row("pruner.MetaPruner", "reconstruct=True without calibration", _pruner(reconstruct=True),
        tp.ConfigError, "reconstruct=True needs calibration data"),
    Row("pruner.MetaPruner", "a calibrated criterion without calibration",
        _pruner(importance=tp.importance.OBSImportance()),
        tp.ConfigError, "OBSImportance needs calibration data: pass MetaPruner(..., calibration=batches)"),
    Row("pruner.MetaPruner", "reconstruct is a str", _pruner(reconstruct="yes", calibration=torch.randn(4, 3, 6, 6)),
        tp.ConfigError, "reconstruct must be True or False, got 'yes'"),
    Row("pruner.MetaPruner", "reconstruction_target misspelt",
        _pruner(reconstruct=True, calibration=torch.randn(4, 3, 6, 6), reconstruction_target="teacher"),
        tp.ConfigError, "reconstruction_target must be one of 'auto', 'dense', 'layer', got 'teacher'"),
    Row("pruner.MetaPruner", "calibration batch of the wrong shape",
        _step(importance=tp.importance.OBSImportance(), calibration=[torch.randn(2, 5, 6, 6)], reconstruct=True),
        tp.TraceError, "the model failed on calibration batch 0"),
    Row("pruner.MetaPruner", "calibration with reconstruction", _step(
        importance=tp.importance.OBSImportance(), calibration=torch.randn(8, 3, 6, 6), reconstruct=True),
        None, "prunes half of conv 0 and re-fits conv 3 (a PruneResult)",
        check=lambda s, r: (s.model[0].out_channels, s.model[3].in_channels, r.groups_pruned) == (4, 4, 1) or
        (_ for _ in ()).throw(AssertionError(r))),
    # ------------------------------------------------------------ save / load
    Row("save_pruned", "model is a str", _in_tmp(lambda s, d: tp.save_pruned("model", d)),
        tp.ConfigError, "model must be a torch.nn.Module, got str"),
    Row("save_pruned", "a model on the meta device",
        _in_tmp(lambda s, d: tp.save_pruned(s.model, d)),
        tp.ConfigError, "the model has tensors on the meta device: there are no weights to save",
        setup=_mixed_devices),
    Row("load_pruned", "model is a str", _in_tmp(lambda s, d: tp.load_pruned("model", tp.save_pruned(s.model, d))),
        tp.ConfigError, "model must be a torch.nn.Module, got str"),
    Row("load_pruned", "a directory that does not exist",
        _in_tmp(lambda s, d: tp.load_pruned(s.model, d / "missing")),
        tp.ConfigError, "cannot read the structure record"),
    Row("load_pruned", "a directory without the weights file",
        _in_tmp(lambda s, d: (tp.save_pruned(small_cnn(), d), (d / "model.safetensors").unlink(),
                              tp.load_pruned(s.model, d))),
        tp.ConfigError, "model.safetensors (not a safetensors file?)"),
    Row("load_pruned", "a record that is not JSON",
        _in_tmp(lambda s, d: (tp.save_pruned(small_cnn(), d), (d / "anyprune.json").write_text("{"),
                              tp.load_pruned(s.model, d))),
        tp.ConfigError, "cannot read the structure record"),
    Row("load_pruned", "a file saved from another architecture",
        _in_tmp(lambda s, d: tp.load_pruned(s.model, tp.save_pruned(nn.Sequential(nn.Linear(3, 4)), d))),
        tp.ConfigError, "'0.weight' has 4 dims in the model and 2 in the file: it was saved from another architecture"),
    Row("load_pruned", "a file of a model with an extra layer",
        _in_tmp(lambda s, d: tp.load_pruned(s.model, tp.save_pruned(nn.Sequential(*small_cnn(), nn.ReLU(),
                                                                                 nn.Conv2d(4, 2, 1)), d))),
        tp.ConfigError, "the model has no parameter or buffer '5."),
    Row("save_pruned", "example_inputs that are not tensors",
        _in_tmp(lambda s, d: tp.save_pruned(s.model, d, example_inputs="images")),
        tp.ConfigError, "example_inputs must be a tensor, a tuple or list of tensors or a dict of them"),
    Row("load_pruned", "widths of connected layers that do not fit together (checked on the recorded inputs)",
        _in_tmp(lambda s, d: tp.load_pruned(s.model, _mismatched_save(s, d))),
        tp.ConfigError, "The record's widths do not fit together"),
    Row("load_pruned", "a crafted example-input record (a huge shape)",
        _in_tmp(lambda s, d: tp.load_pruned(s.model, _huge_input_save(s, d))),
        tp.ConfigError, "example input 0 has 1,099,511,627,776 elements"),
    Row("load_state_dict", "model is a str", lambda s: tp.load_state_dict("model", tp.state_dict(s.model)),
        tp.ConfigError, "load_state_dict: model must be a torch.nn.Module, got str"),
    Row("load_state_dict", "not the dict of anyprune.state_dict",
        lambda s: tp.load_state_dict(s.model, s.model.state_dict()),
        tp.ConfigError, "load_state_dict expects the dict returned by anyprune.state_dict(model), got OrderedDict"),
    Row("load_state_dict", "a state dict of another architecture",
        lambda s: tp.load_state_dict(s.model, tp.state_dict(nn.Sequential(nn.Linear(3, 4)))),
        tp.ConfigError, "it was saved from another architecture"),
    Row("load_state_dict", "tensors that disagree with the structure record",
        lambda s: tp.load_state_dict(s.model, _shrunk_state(s.model)),
        tp.ConfigError, "weights and record disagree on '0.weight': (8, 3, 3, 3) float32 in the weights, "
                        "[6, 3, 3, 3] float32 in the record"),
    Row("state_dict", "model is a str", lambda s: tp.state_dict("model"),
        tp.ConfigError, "state_dict: model must be a torch.nn.Module, got str"),
    # ------------------------------------------------------------ register_module_updater
    Row("register_module_updater", "module_type is an int", lambda s: tp.register_module_updater(3, _no_update),
        tp.ConfigError, "module_type must be an nn.Module subclass (the class, not an instance)"),
    Row("register_module_updater", "module_type is a module instance",
        lambda s: tp.register_module_updater(s.model[0], _no_update),
        tp.ConfigError, "module_type must be an nn.Module subclass (the class, not an instance) or its qualified"),
    Row("register_module_updater", "module_type is not a module class",
        lambda s: tp.register_module_updater(dict, _no_update),
        tp.ConfigError, "module_type must be an nn.Module subclass"),
    Row("register_module_updater", "module_type is an unqualified name",
        lambda s: tp.register_module_updater("Conv2d", _no_update),
        tp.ConfigError, "a module type given by name must be qualified ('pkg.mod.Class'), got 'Conv2d'"),
    Row("register_module_updater", "update is not callable", lambda s: tp.register_module_updater(_Unused, 5),
        tp.ConfigError, "update must be a callable (module, sizes) -> {attr: value}, got 5"),
    Row("register_module_updater", "decorator applied to a non-callable",
        lambda s: tp.register_module_updater(_Unused)("head_dim"),
        tp.ConfigError, "update must be a callable (module, sizes) -> {attr: value}, got 'head_dim'"),
    Row("register_module_updater", "couple is not callable",
        lambda s: tp.register_module_updater(_Unused, _no_update, couple=[("q.weight", 0)]),
        tp.ConfigError, "couple must be a callable module -> [((param, dim), (param, dim)), ...] or None"),
    # ------------------------------------------------------------ DependencyGraph.verify
    Row("DependencyGraph.verify", "graph not built", lambda s: tp.DependencyGraph().verify(),
        tp.ConfigError, "call build_dependency(model, example_inputs) first"),
    Row("DependencyGraph.verify", "example_inputs that make the forward fail",
        lambda s: s.dg.verify(torch.randn(1, 5, 6, 6)),
        tp.VerificationError, "F.conv2d at"),
    # ------------------------------------------------------------ DependencyGraph.load_pruning_history
    Row("DependencyGraph.load_pruning_history", "graph not built",
        lambda s: tp.DependencyGraph().load_pruning_history([("0.weight", 0, [1])]),
        tp.ConfigError, "call build_dependency(model, example_inputs) first"),
    Row("DependencyGraph.load_pruning_history", "history is an int", lambda s: s.dg.load_pruning_history(5),
        tp.ConfigError, "load_pruning_history expects the list returned by pruning_history(), got int"),
    Row("DependencyGraph.load_pruning_history", "history is a str", lambda s: s.dg.load_pruning_history("0.weight"),
        tp.ConfigError, "load_pruning_history expects the list returned by pruning_history(), got str"),
    Row("DependencyGraph.load_pruning_history", "a step with two fields", _history(("0.weight", 0)),
        tp.ConfigError, "history step 0 must be (root, dim, positions), got ('0.weight', 0)"),
    Row("DependencyGraph.load_pruning_history", "an unknown root", _history(("9.weight", 0, [0])),
        tp.PruningError, "history step 0: '9.weight' dim 0 is not a prunable dim of this model"),
    Row("DependencyGraph.load_pruning_history", "dim given as a str", _history(("0.weight", "0", [0])),
        tp.PruningError, "history step 0: '0.weight' dim '0' is not a prunable dim of this model"),
    Row("DependencyGraph.load_pruning_history", "a malformed second step (the first is valid)",
        _history(("0.weight", 0, [1]), ("0.weight", 0)),
        tp.ConfigError, "history step 1 must be (root, dim, positions)"),
    Row("DependencyGraph.load_pruning_history", "an unknown root in the second step (the first is valid)",
        _history(("0.weight", 0, [1]), ("nope", 0, [1])),
        tp.PruningError, "history step 1: 'nope' dim 0 is not a prunable dim of this model"),
    Row("DependencyGraph.load_pruning_history", "positions out of range", _history(("0.weight", 0, [99])),
        tp.PruningError, "history step 0 (0.weight dim 0): indices [99] out of range [0, 8)"),
    Row("DependencyGraph.load_pruning_history", "duplicated positions", _history(("0.weight", 0, [1, 1])),
        tp.PruningError, "history step 0 (0.weight dim 0): duplicated indices in [1, 1]"),
    Row("DependencyGraph.load_pruning_history", "NaN positions", _history(("0.weight", 0, [math.nan])),
        tp.PruningError, "history step 0 (0.weight dim 0): indices must be ints, got nan (float)"),
    Row("DependencyGraph.load_pruning_history", "every position", _history(("0.weight", 0, list(range(8)))),
        tp.PruningError, "Cannot prune all 8 positions of `0.weight` dim 0"),
]


def render_markdown(rows: list[Row]) -> str:
    """``docs/bad_inputs.md``: one table per entry point."""
    lines = [
        "# Bad inputs and what anyprune does with them",
        "",
        "Generated from `tests/bad_input_table.py` (the rows of `tests/test_bad_inputs.py`); regenerate with",
        "`make bad-inputs-doc`. Every call that raises leaves the model exactly as it was (parameters,",
        "buffers, grads and module attributes); `ConfigError` and `PruningError` are `ValueError` s,",
        "`TraceError` and `VerificationError` are `RuntimeError` s.",
    ]
    entries = list(dict.fromkeys(r.entry for r in rows))
    for entry in entries:
        lines += ["", f"## `{entry}`", "", "| bad input | outcome | message contains |", "|---|---|---|"]
        for r in rows:
            if r.entry == entry:
                outcome = "works" if r.error is None else f"`{r.error.__name__}`"
                text = r.message.replace("|", "\\|")
                shown = text if r.error is None else (f"`` {text} ``" if "`" in text else f"`{text}`")
                lines.append(f"| {r.case} | {outcome} | {shown} |")
    lines.append("")
    return "\n".join(lines)
