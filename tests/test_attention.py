"""Attention building blocks: SDPA (with grouped-query attention), einsum, nn.MultiheadAttention, gathers,
attribute updaters (the public hook), and attention code with an op that has no rule."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import anyprune as tp
from anyprune.errors import PinnedDimWarning, UnsupportedOpWarning
from tests.helpers import assert_same_state, state


class GQA(nn.Module):
    """q has 8 heads, k/v 2 (repeat factor 4); head_dim 4 written as a literal; explicit scale."""

    def __init__(self, dim=16, heads=8, kv=2, head_dim=4, scale=0.5, gqa="sdpa"):
        super().__init__()
        self.q = nn.Linear(dim, heads * head_dim)
        self.k = nn.Linear(dim, kv * head_dim)
        self.v = nn.Linear(dim, kv * head_dim)
        self.o = nn.Linear(heads * head_dim, dim)
        self.head_dim, self.n_rep, self.scale, self.gqa = head_dim, heads // kv, scale, gqa

    def forward(self, x):
        b, n, _ = x.shape
        q = self.q(x).view(b, n, -1, self.head_dim).transpose(1, 2)
        k = self.k(x).view(b, n, -1, self.head_dim).transpose(1, 2)
        v = self.v(x).view(b, n, -1, self.head_dim).transpose(1, 2)
        if self.gqa == "sdpa":
            y = F.scaled_dot_product_attention(q, k, v, scale=self.scale, enable_gqa=True)
        else:  # repeat_kv: expand + reshape, then plain SDPA
            kb, kh = k.shape[:2]
            k = k[:, :, None].expand(kb, kh, self.n_rep, n, self.head_dim).reshape(kb, kh * self.n_rep, n, -1)
            v = v[:, :, None].expand(kb, kh, self.n_rep, n, self.head_dim).reshape(kb, kh * self.n_rep, n, -1)
            y = F.scaled_dot_product_attention(q, k, v, scale=self.scale)
        return self.o(y.transpose(1, 2).reshape(b, n, -1))


def _gqa_updater(module, sizes):
    *_, head_dim = sizes.factors("o.weight", 1)
    heads = sizes.size("o.weight", 1) // head_dim
    kv = sizes.size("k.weight", 0) // head_dim
    return {"head_dim": head_dim, "n_rep": heads // kv}


@pytest.fixture
def gqa_updater():
    tp.register_module_updater(GQA, _gqa_updater)
    yield
    tp.unregister_module_updater(GQA)


def _per_unit(dg, g, fqn, dim):
    for s in g.slices:
        if getattr(s, "fqn", None) == fqn and s.dim == dim:
            return int((dg.dims.atoms.index_of(s.layout, g.atoms[0]) == 0).sum())
    return 0


def _oracle_all(model, x, dg=None):
    model = model.double().eval()
    x = x.double()
    dg = dg or tp.DependencyGraph().build_dependency(model, x)
    gen = torch.Generator().manual_seed(0)
    checked = 0
    for g in dg.groups(root_module_types=None):
        k = max(1, g.size // 3)
        if k >= g.size:
            continue
        res = tp.verify_group(dg, g, idxs=torch.randperm(g.size, generator=gen)[:k].tolist(), example_inputs=x,
                              atol=1e-10, rtol=1e-9)
        assert res.shapes_match
        if res.exact:
            assert res.ok, res.details
            checked += 1
    return checked


@pytest.mark.parametrize("gqa", ["sdpa", "repeat_kv"])
def test_gqa_kv_groups_and_query_heads_per_kv(gqa, gqa_updater):
    model = GQA(gqa=gqa).eval()
    x = torch.randn(2, 5, 16)
    dg = tp.DependencyGraph().build_dependency(model, x)
    found = {(g.size, _per_unit(dg, g, "q.weight", 0), _per_unit(dg, g, "k.weight", 0)) for g in dg.groups()}
    # 2 KV groups (each: its k rows and its 4 query heads), 4 query heads per KV head (no k rows), head_dim 4
    assert (2, 16, 4) in found
    assert (4, 8, 0) in found
    assert (4, 8, 2) in found
    assert _oracle_all(GQA(gqa=gqa), x) >= 3


def test_gqa_prune_updates_attributes_and_runs_on_new_shapes(gqa_updater):
    model = GQA(gqa="repeat_kv").eval()
    dg = tp.DependencyGraph().build_dependency(model, torch.randn(1, 3, 16))
    rep = next(g for g in dg.groups() if (g.size, _per_unit(dg, g, "k.weight", 0)) == (4, 0))
    rep.prune(idxs=[0, 1])
    hd = next(g for g in dg.groups() if _per_unit(dg, g, "k.weight", 0) == 2)
    hd.prune(idxs=[3])
    assert (model.n_rep, model.head_dim) == (2, 3)
    assert model.q.out_features == 2 * 2 * 3
    assert model(torch.randn(4, 7, 16)).shape == (4, 7, 16)


def test_literal_head_dim_is_pinned_without_updater():
    model = GQA().eval()
    dg = tp.DependencyGraph().build_dependency(model, torch.randn(1, 3, 16))
    sizes = sorted(g.size for g in dg.groups())
    assert sizes == [2, 4]  # KV groups and query heads per KV head; head_dim (a literal) stays pinned
    table = dg.dims.atoms
    q_rows = next(s for s in dg.index.slices if getattr(s, "fqn", "") == "q.weight" and s.dim == 0)
    pins = [table.pin_reason(a) for a in table.atoms(q_rows.layout) if table.pin_reason(a)]
    assert any("written as a constant" in p for p in pins)


def test_updater_that_disagrees_is_not_trusted():
    def wrong(module, sizes):
        return {"head_dim": 5}

    tp.register_module_updater(GQA, wrong)
    try:
        with pytest.warns(PinnedDimWarning, match="does not fit"):
            dg = tp.DependencyGraph().build_dependency(GQA().eval(), torch.randn(1, 3, 16))
    finally:
        tp.unregister_module_updater(GQA)
    assert sorted(g.size for g in dg.groups()) == [2, 4]


def test_failing_updater_rolls_back_everything():
    calls = []

    def flaky(module, sizes):
        calls.append(1)
        if len(calls) > 1:
            raise RuntimeError("updater failed")
        return _gqa_updater(module, sizes)

    tp.register_module_updater(GQA, flaky)
    try:
        model = GQA(gqa="repeat_kv").eval()
        # no trial at build: it would call the updater (and pin the group when the updater fails)
        dg = tp.DependencyGraph().build_dependency(model, torch.randn(1, 3, 16), check_groups=False)
        before = state(model)
        attrs = dict(model.__dict__)
        g = next(g for g in dg.groups() if g.size == 4)
        with pytest.raises(RuntimeError, match="updater failed"):
            g.prune(idxs=[0])
        assert_same_state(before, state(model))
        assert {k: v for k, v in model.__dict__.items() if not k.startswith("_")} == \
            {k: v for k, v in attrs.items() if not k.startswith("_")}
        assert model.q.out_features == 32
    finally:
        tp.unregister_module_updater(GQA)


def test_default_sdpa_scale_makes_head_dim_approximate():
    class Plain(nn.Module):
        def __init__(self):
            super().__init__()
            self.q, self.k, self.v, self.o = (nn.Linear(8, 8) for _ in range(4))

        def forward(self, x):
            b, n, _ = x.shape
            q, k, v = (p(x).view(b, n, 2, -1).transpose(1, 2) for p in (self.q, self.k, self.v))
            return self.o(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, -1))

    dg = tp.DependencyGraph().build_dependency(Plain(), torch.randn(1, 3, 8))
    head_dim = next(g for g in dg.groups() if _per_unit(dg, g, "q.weight", 0) == 2 and g.size == 4)
    assert not head_dim.exact  # q/k head_dim: the default scale changes; v's head_dim stays exact
    assert next(g for g in dg.groups() if _per_unit(dg, g, "v.weight", 0) == 2 and g.size == 4).exact
    assert any("1/sqrt(head_dim)" in r for r in head_dim.mixing_reasons)


def test_einsum_attention_is_exact():
    class EinsumAttn(nn.Module):
        def __init__(self):
            super().__init__()
            self.qkv = nn.Linear(12, 36)
            self.o = nn.Linear(12, 12)

        def forward(self, x):
            q, k, v = self.qkv(x).chunk(3, dim=-1)
            a = torch.einsum("bid,bjd->bij", q, k).softmax(-1)
            return self.o(torch.einsum("bij,bjd->bid", a, v))

    x = torch.randn(2, 5, 12)
    dg = tp.DependencyGraph().build_dependency(EinsumAttn().eval(), x)
    assert sorted(g.size for g in dg.groups()) == [12]  # q/k/v chunks stay equal: one group of 12
    assert _oracle_all(EinsumAttn(), x) == 1


def test_einsum_implicit_output_and_ellipsis():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(4, 6), nn.Linear(6, 3)
            self.scale = nn.Parameter(torch.rand(6))

        def forward(self, x):
            h = torch.relu(self.a(x))
            return self.b(torch.einsum("...i,i->...i", h, self.scale))

    x = torch.randn(2, 4)
    dg = tp.DependencyGraph().build_dependency(M(), x)
    assert [g.size for g in dg.groups()] == [6]
    assert any(getattr(s, "fqn", "") == "scale" for s in dg.groups()[0].slices)
    assert _oracle_all(M(), x) == 1


def test_multihead_attention_heads_and_attributes():
    model = nn.Sequential(nn.MultiheadAttention(16, 4, batch_first=True)).eval()

    def fwd(m, x):
        return m[0](x, x, x, need_weights=False)[0]

    x = torch.randn(2, 5, 16)
    dg = tp.DependencyGraph().build_dependency(model, x, forward_fn=fwd)
    groups = dg.groups(root_module_types=None)
    assert sorted(g.size for g in groups) == []  # the embed dim reaches the output: pinned
    model = nn.Sequential(nn.Linear(16, 16), nn.MultiheadAttention(16, 4, batch_first=True), nn.Linear(16, 3))

    def fwd2(m, x):
        h = m[0](x)
        return m[2](m[1](h, h, h, need_weights=False)[0])

    model.eval()
    dg = tp.DependencyGraph().build_dependency(model, x, forward_fn=fwd2)
    by_size = {g.size: g for g in dg.groups(root_module_types=None)}
    assert set(by_size) == {4}  # 4 heads x 4 head positions: both factors of the embed dim
    heads = next(g for g in dg.groups(root_module_types=None)
                 if _per_unit(dg, g, "1.out_proj.weight", 1) == 4 and g.exact)
    heads.prune(idxs=[1])
    mha = model[1]
    assert (mha.embed_dim, mha.num_heads, mha.head_dim) == (12, 3, 4)
    assert mha.in_proj_weight.shape == (36, 12)
    assert fwd2(model, torch.randn(3, 7, 16)).shape == (3, 7, 3)


def test_bias_table_gathered_by_a_buffer_follows_heads():
    class RelBias(nn.Module):
        def __init__(self):
            super().__init__()
            self.qk = nn.Linear(8, 16)
            self.table = nn.Parameter(torch.randn(7, 2))
            self.register_buffer("index", torch.randint(0, 7, (4, 4)))

        def forward(self, x):
            b, n, _ = x.shape
            q, k = self.qk(x).view(b, n, 2, 2, -1).permute(2, 0, 3, 1, 4)
            bias = self.table[self.index].permute(2, 0, 1)  # (heads, n, n)
            return (q @ k.transpose(-1, -2) + bias).sum(-1)

    dg = tp.DependencyGraph().build_dependency(RelBias(), torch.randn(1, 4, 8))
    table_heads = [g for g in dg.groups(root_module_types=None)
                   if any(getattr(s, "fqn", "") == "table" and s.dim == 1 for s in g.slices)]
    assert table_heads == []  # heads reach the output here; the table's column is coupled to them
    table_col = next(s for s in dg.index.slices if getattr(s, "fqn", "") == "table" and s.dim == 1)
    qk_rows = next(s for s in dg.index.slices if getattr(s, "fqn", "") == "qk.weight" and s.dim == 0)
    atoms = dg.dims.atoms
    assert set(atoms.atoms(table_col.layout)) <= set(atoms.atoms(qk_rows.layout))
    reasons = [atoms.pin_reason(a) for a in atoms.atoms(next(
        s for s in dg.index.slices if getattr(s, "fqn", "") == "table" and s.dim == 0).layout)]
    assert all("gathered by an index tensor" in r for r in reasons)


def test_binary_max_and_empty_slice_couple_like_elementwise():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.c = nn.Linear(4, 6), nn.Linear(4, 6), nn.Linear(6, 2)

        def forward(self, x):
            h = torch.max(self.a(x), self.b(x))
            return self.c(torch.cat([h, h[..., 6:]], dim=-1))

    x = torch.randn(3, 4)
    dg = tp.DependencyGraph().build_dependency(M(), x)
    assert [g.size for g in dg.groups()] == [6]
    assert _oracle_all(M(), x) == 1


def test_attention_with_an_unknown_op_warns_once_and_the_rest_prunes():
    class CdistAttn(nn.Module):
        def __init__(self):
            super().__init__()
            self.q, self.k, self.v = nn.Linear(8, 8), nn.Linear(8, 8), nn.Linear(8, 8)
            self.mlp = nn.Sequential(nn.Linear(8, 32), nn.GELU(), nn.Linear(32, 8))
            self.head = nn.Linear(8, 3)

        def forward(self, x):
            a = (-torch.cdist(self.q(x), self.k(x))).softmax(-1)  # torch.cdist has no dimension rule
            h = x + a @ self.v(x)
            return self.head(h + self.mlp(h))

    model = CdistAttn().eval()
    x = torch.randn(2, 5, 8)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        dg = tp.DependencyGraph().build_dependency(model, x)
    unsupported = [w for w in rec if issubclass(w.category, UnsupportedOpWarning)]
    assert len(unsupported) == 1
    assert "cdist" in str(unsupported[0].message)
    assert "register_dim_rule" in str(unsupported[0].message)
    roots = {g.root.fqn for g in dg.groups()}
    assert "mlp.0.weight" in roots  # the MLP is still prunable
    assert not any(r.startswith(("q.", "k.")) for r in roots)  # what cdist touches is pinned
    for g in dg.groups():
        g.prune(idxs=list(range(g.size // 2)))
    assert model(torch.randn(1, 6, 8)).shape == (1, 6, 3)
    assert model.mlp[0].out_features == 16


def test_graph_verify_reruns_and_names_the_op(gqa_updater):
    model = GQA(gqa="repeat_kv").eval()
    dg = tp.DependencyGraph().build_dependency(model, torch.randn(1, 3, 16))
    g = next(g for g in dg.groups() if g.size == 4)
    g.prune(idxs=[0])
    assert dg.verify() == [(1, 3, 16)]
    assert dg.verify(torch.randn(2, 6, 16)) == [(2, 6, 16)]
    model.n_rep = 4  # a stale attribute: the re-run must name the op that no longer fits
    with pytest.raises(tp.VerificationError, match=r"Tensor\.reshape|F\.scaled_dot_product_attention"):
        dg.verify()
