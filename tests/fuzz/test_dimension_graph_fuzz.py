"""Property: on random valid networks, every group prunes to what the masked model computes.

For each network drawn by :func:`anyprune.testing.fuzz.net_specs`: build the
graph, check its invariants, then prune every group (in a random order, each
by a random non-empty, non-total index set) through the oracle
(:func:`anyprune.verify_group`): exact groups must equal the masked model
(float64, tight tolerance), approximate groups must keep the output shapes.
The graph must stay in step with the model after every prune, and the pruned
network, traced again, must give a graph that passes the same checks.

A second property runs the same checks on token networks that always hold an
attention block (``net_specs(attention=True)``, a quarter as many examples), so
that whole-head and head_dim groups (``Group.structure``) are drawn often; the
end-of-run report counts them.
"""

from __future__ import annotations

import collections
import warnings

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import anyprune as tp
from anyprune.errors import UnsupportedOpWarning
from anyprune.testing.fuzz import (
    HEADS,
    IMAGE_KINDS,
    TOKEN_HEADS,
    TOKEN_KINDS,
    attention_blocks,
    build_net,
    example_input,
    net_specs,
)
from tests.fuzz.conftest import FUZZ_SETTINGS
from tests.helpers import STATS, assert_same_state, state

# ops the strategy uses that have no dimension rule yet: their dims are pinned, never pruned
NO_RULE_YET = {"Tensor.repeat_interleave"}


def build_graph(model, x) -> tp.DependencyGraph:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnsupportedOpWarning)
        dg = tp.DependencyGraph().build_dependency(model, x)
    return dg


def check_invariants(dg: tp.DependencyGraph, spec) -> None:
    """The graph agrees with the model and the trace, and no rule failed."""
    dg.lint()
    dg.dims.lint()
    assert not dg.dims.failed_rules, f"{spec}: dimension rules failed: {dg.dims.failed_rules}"
    assert set(dg.dims.unknown) <= NO_RULE_YET, f"{spec}: ops without a rule: {set(dg.dims.unknown)}"
    for g in dg.groups(root_module_types=None):
        assert g.size >= 2, f"{spec}: group {g!r} cannot be pruned without emptying it"
        assert g.slices, f"{spec}: group {g!r} reaches no parameter"


def check_network(spec, pick_order, pick_indices) -> int:
    """Prune every group of ``spec``'s network through the oracle; returns how many groups were checked.

    ``pick_order(n)`` gives the order in which to visit ``n`` groups, ``pick_indices(size)`` a
    non-empty, non-total set of indices of a group of ``size``.
    """
    model = build_net(spec)
    x = example_input(spec)
    with torch.no_grad():
        shapes = [tuple(t.shape) for t in [model(x)]]
    dg = build_graph(model, x)
    check_invariants(dg, spec)
    groups = dg.groups(root_module_types=None)
    counts = collections.Counter(networks=1, groups_found=len(groups))
    if groups:  # pruning no index changes nothing
        before = state(model)
        groups[0].prune(idxs=[])
        assert_same_state(before, state(model))
    attn = tuple(f"{name}." for name in attention_blocks(model))
    checked = 0
    for k in pick_order(len(groups)):
        g = groups[k]
        structure = g.structure
        in_attention = any(s.fqn.startswith(attn) for s in g.slices) if attn else False
        n = g.size  # groups pruned earlier may have shrunk this one's atoms' neighbours, not its own
        idxs = sorted(pick_indices(n))
        assert 0 < len(idxs) < n
        res = tp.verify_group(dg, g, idxs=idxs, example_inputs=x, atol=1e-9, rtol=1e-7)
        where = f"{spec}: group {k} rooted at {g.root.fqn} dim {g.root.dim}, indices {idxs}"
        assert res.shapes_match, f"{where}: output shapes changed"
        if res.exact:
            assert res.ok, f"{where}: pruned model != masked model ({res.details})"
        assert g.size == n - len(idxs), f"{where}: group size {g.size} after pruning, expected {n - len(idxs)}"
        dg.lint()
        checked += 1
        counts["exact" if res.exact else "approximate"] += 1
        if structure != "channels":  # "heads" / "head_dim": a factor of a product layout
            counts[f"structure:{structure}"] += 1
            if in_attention:
                counts[f"attention:{structure}"] += 1
    counts["groups_checked"] = checked
    with torch.no_grad():
        assert [tuple(t.shape) for t in [model(x)]] == shapes, f"{spec}: output shapes changed"
    rebuilt = build_graph(model, x)
    check_invariants(rebuilt, spec)
    counts["rebuilt"] = 1
    STATS.update(counts)  # only networks checked to the end count (hypothesis may abandon a draw)
    return checked


