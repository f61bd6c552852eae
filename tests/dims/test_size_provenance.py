"""Sizes that code passes to shape ops: read from a tensor (they follow it), or constants/attributes (they pin).

Every module below takes the sizes of its ``view``/``reshape`` calls from a different place. For every
group the graph offers, pruning it must give a model that runs and, for exact groups, equals the masked
model; what cannot be pruned must be pinned with a reason.
"""

from __future__ import annotations

import copy
import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import anyprune as tp
from anyprune.apply.verify import verify_group
from anyprune.trace.sizes import TracedSize, evaluate

DIM, HEADS = 12, 3


def _check_every_group(model: nn.Module, x: torch.Tensor) -> list:
    """Prune each offered group (a third of it, at least one index) on a copy; all must run, exact ones match."""
    model = model.double().eval()
    x = x.double()
    dg = tp.DependencyGraph().build_dependency(model, x)
    groups = list(dg.get_all_groups())
    for k in range(len(groups)):
        m = copy.deepcopy(model)
        g = list(tp.DependencyGraph().build_dependency(m, x).get_all_groups())[k]
        idxs = list(range(max(1, g.size // 3)))
        res = verify_group(g._owner, g, idxs, x)
        assert res.ok, f"group {k} ({g.root}) broke the model: {res.details}"
        m(x)  # runs on the real values too
    return groups


class Mixer(nn.Module):
    """qkv-style token mixer: ``split`` says how the projection is viewed as heads x head_dim, ``merge``
    how it is flattened back."""

    def __init__(self, split: str, merge: str) -> None:
        super().__init__()
        self.split, self.merge = split, merge
        self.num_heads, self.head_dim, self.dim = HEADS, DIM // HEADS, DIM
        self.proj = nn.Linear(DIM, DIM)
        self.out = nn.Linear(DIM, DIM)

    def forward(self, x):
        B, N, C = x.shape
        y = self.proj(x)
        Cy = y.shape[-1]
        shapes = {
            "neg1_heads": (B, N, -1, self.head_dim),
            "neg1_dim": (B, N, self.num_heads, -1),
            "attrs": (B, N, self.num_heads, self.head_dim),
            "literals": (B, N, HEADS, DIM // HEADS),
            "from_own_shape": (B, N, self.num_heads, Cy // self.num_heads),
            "from_input_shape": (B, N, self.num_heads, C // self.num_heads),
        }
        h = y.view(*shapes[self.split]).transpose(1, 2)
        h = torch.relu(h) * 2.0
        h = h.transpose(1, 2)
        if self.merge == "neg1":
            z = h.reshape(B, N, -1)
        elif self.merge == "flatten":
            z = h.flatten(2)
        elif self.merge == "own_shape":
            z = h.reshape(B, N, Cy)
        elif self.merge == "input_shape":
            z = h.reshape(B, N, C)
        elif self.merge == "attr":
            z = h.reshape(B, N, self.dim)
        elif self.merge == "product":
            z = h.reshape(B, N, h.shape[-2] * h.shape[-1])
        else:
            z = h.reshape(B, N, DIM)
        return self.out(z) + x


SPLITS = ["neg1_heads", "neg1_dim", "attrs", "literals", "from_own_shape", "from_input_shape"]
MERGES = ["neg1", "flatten", "own_shape", "input_shape", "attr", "product", "literal"]


@pytest.mark.parametrize(("split", "merge"), list(itertools.product(SPLITS, MERGES)))
def test_every_offered_group_of_a_token_mixer_is_prunable(split, merge):
    model = nn.Sequential(nn.Linear(5, DIM), Mixer(split, merge))
    groups = _check_every_group(model, torch.randn(2, 4, 5))
    offered = {(s.fqn, s.dim) for g in groups for s in g.slices if s.fqn == "1.proj.weight"}
    follows = merge in ("neg1", "flatten", "own_shape", "product")
    # the heads (or head_dim) factor whose size the code derives is offered exactly when the merge follows it
    expect_proj = follows and split in ("neg1_heads", "neg1_dim", "from_own_shape")
    assert (("1.proj.weight", 0) in offered) == expect_proj, (split, merge, offered)


def test_the_issue_example_pins_what_would_break_and_names_why():
    class A(nn.Module):
        def __init__(s, dim=16, h=2):
            super().__init__()
            s.num_heads, s.head_dim = h, dim // h
            s.qkv, s.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)

        def forward(s, x):
            B, N, C = x.shape
            q, k, v = s.qkv(x).reshape(B, N, 3, s.num_heads, s.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
            return s.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, N, C))

    m = nn.Sequential(nn.Linear(8, 16), A()).eval()
    x = torch.randn(1, 5, 8)
    dg = tp.DependencyGraph().build_dependency(m, x)
    assert list(dg.get_all_groups()) == []
    with pytest.raises(tp.PruningError, match="computes from a tensor's shape would not follow"):
        dg.get_pruning_group(m[0], tp.prune_linear_out_channels, [0])
    with pytest.raises(tp.PruningError, match="written as a constant"):
        dg.get_pruning_group(m[1].qkv, tp.prune_linear_out_channels, [0])
    assert m(x).shape == (1, 5, 16)


def test_a_flatten_written_with_literal_sizes_pins_the_channels():
    class LeNetish(nn.Module):
        def __init__(self, literal: bool):
            super().__init__()
            self.literal = literal
            self.conv = nn.Conv2d(1, 4, 3)
            self.fc = nn.Linear(4 * 3 * 3, 5)

        def forward(self, x):
            y = F.relu(self.conv(x))
            y = y.view(-1, 4 * 3 * 3) if self.literal else y.view(y.size(0), -1)
            return self.fc(y)

    x = torch.randn(2, 1, 5, 5)
    assert _check_every_group(LeNetish(literal=True), x) == []
    (g,) = _check_every_group(LeNetish(literal=False), x)
    assert g.size == 4


def test_a_literal_size_on_a_dim_that_passes_through_pins_it():
    class Through(nn.Module):
        def __init__(self, literal: bool):
            super().__init__()
            self.literal = literal
            self.a, self.b = nn.Conv2d(3, 6, 1), nn.Conv2d(6, 2, 1)

        def forward(self, x):
            y = self.a(x)
            n, c, h, w = y.shape
            y = y.reshape(n, 6 if self.literal else c, h * w).reshape(n, -1, h, w)
            return self.b(y)

    x = torch.randn(1, 3, 4, 4)
    assert _check_every_group(Through(literal=True), x) == []
    assert [g.size for g in _check_every_group(Through(literal=False), x)] == [6]


def test_a_parameter_viewed_with_a_stored_shape_is_pinned():
    class Scale(nn.Module):  # poolformer-style: the shape is kept in an attribute
        def __init__(self, dim):
            super().__init__()
            self.shape = (dim, 1, 1)
            self.scale = nn.Parameter(torch.rand(dim))

        def forward(self, x):
            return x * self.scale.view(self.shape)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.s, self.b = nn.Conv2d(3, 6, 1), Scale(6), nn.Conv2d(6, 2, 1)

        def forward(self, x):
            return self.b(self.s(self.a(x)))

    assert _check_every_group(Net(), torch.randn(1, 3, 4, 4)) == []


def test_a_computed_weight_reshaped_with_an_attribute_is_pinned():
    class StdConv(nn.Conv2d):  # weight standardisation, reshaped with self.out_channels
        def forward(self, x):
            w = self.weight.reshape(self.out_channels, -1)
            w = (w - w.mean(1, keepdim=True)) / (w.std(1, keepdim=True) + 1e-5)
            return F.conv2d(x, w.reshape_as(self.weight), self.bias, self.stride, self.padding)

    model = nn.Sequential(StdConv(3, 6, 3), nn.ReLU(), nn.Conv2d(6, 2, 1))
    assert _check_every_group(model, torch.randn(1, 3, 6, 6)) == []  # its output channels sized the reshape
    dg = tp.DependencyGraph().build_dependency(model, torch.randn(1, 3, 6, 6, dtype=torch.float64))
    with pytest.raises(tp.PruningError, match="written as a constant"):
        dg.get_pruning_group(model[0], tp.prune_conv_out_channels, idxs=[0])


def test_sizes_read_in_a_trace_carry_their_expression():
    seen = {}

    class Probe(nn.Module):
        def forward(self, x):
            B, N, C = x.shape
            seen["c"] = C // 2 + x.size(1) * 3 - x.size(-1) % 5
            seen["numel"] = x.numel()
            seen["plain"] = int(C) // 2
            return x.reshape(B, N, 2, -1)

    tp.DependencyGraph().build_dependency(Probe(), torch.randn(2, 3, 8))
    c, numel, plain = seen["c"], seen["numel"], seen["plain"]
    assert isinstance(c, TracedSize)
    assert isinstance(numel, TracedSize)
    assert not isinstance(plain, TracedSize)
    assert c == 8 // 2 + 3 * 3 - 8 % 5
    assert numel == 48
    sizes = {0: 2, 1: 5, 2: 10}
    assert evaluate(c._anyprune_expr, lambda v, d: sizes[d]) == 10 // 2 + 5 * 3 - 10 % 5
    assert evaluate(numel._anyprune_expr, lambda v, d: sizes[d]) == 100
    assert copy.deepcopy(c) == c
    assert type(copy.deepcopy(c)) is int


class Halves(nn.Module):
    """GLU / rotate_half: a projection cut into halves, with the cut written in several ways."""

    def __init__(self, how: str) -> None:
        super().__init__()
        self.how = how
        self.up, self.down = nn.Linear(4, 12), nn.Linear(6, 4)

    def forward(self, x):
        y = self.up(x)
        h = y.shape[-1] // 2
        if self.how == "split_traced":
            a, b = y.split(h, -1)
        elif self.how == "split_literal":
            a, b = y.split(6, -1)
        elif self.how == "sections_traced":
            a, b = y.split([h, y.shape[-1] - h], -1)
        elif self.how == "slice_traced":
            a, b = y[..., :h], y[..., h:]
        elif self.how == "slice_literal":
            a, b = y[..., :6], y[..., 6:]
        else:
            a, b = y.chunk(2, -1)
        return self.down(a * torch.sigmoid(b))


@pytest.mark.parametrize(("how", "prunable"), [("split_traced", True), ("split_literal", False),
                                               ("sections_traced", True), ("slice_traced", True),
                                               ("slice_literal", False), ("chunk", True)])
def test_halves_follow_only_when_the_cut_is_computed_from_the_shape(how, prunable):
    groups = _check_every_group(Halves(how), torch.randn(3, 4))
    assert [g.size for g in groups] == ([6] if prunable else [])


def test_an_expand_size_read_from_a_shape_follows_the_heads_it_is_unified_with():
    class RepeatKV(nn.Module):  # k/v heads repeated to the query's head count, read from q's shape
        def __init__(self) -> None:
            super().__init__()
            self.q, self.k, self.o = nn.Linear(8, 16), nn.Linear(8, 8), nn.Linear(16, 8)

        def forward(self, x):
            b, n, _ = x.shape
            q = self.q(x).view(b, n, -1, 4).transpose(1, 2)
            k = self.k(x).view(b, n, -1, 4).transpose(1, 2)
            rep = q.shape[1] // k.shape[1]
            k = k[:, :, None].expand(b, k.shape[1], rep, n, 4).reshape(b, -1, n, 4)
            return self.o((q * k).transpose(1, 2).reshape(b, n, -1))

    groups = _check_every_group(RepeatKV(), torch.randn(2, 3, 8))
    assert groups, "the kv heads (with their query heads) should stay prunable"


@pytest.mark.parametrize(("how", "exact"), [("tensor", False), ("power", False), ("attribute", True)])
def test_a_size_used_as_a_value_makes_its_dim_approximate(how, exact):
    class Scaled(nn.Module):  # DeBERTa computes its scale from the tensor's size
        def __init__(self) -> None:
            super().__init__()
            self.q, self.k, self.v, self.o = (nn.Linear(8, 8) for _ in range(4))
            self.head_dim = 4

        def forward(self, x):
            b, n, _ = x.shape
            q, k, v = (p(x).view(b, n, 2, -1).transpose(1, 2) for p in (self.q, self.k, self.v))
            if how == "tensor":
                scale = torch.sqrt(torch.tensor(q.size(-1), dtype=torch.float))
            elif how == "power":
                scale = q.size(-1) ** 0.5
            else:
                scale = self.head_dim ** 0.5
            attn = torch.softmax(q @ k.transpose(-1, -2) / scale, -1) @ v
            return self.o(attn.transpose(1, 2).reshape(b, n, -1))

    groups = _check_every_group(Scaled(), torch.randn(1, 3, 8))
    qk = [g for g in groups if any(s.fqn == "q.weight" for s in g.slices) and g.size == 4]
    v = [g for g in groups if any(s.fqn == "v.weight" for s in g.slices) and g.size == 4]
    assert [g.exact for g in qk] == [exact]
    assert [g.exact for g in v] == [True]
