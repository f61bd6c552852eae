"""Rules for recurrent layers, ``F.unfold`` / ``F.fold`` and ``repeat_interleave``: every group passes the oracle."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import anyprune as tp


def _oracle_every_group(net: nn.Module, x: torch.Tensor, idxs=(0, 2)) -> list[tuple[int, bool]]:
    net, x = net.double().eval(), x.double()
    n = len(list(tp.DependencyGraph().build_dependency(net, x).get_all_groups()))
    out = []
    for k in range(n):
        m = copy.deepcopy(net)
        dg = tp.DependencyGraph().build_dependency(m, x)
        g = list(dg.get_all_groups())[k]
        size = g.size
        res = tp.verify_group(dg, g, idxs=[i for i in idxs if i < size - 1], example_inputs=x, atol=1e-10)
        assert res.ok, f"group {k}: {res.details}"
        dg.lint()
        out.append((size, res.exact))
    return out


class Recurrent(nn.Module):
    def __init__(self, cls, bidirectional: bool, batch_first: bool, layers: int = 2) -> None:
        super().__init__()
        self.emb = nn.Linear(3, 6)
        self.rnn = cls(6, 5, num_layers=layers, batch_first=batch_first, bidirectional=bidirectional)
        self.out = nn.Linear(10 if bidirectional else 5, 2)

    def forward(self, x):
        y, _ = self.rnn(self.emb(x))
        return self.out(y)


@pytest.mark.parametrize("cls", [nn.LSTM, nn.GRU, nn.RNN])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("batch_first", [False, True])
def test_recurrent_hidden_units_and_inputs_are_exact_groups(cls, bidirectional, batch_first):
    torch.manual_seed(0)
    net = Recurrent(cls, bidirectional, batch_first)
    x = torch.randn(2, 7, 3)
    assert sorted(_oracle_every_group(net, x)) == [(5, True), (6, True)]


def test_pruned_lstm_keeps_its_attributes_in_sync_and_runs_on_new_shapes():
    torch.manual_seed(0)
    net = Recurrent(nn.LSTM, True, True).eval()
    x = torch.randn(2, 7, 3)
    pruner = tp.pruner.MetaPruner(net, x, pruning_ratio=0.4, ignored_layers=[net.out])
    pruner.step()
    features = net.emb.out_features
    assert features < 6
    assert (net.rnn.hidden_size, net.rnn.input_size) == (3, features)
    assert net.rnn.weight_ih_l0.shape == (12, features)
    assert net.rnn.weight_ih_l1_reverse.shape == (12, 6)
    assert net(torch.randn(5, 11, 3)).shape == (5, 11, 2)
    h0 = torch.zeros(4, 5, 3)
    y, (h, c) = net.rnn(torch.randn(5, 11, features), (h0, h0))  # a caller's state has the new width
    assert y.shape == (5, 11, 6)
    assert h.shape == c.shape == (4, 5, 3)


def test_a_state_passed_in_couples_its_width_with_the_hidden_units():
    class WithState(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.init = nn.Linear(3, 5)
            self.rnn = nn.GRU(3, 5, batch_first=True)
            self.out = nn.Linear(5, 2)

        def forward(self, x):
            h0 = torch.tanh(self.init(x.mean(1)))[None]
            y, _ = self.rnn(x, h0)
            return self.out(y)

    torch.manual_seed(0)
    assert _oracle_every_group(WithState(), torch.randn(2, 4, 3)) == [(5, True)]


def test_unfold_and_fold_follow_the_channels():
    class Patches(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Conv2d(3, 4, 1)
            self.lin = nn.Linear(4 * 4, 6 * 4)
            self.b = nn.Conv2d(6, 2, 1)

        def forward(self, x):
            y = F.unfold(self.a(x), 2, stride=2)  # [N, 4 x 4 kernel positions, blocks]
            y = self.lin(y.transpose(1, 2)).transpose(1, 2)
            return self.b(F.fold(y, (8, 8), 2, stride=2))  # [N, 6, 8, 8]

    torch.manual_seed(0)
    assert sorted(_oracle_every_group(Patches(), torch.randn(1, 3, 8, 8))) == [(4, True), (6, True)]


@pytest.mark.parametrize("traced", [True, False])
def test_repeat_interleave_gives_each_kv_head_its_query_heads(traced):
    class Interleave(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.q, self.k, self.o = nn.Linear(8, 16), nn.Linear(8, 8), nn.Linear(16, 8)

        def forward(self, x):
            b, n, _ = x.shape
            q = self.q(x).view(b, n, -1, 4).transpose(1, 2)
            k = self.k(x).view(b, n, -1, 4).transpose(1, 2)
            k = k.repeat_interleave(q.shape[1] // k.shape[1] if traced else 2, dim=1)
            return self.o((q * k).transpose(1, 2).reshape(b, n, -1))

    torch.manual_seed(0)
    groups = _oracle_every_group(Interleave(), torch.randn(2, 3, 8), idxs=(0,))
    assert (2, True) in groups  # the 2 KV heads, each with its 2 query heads
