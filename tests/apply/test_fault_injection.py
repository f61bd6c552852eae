"""Fault injection: apply fails at every write it makes, and the model comes back bit for bit.

Every parameter, buffer and attribute write of an apply goes through
:class:`~anyprune.apply.transaction.Transaction` (``set_data``, ``set_attr``,
and ``snapshot_module`` before a customized pruner runs). :class:`Injector`
makes the k-th of those calls raise, either before it takes effect or right
after, for k = 0, 1, 2, ... until the prune gets through. After each failure
the model must equal its snapshot: same Parameter and buffer objects, same
values, dtypes, shapes and ``.grad`` s, same module attributes, same
``state_dict``. The prune that finally gets through must give a working model.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable

import pytest
import torch
import torchvision
from torch import nn

import anyprune as tp
from anyprune.apply.transaction import Transaction
from anyprune.testing.models import TOY_MODELS
from tests.helpers import STATS
from tests.test_functional import TARGET_IDS, TARGETS
from tests.test_layers_and_custom import Scale, ScalePruner, custom_model

SIMPLE = (int, float, bool, str, tuple, list, type(None), torch.Size)


class Injected(RuntimeError):
    pass


class Injector:
    """Wraps the Transaction's write methods; the ``fail_at``-th write raises ``Injected``."""

    METHODS = ("set_data", "set_attr", "snapshot_module")

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.fail_at: int | None = None
        self.after = False
        self.count = 0
        for name in self.METHODS:
            monkeypatch.setattr(Transaction, name, self._wrap(getattr(Transaction, name)))

    def _wrap(self, real: Callable) -> Callable:
        def write(tx, *args, **kwargs):
            k = self.count
            self.count += 1
            if k == self.fail_at and not self.after:
                raise Injected(f"before write {k}")
            out = real(tx, *args, **kwargs)
            if k == self.fail_at and self.after:
                raise Injected(f"after write {k}")
            return out

        return write

    @contextlib.contextmanager
    def arm(self, fail_at: int | None, after: bool):
        self.fail_at, self.after, self.count = fail_at, after, 0
        try:
            yield
        finally:
            self.fail_at = None


def snapshot(model: nn.Module) -> dict:
    tensors = {}
    for mname, m in model.named_modules():
        for slot in ("_parameters", "_buffers"):
            for n, t in getattr(m, slot).items():
                if t is not None:
                    grad = None if t.grad is None else t.grad.detach().clone()
                    tensors[f"{mname}.{n}"] = (t, t.detach().clone(), t.dtype, tuple(t.shape), grad)
    attrs = {f"{mname}:{k}": (v.clone() if isinstance(v, torch.Tensor) else v)
             for mname, m in model.named_modules() for k, v in vars(m).items()
             if isinstance(v, SIMPLE) and not k.startswith("__")}
    return {"tensors": tensors, "attrs": attrs,
            "state_dict": {k: (v.dtype, tuple(v.shape)) for k, v in model.state_dict().items()},
            "configs": configs_of(model)}


def configs_of(model: nn.Module) -> dict[str, tuple[int, dict]]:
    """``{module name: (id of its config object, config.to_dict())}`` for modules holding a (Hugging Face) config."""
    out = {}
    for mname, m in model.named_modules():
        cfg = vars(m).get("config")
        if cfg is not None and hasattr(cfg, "to_dict"):
            out[mname] = (id(cfg), copy.deepcopy(cfg.to_dict()))
    return out