@FUZZ_SETTINGS
@given(spec=net_specs(), data=st.data())
def test_pruned_equals_masked_on_random_networks(spec, data):
    def order(n: int) -> list[int]:
        return data.draw(st.permutations(range(n)), label="group order")

    def indices(n: int) -> set[int]:
        return data.draw(st.sets(st.integers(0, n - 1), min_size=1, max_size=n - 1), label="indices")

    check_network(spec, order, indices)


ATTENTION_SETTINGS = settings(FUZZ_SETTINGS, max_examples=max(1, FUZZ_SETTINGS.max_examples // 4))


@ATTENTION_SETTINGS
@given(spec=net_specs(attention=True), data=st.data())
def test_attention_groups_prune_to_masked(spec, data):
    """The same property on token networks that always hold an attention block (heads and head_dim groups)."""
    def order(n: int) -> list[int]:
        return data.draw(st.permutations(range(n)), label="group order")

    def indices(n: int) -> set[int]:
        return data.draw(st.sets(st.integers(0, n - 1), min_size=1, max_size=n - 1), label="indices")

    check_network(spec, order, indices)


def test_attention_strategy_yields_head_groups():
    """Whole-head and head_dim groups of attention blocks are drawn, not only plain channels."""
    found: collections.Counter[str] = collections.Counter()

    @settings(max_examples=100, derandomize=True, database=None, deadline=None)
    @given(spec=net_specs(attention=True))
    def collect(spec):
        model = build_net(spec)
        attn = tuple(f"{name}." for name in attention_blocks(model))
        assert attn, f"{spec}: no attention block"
        for g in build_graph(model, example_input(spec)).groups(root_module_types=None):
            if any(s.fqn.startswith(attn) for s in g.slices):
                found[g.structure] += 1

    collect()
    # about one network in five has a whole-head group, most have a head_dim group: far above these floors
    assert found["heads"] >= 5, f"too few whole-head groups in attention blocks: {dict(found)}"
    assert found["head_dim"] >= 25, f"too few head_dim groups in attention blocks: {dict(found)}"


def test_strategy_covers_every_block_and_yields_groups():
    """The strategy draws every block kind, and its networks have a meaningful number of prunable groups."""
    kinds: collections.Counter[str] = collections.Counter()
    n_groups: list[int] = []

    @settings(max_examples=150, derandomize=True, database=None, deadline=None)
    @given(spec=net_specs())
    def collect(spec):
        kinds.update(spec.kinds())
        n_groups.append(len(build_graph(build_net(spec), example_input(spec)).groups(root_module_types=None)))

    collect()
    expected = {f"image:{k}" for k in IMAGE_KINDS} | {f"tokens:{k}" for k in TOKEN_KINDS}
    expected |= {f"head:{h}" for h in HEADS} | {f"token_head:{h}" for h in TOKEN_HEADS}
    expected |= {"attn:matmul", "attn:sdpa"}
    assert expected <= set(kinds), f"never drawn: {sorted(expected - set(kinds))}"
    assert len(n_groups) == 150
    assert sum(n_groups) / len(n_groups) >= 1.5, f"too few prunable groups per network: {n_groups}"
    with_groups = sum(1 for n in n_groups if n > 0)
    assert with_groups >= 0.85 * len(n_groups), f"only {with_groups} of {len(n_groups)} networks have a group"
    assert max(n_groups) >= 5
