"""Seed drawing helpers and print_tool: matrices checked by hand on a small model, images written."""

from __future__ import annotations

import struct
import sys
import zlib

import pytest
import torch
from torch import nn

import anyprune as tp
from anyprune.utils import draw


class Block(nn.Module):
    """conv -> bn -> conv, with a residual add back onto the first conv's output."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.bn, self.b = nn.Conv2d(3, 8, 1), nn.BatchNorm2d(8), nn.Conv2d(8, 8, 1)
        self.head = nn.Linear(8, 2)

    def forward(self, x):
        y = self.bn(self.a(x))
        z = torch.relu(self.b(torch.relu(y))) + y
        return self.head(z.mean((2, 3)))


def _graph():
    model = Block().eval()
    return model, tp.DependencyGraph().build_dependency(model, torch.randn(1, 3, 4, 4))


def test_computational_graph_links_layers_through_parameter_free_ops():
    model, dg = _graph()
    layers, adj = draw.computational_graph(dg)
    assert layers == [model.a, model.bn, model.b, model.head]
    edges = {(layers[i], layers[j]) for i, j in adj.nonzero().tolist() if i < j}
    want = {(model.a, model.bn), (model.bn, model.b), (model.bn, model.head), (model.b, model.head)}
    assert {(id(a), id(b)) for a, b in edges} == {(id(a), id(b)) for a, b in want}
    assert torch.equal(adj, adj.T)


def test_dependency_and_group_matrices():
    model, dg = _graph()
    layers, dep = draw.dependency_matrix(dg)
    k = {id(m): i for i, m in enumerate(layers)}

    def out_(m):
        return 2 * k[id(m)] + 1

    def in_(m):
        return 2 * k[id(m)]

    assert dep[out_(model.a), in_(model.bn)] == 1  # conv output feeds the norm layer
    assert dep[in_(model.bn), out_(model.bn)] == 1  # a norm layer's input is its output
    assert dep[out_(model.b), in_(model.head)] == 1  # residual sum reaches the head
    assert dep[out_(model.a), in_(model.b)] == 0  # not direct: through the norm layer
    _, groups = draw.group_matrix(dg)
    stream = [out_(model.a), out_(model.bn), in_(model.b), out_(model.b), in_(model.head)]
    assert all(groups[i, j] == 1 for i in stream for j in stream)
    assert groups[out_(model.head), out_(model.head)] == 0  # the output is pinned: in no group
    assert int(groups.sum()) == len(set(stream)) ** 2


def _png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    w, h = struct.unpack(">II", data[16:24])
    return w, h


@pytest.mark.parametrize("fn", [tp.utils.draw_computational_graph, tp.utils.draw_dependency_graph,
                                tp.utils.draw_groups])
def test_images_are_written_with_or_without_matplotlib(fn, tmp_path, monkeypatch):
    _, dg = _graph()
    target = tmp_path / "with.png"
    mat = fn(dg, save_as=target, title="t")
    assert target.stat().st_size > 0
    assert mat.shape[0] == mat.shape[1]
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if it were not installed
    raw = tmp_path / "raw.png"
    same = fn(dg, save_as=str(raw))
    assert torch.equal(mat, same)
    w, h = _png_size(raw)
    assert w == h == mat.shape[0] * 16
    with pytest.raises(tp.ConfigError, match=r"only \.png"):
        fn(dg, save_as=tmp_path / "x.pdf")
    with pytest.raises(tp.ConfigError, match="does not exist"):
        fn(dg, save_as=tmp_path / "nope" / "x.png")


def test_png_pixels_follow_the_matrix(tmp_path):
    mat = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    path = tmp_path / "m.png"
    draw._write_png(mat, path)
    data = path.read_bytes()
    idat_len = struct.unpack(">I", data[33:37])[0]
    raw = zlib.decompress(data[41:41 + idat_len])
    w, _ = _png_size(path)
    rows = [raw[r * (w + 1) + 1:(r + 1) * (w + 1)] for r in range(w)]
    assert (rows[0][0], rows[0][-1], rows[-1][0], rows[-1][-1]) == (55, 255, 255, 55)


def test_draw_needs_a_built_graph():
    with pytest.raises(tp.ConfigError, match="DependencyGraph"):
        tp.utils.draw_groups("graph")
    with pytest.raises(tp.ConfigError, match="build_dependency"):
        tp.utils.draw_groups(tp.DependencyGraph())


def test_print_tool_seed_usage(capsys):
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 3))
    tp.utils.print_tool.before_pruning(model)
    dg = tp.DependencyGraph().build_dependency(model, torch.randn(1, 3, 8, 8))
    dg.get_pruning_group(model[0], tp.prune_conv_out_channels, idxs=[0, 1]).prune()
    text = tp.utils.print_tool.after_pruning(model)
    assert capsys.readouterr().out.strip() == text.strip()
    lines = text.split("\n")
    assert "(0): Conv2d(3, 8, kernel_size=(3, 3), stride=(1, 1)) => (0): Conv2d(3, 6," in lines[1]
    assert "BatchNorm2d(8," in lines[2]
    assert "=> (1): BatchNorm2d(6," in lines[2]
    assert lines[3] == "  (2): ReLU()"
    with pytest.raises(tp.ConfigError, match="before_pruning"):
        tp.utils.print_tool.after_pruning(model)