def assert_restored(model: nn.Module, snap: dict, where: str) -> None:
    now = {}
    for mname, m in model.named_modules():
        for slot in ("_parameters", "_buffers"):
            now.update((f"{mname}.{n}", t) for n, t in getattr(m, slot).items() if t is not None)
    assert now.keys() == snap["tensors"].keys(), f"{where}: tensor slots changed"
    for name, (t, data, dtype, shape, grad) in snap["tensors"].items():
        assert now[name] is t, f"{where}: {name} was replaced by another object"
        assert t.dtype == dtype, f"{where}: {name} dtype {t.dtype} != {dtype}"
        assert tuple(t.shape) == shape, f"{where}: {name} shape {tuple(t.shape)} != {shape}"
        assert torch.equal(t.detach(), data), f"{where}: {name} values changed"
        if grad is None:
            assert t.grad is None, f"{where}: {name} got a grad"
        else:
            assert t.grad is not None, f"{where}: {name} lost its grad"
            assert t.grad.shape == grad.shape, f"{where}: {name}.grad shape changed"
            assert torch.equal(t.grad, grad), f"{where}: {name}.grad changed"
    attrs = {f"{mname}:{k}": v for mname, m in model.named_modules() for k, v in vars(m).items()
             if isinstance(v, SIMPLE) and not k.startswith("__")}
    assert attrs == snap["attrs"], f"{where}: attributes changed: " + str(
        {k: (snap["attrs"].get(k), attrs.get(k)) for k in attrs.keys() | snap["attrs"].keys()
         if attrs.get(k) != snap["attrs"].get(k)})
    # the state_dict holds the tensors checked above; its keys, dtypes and shapes must be the same too
    sd = model.state_dict()
    assert sd.keys() == snap["state_dict"].keys(), f"{where}: state_dict keys changed"
    for k, (dtype, shape) in snap["state_dict"].items():
        assert (sd[k].dtype, tuple(sd[k].shape)) == (dtype, shape), f"{where}: state_dict[{k}] changed"
    configs = configs_of(model)
    assert configs.keys() == snap["configs"].keys(), f"{where}: modules with a config changed"
    for mname, (ident, fields) in snap["configs"].items():
        assert configs[mname][0] == ident, f"{where}: the config object of {mname!r} was replaced"
        changed = {k: (fields.get(k), configs[mname][1].get(k)) for k in fields.keys() | configs[mname][1].keys()
                   if fields.get(k) != configs[mname][1].get(k)}
        assert not changed, f"{where}: config fields of {mname!r} changed: {changed}"


def give_grads(model: nn.Module) -> None:
    gen = torch.Generator().manual_seed(7)
    for p in model.parameters():
        p.grad = torch.randn(p.shape, generator=gen, dtype=p.dtype)


def sweep(injector: Injector, model: nn.Module, prune: Callable[[], object], where: str,
          expected: type[BaseException] = Injected) -> int:
    """Fail ``prune()`` before and after each of its writes in turn; returns the number of failure points."""
    snap = snapshot(model)
    points = 0
    k = 0
    while True:
        for after in (False, True):
            with injector.arm(k, after):
                try:
                    prune()
                except expected:
                    points += 1
                    assert_restored(model, snap, f"{where}, failing {'after' if after else 'before'} write {k}")
                    continue
            assert not after, f"{where}: write {k} happened, but failing after it did not stop the prune"
            assert k > 0, f"{where}: the prune made no write"
            assert injector.count == k, f"{where}: {injector.count} writes, but failing at write {k} did nothing"
            STATS["fault_points"] += points
            STATS["fault_restored"] += points
            return points
        k += 1


def sweep_graph(injector: Injector, model: nn.Module, x, name: str, max_groups: int | None = None) -> int:
    model.eval()
    give_grads(model)
    with torch.no_grad():
        shapes = [tuple(model(x).shape)] if isinstance(model(x), torch.Tensor) else None
    dg = tp.DependencyGraph().build_dependency(model, x)
    groups = dg.groups(root_module_types=None)
    if max_groups is not None and len(groups) > max_groups:
        step = len(groups) / max_groups
        groups = [groups[int(i * step)] for i in range(max_groups)]
    assert groups, f"{name}: no group to prune"
    total = 0
    for g in groups:
        idxs = list(range(0, g.size, 2))[: g.size - 1]
        total += sweep(injector, model, lambda g=g, idxs=idxs: g.prune(idxs=idxs), f"{name} {g.root.fqn}")
        dg.lint()
    with torch.no_grad():
        out = model(x)
    if shapes is not None:
        assert [tuple(out.shape)] == shapes, f"{name}: output shapes changed"
    STATS["fault_models"] += 1
    return total


