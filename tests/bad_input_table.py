"""The bad-input table: every public entry point with wrong arguments, and what it must do.

Each :class:`Row` names an entry point, says what is wrong, makes the call on a
fresh :class:`Setup` (a small CNN, its example input and, on first use, its
graph), and states the outcome: the exception type and a fragment of its
message, or ``None`` for "must work" (then ``check`` looks at the result). The
test (``tests/test_bad_inputs.py``) also checks that a failing call leaves the
model exactly as it was. ``docs/bad_inputs.md`` is rendered from ``ROWS`` by
:func:`render_markdown`.

Adding rows for another entry point (e.g. ``pruner.MetaPruner`` with
``pruning_ratio=-0.1``) is adding ``Row`` s to ``ROWS``; ``Setup`` builds what
the call needs lazily.
"""

from __future__ import annotations

import dataclasses
import functools
import math
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


def _mixed_devices() -> Setup:
    s = Setup()
    s.model[3].to("meta")
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

ROWS: list[Row] = [
    # ------------------------------------------------------------ build_dependency
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
