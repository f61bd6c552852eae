"""Fault injection in attribute updaters and in the attribute writes of transformer pruning.

Two kinds of failure, each tried at every point a prune reaches:

* an attribute updater (:func:`anyprune.register_module_updater`, and the built-in Hugging Face ones) raises
  on its k-th call, before it computes or after it computed its values (before they are written);
* ``Transaction.set_attr`` raises at its k-th write, before or after the write: module attributes
  (``in_features``, ``head_dim``, ``num_key_value_groups``) and Hugging Face config fields
  (``hidden_size``, ``num_attention_heads``, ...).

After every failure the model must be exactly as before the prune: tensors, grads, module attributes,
``state_dict`` and every config (same object, same ``to_dict()``). The prune that finally gets through must
leave a model that runs and whose config describes its weights.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable

import pytest
import torch
from torch import nn

import anyprune as tp
from anyprune.integrations.registry import UPDATERS, updater_for
from anyprune.testing import zoo_transformers
from tests.apply.test_fault_injection import Injected, Injector, give_grads, sweep
from tests.helpers import STATS


class SetAttrInjector(Injector):
    """Fails the k-th ``Transaction.set_attr`` only; records the attribute names written."""

    METHODS = ("set_attr",)

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        super().__init__(monkeypatch)
        self.written: set[str] = set()

    def _wrap(self, real: Callable) -> Callable:
        write = super()._wrap(real)

        def set_attr(tx, obj, name, value):
            self.written.add(name)
            return write(tx, obj, name, value)

        return set_attr


class UpdaterInjector:
    """Wraps every updater that applies to ``model``: once armed, its ``fail_at``-th call raises ``Injected``.

    Must be created before the graph is built (the graph keeps the updaters it found). Unarmed calls (the
    graph's build-time check of each updater) pass through uncounted.
    """

    def __init__(self, monkeypatch: pytest.MonkeyPatch, model: nn.Module) -> None:
        self.fail_at: int | None = None
        self.after = False
        self.count = 0
        found = {}
        for m in model.modules():
            up = updater_for(m)
            if up is not None:
                found[up.module_type] = up
        for key, up in found.items():
            monkeypatch.setitem(UPDATERS, key, dataclasses.replace(up, update=self._wrap(up.update)))
        self.wrapped = sorted(k if isinstance(k, str) else k.__qualname__ for k in found)

    def _wrap(self, real: Callable) -> Callable:
        def update(module, sizes):
            if self.fail_at is None:
                return real(module, sizes)
            k = self.count
            self.count += 1
            if k == self.fail_at and not self.after:
                raise Injected(f"updater call {k} failed before computing")
            out = real(module, sizes)
            if k == self.fail_at and self.after:
                raise Injected(f"updater call {k} failed after computing {out}")
            return out

        return update

    @contextlib.contextmanager
    def arm(self, fail_at: int | None, after: bool):
        self.fail_at, self.after, self.count = fail_at, after, 0
        try:
            yield
        finally:
            self.fail_at = None


def _sweep_groups(injector, model: nn.Module, dg: tp.DependencyGraph, name: str) -> tuple[int, int]:
    """Sweep every group of ``dg`` in turn (each one pruned once it gets through); ``(groups, points)``."""
    groups = dg.groups(root_module_types=None)
    assert groups, f"{name}: no group to prune"
    points = 0
    for g in groups:
        idxs = list(range(0, g.size, 2))[: g.size - 1]
        points += sweep(injector, model, lambda g=g, idxs=idxs: g.prune(idxs=idxs),
                        f"{name} {getattr(g.root, 'fqn', g.root)} ({g.structure})")
        dg.lint()
    STATS["fault_models"] += 1
    return len(groups), points


# ---------------------------------------------------------------- a user's module with a registered updater
class Heads(nn.Module):
    """Reshapes with two attributes: ``view(..., self.heads, self.head_dim)``."""

    def __init__(self, width: int = 12, heads: int = 4) -> None:
        super().__init__()
        self.proj, self.out = nn.Linear(8, width), nn.Linear(width, 8)
        self.heads, self.head_dim = heads, width // heads

    def forward(self, x):
        h = self.proj(x).view(*x.shape[:-1], self.heads, self.head_dim)
        return x + self.out(torch.relu(h).flatten(-2))


def _heads_updater(module: Heads, sizes) -> dict:
    heads, head_dim = sizes.factors("proj.weight", 0)
    return {"heads": heads, "head_dim": head_dim}


@pytest.fixture
def heads_updater():
    tp.register_module_updater(Heads, _heads_updater)
    yield
    tp.unregister_module_updater(Heads)


def test_user_updater_failing_at_every_call(monkeypatch, heads_updater):
    model = nn.Sequential(Heads(), nn.LayerNorm(8), Heads(16, 2)).double().eval()
    give_grads(model)
    x = torch.randn(3, 8, dtype=torch.float64)
    injector = UpdaterInjector(monkeypatch, model)
    assert injector.wrapped == ["Heads"]
    dg = tp.DependencyGraph().build_dependency(model, x)
    structures = sorted(g.structure for g in dg.groups(root_module_types=None))
    assert structures.count("heads") == 2, f"the updater did not release the head counts: {structures}"
    assert structures.count("head_dim") == 2, f"the updater did not release the head_dims: {structures}"
    n_groups, points = _sweep_groups(injector, model, dg, "Heads model")
    assert points >= 2 * n_groups, f"only {points} failure points over {n_groups} groups"
    assert (model[0].heads, model[0].head_dim, model[2].heads, model[2].head_dim) == (2, 1, 1, 4)
    assert model(x).shape == (3, 8)


# ---------------------------------------------------------------- Hugging Face Llama (GQA)
def _llama():
    pytest.importorskip("transformers")
    model = zoo_transformers.build("hf_llama")
    give_grads(model)
    return model, zoo_transformers.example_inputs("hf_llama")


def _finish_llama(model: nn.Module, x: dict, name: str) -> None:
    from anyprune.integrations.huggingface import config_matches

    with torch.no_grad():
        out = model(**x).logits
    assert out.shape == (1, x["input_ids"].shape[1], model.config.vocab_size), f"{name}: output shape"
    assert config_matches(model), f"{name}: the config does not describe the pruned weights"
    c = model.config
    assert c.num_key_value_heads < 2, f"{name}: KV heads were not pruned ({c})"
    assert c.head_dim < 16, f"{name}: head_dim was not pruned ({c})"


@pytest.fixture
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_llama_updaters_failing_at_every_call(monkeypatch, one_thread):
    model, x = _llama()
    injector = UpdaterInjector(monkeypatch, model)
    assert len(injector.wrapped) >= 2, f"expected the attention and model-level updaters: {injector.wrapped}"
    dg = tp.DependencyGraph().build_dependency(model, x, output_transform=zoo_transformers.output_transform(
        "hf_llama"))
    n_groups, points = _sweep_groups(injector, model, dg, "hf_llama updaters")
    assert points >= 2 * n_groups, f"only {points} failure points over {n_groups} groups"
    _finish_llama(model, x, "hf_llama updaters")


def test_llama_set_attr_failing_at_every_write(monkeypatch, one_thread):
    model, x = _llama()
    injector = SetAttrInjector(monkeypatch)
    dg = tp.DependencyGraph().build_dependency(model, x, output_transform=zoo_transformers.output_transform(
        "hf_llama"))
    structures = {g.structure for g in dg.groups(root_module_types=None)}
    assert structures == {"channels", "heads", "head_dim"}, structures
    n_groups, points = _sweep_groups(injector, model, dg, "hf_llama set_attr")
    expected = {"in_features", "out_features", "head_dim", "num_key_value_groups", "hidden_size",
                "intermediate_size", "num_attention_heads", "num_key_value_heads"}
    assert expected <= injector.written, f"never written: {sorted(expected - injector.written)}"
    assert points >= 4 * n_groups, f"only {points} failure points over {n_groups} groups"
    _finish_llama(model, x, "hf_llama set_attr")


def test_llama_every_write(monkeypatch, one_thread):
    model, x = _llama()
    injector = Injector(monkeypatch)
    dg = tp.DependencyGraph().build_dependency(model, x, output_transform=zoo_transformers.output_transform(
        "hf_llama"))
    n_groups, points = _sweep_groups(injector, model, dg, "hf_llama every write")
    assert points >= 10 * n_groups, f"only {points} failure points over {n_groups} groups"
    _finish_llama(model, x, "hf_llama every write")