@pytest.mark.parametrize("name", list(TOY_MODELS))
def test_every_write_of_every_group_of_toy_models(monkeypatch, name):
    cls, shape = TOY_MODELS[name]
    injector = Injector(monkeypatch)
    points = sweep_graph(injector, cls(), torch.randn(*shape), name)
    assert points >= 4, f"{name}: only {points} failure points"


@pytest.mark.slow
@pytest.mark.parametrize(("name", "size", "max_groups"), [
    ("resnet18", 32, 4),
    ("mobilenet_v3_small", 32, 4),
    ("shufflenet_v2_x0_5", 32, 4),
])
def test_every_write_on_torchvision_models(monkeypatch, name, size, max_groups):
    model = getattr(torchvision.models, name)()
    injector = Injector(monkeypatch)
    points = sweep_graph(injector, model, torch.randn(1, 3, size, size), name, max_groups=max_groups)
    assert points >= 10 * max_groups, f"{name}: only {points} failure points"


@pytest.mark.parametrize(("fn_name", "make", "size"), TARGETS, ids=TARGET_IDS)
def test_every_write_of_the_pruning_functions(monkeypatch, fn_name, make, size):
    layer = make()
    if isinstance(layer, nn.Module):
        give_grads(layer)
        holder: nn.Module = layer
    else:
        layer.grad = torch.randn_like(layer)
        holder = nn.Module()
        holder.register_parameter("p", layer)
    injector = Injector(monkeypatch)
    fn = getattr(tp, fn_name)
    points = sweep(injector, holder, lambda: fn(layer, [1, 3]), fn_name)
    assert points >= 2


class FailingScalePruner(ScalePruner):
    """A user's pruner that raises at ``stage`` after changing what came before it."""

    def __init__(self, stage: str) -> None:
        super().__init__()
        self.stage = stage

    def prune_out_channels(self, layer, idxs):
        if self.stage == "start":
            raise Injected("pruner failed at start")
        keep = [i for i in range(layer.w.shape[0]) if i not in idxs]
        layer.w.data = layer.w.data[keep]
        if self.stage == "data":
            raise Injected("pruner failed after slicing data")
        layer.w = nn.Parameter(layer.w.data.clone())  # a new Parameter object
        layer.register_buffer("count", torch.tensor(len(keep)))
        if self.stage == "new_param":
            raise Injected("pruner failed after replacing the parameter")
        layer.n = len(keep)
        raise Injected("pruner failed after setting an attribute")

    prune_in_channels = prune_out_channels


@pytest.mark.parametrize("stage", ["start", "data", "new_param", "attr"])
def test_customized_pruner_that_raises_restores_the_model(monkeypatch, stage):
    model = custom_model()
    give_grads(model)
    x = torch.randn(1, 3, 4, 4, dtype=torch.float64)
    dg = tp.DependencyGraph().build_dependency(model, x, customized_pruners={Scale: FailingScalePruner(stage)})
    snap = snapshot(model)
    group = dg.get_pruning_group(model[0], tp.prune_conv_out_channels, idxs=[1, 4])
    with pytest.raises(Injected, match="pruner failed"):
        group.prune()
    assert_restored(model, snap, f"pruner failing at {stage}")
    STATS["fault_points"] += 1
    STATS["fault_restored"] += 1


def test_customized_pruner_model_at_every_write(monkeypatch):
    model = custom_model()
    give_grads(model)
    x = torch.randn(1, 3, 4, 4, dtype=torch.float64)
    dg = tp.DependencyGraph().build_dependency(model, x, customized_pruners={Scale: ScalePruner()})
    injector = Injector(monkeypatch)
    group = dg.get_pruning_group(model[0], tp.prune_conv_out_channels, idxs=[1, 4])
    points = sweep(injector, model, group.prune, "customized pruner model")
    assert points >= 4
    assert model[1].w.shape == (4,)
    assert model(x).shape == (1, 2, 4, 4)
