"""Pictures of a dependency graph (seed API): module adjacency, direct dependencies and groups as matrices.

Each function builds a square matrix over the graph's layers, saves it as an image when ``save_as`` is given
and returns it. With matplotlib installed the image is a titled figure in any format matplotlib writes;
without it, a ``.png`` is written directly (one grey square per cell, no title).
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError

__all__ = ["draw_computational_graph", "draw_dependency_graph", "draw_groups", "print_tool"]


def _graph(DG: Any):
    from ..depgraph import DependencyGraph

    if not isinstance(DG, DependencyGraph):
        raise ConfigError(f"expected a DependencyGraph built with build_dependency, got {type(DG).__name__}")
    DG._require_built()
    return DG


def _layers(DG: Any) -> list[nn.Module]:
    """Modules that own prunable parameter slices (or are customized layers), in trace order."""
    order: dict[int, nn.Module] = {}
    for s in DG.index.slices:
        if s.module is not None:
            order.setdefault(id(s.module), s.module)
    return list(order.values())


def _role(s: Any) -> int:
    """0 for a layer's input dim, 1 for its output dim (norm layers and biases count as output)."""
    from ..groups.group import LeafSlice, _is_output_dim

    if isinstance(s, LeafSlice):
        return 1 if s.role == "out" else 0
    if getattr(s, "attr", "") == "weight" and s.tensor.ndim >= 2 and not _is_output_dim(s):
        return 0
    return 1


def computational_graph(DG: Any) -> tuple[list[nn.Module], torch.Tensor]:
    """The layers and their symmetric adjacency matrix: ``1`` where one layer's output reaches the other's input
    through parameter-free ops only."""
    DG = _graph(DG)
    layers = _layers(DG)
    pos = {id(m): k for k, m in enumerate(layers)}
    dims = DG.dims

    def owner(call) -> nn.Module | None:
        for v in call.inputs:
            m = dims.module_of(v)
            if m is not None and id(m) in pos:
                return m
        return None

    nearest: dict[int, set[int]] = {}  # value index -> positions of the nearest layers that produce it

    def sources(v) -> set[int]:
        if v.index in nearest:
            return nearest[v.index]
        nearest[v.index] = set()
        call = v.producer
        found: set[int] = set()
        if call is not None:
            m = owner(call)
            if m is not None:
                found = {pos[id(m)]}
            else:
                for u in call.inputs:
                    if u.kind not in ("param", "buffer"):
                        found |= sources(u)
        nearest[v.index] = found
        return found

    adj = torch.zeros(len(layers), len(layers))
    for call in DG.ops.calls:
        m = owner(call)
        if m is None:
            continue
        for u in call.inputs:
            if u.kind in ("param", "buffer"):
                continue
            for k in sources(u):
                if k != pos[id(m)]:
                    adj[k, pos[id(m)]] = adj[pos[id(m)], k] = 1
    return layers, adj


def dependency_matrix(DG: Any) -> tuple[list[nn.Module], torch.Tensor]:
    """The layers and a ``2n x 2n`` matrix over their (input, output) dims: ``1`` from a layer's output dim to the
    input dim of a layer it feeds directly, and from a layer's input to its own output where the two are one dim
    (norm layers, depthwise convolutions)."""
    DG = _graph(DG)
    layers, adj = computational_graph(DG)
    pos = {id(m): k for k, m in enumerate(layers)}
    table = DG.dims.atoms
    atoms: dict[tuple[int, int], set[int]] = {}
    for s in DG.index.slices:
        if s.module is not None:
            atoms.setdefault((pos[id(s.module)], _role(s)), set()).update(table.atoms(s.layout))
    n = len(layers)
    for k in range(n):  # a layer without an input dim of its own (a norm layer) reads its output dim
        if (k, 0) not in atoms and (k, 1) in atoms:
            atoms[(k, 0)] = atoms[(k, 1)]
    dep = torch.zeros(2 * n, 2 * n)
    for i, j in adj.nonzero().tolist():
        if atoms.get((i, 1), set()) & atoms.get((j, 0), set()):
            dep[2 * i + 1, 2 * j] = 1
    for k in range(n):
        if (k, 0) in atoms and atoms[(k, 0)] & atoms.get((k, 1), set()):
            dep[2 * k, 2 * k + 1] = 1
    return layers, dep


def group_matrix(DG: Any) -> tuple[list[nn.Module], torch.Tensor]:
    """The layers and a ``2n x 2n`` matrix over their (input, output) dims: ``1`` where two dims are pruned
    together by one group of ``get_all_groups(root_module_types=None)``."""
    DG = _graph(DG)
    layers = _layers(DG)
    pos = {id(m): k for k, m in enumerate(layers)}
    mat = torch.zeros(2 * len(layers), 2 * len(layers))
    for g in DG.get_all_groups(root_module_types=None):
        idx = sorted({2 * pos[id(s.module)] + _role(s) for s in g.slices if s.module is not None})
        if idx:
            t = torch.tensor(idx)
            mat[t.unsqueeze(1), t.unsqueeze(0)] = 1
    return layers, mat


def _save(matrix: torch.Tensor, save_as: str | Path | None, title: str | None, figsize, dpi: int, cmap) -> None:
    if save_as is None:
        return
    path = Path(save_as)
    if not path.parent.is_dir():
        raise ConfigError(f"save_as: the folder {str(path.parent)!r} does not exist")
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError:
        if path.suffix.lower() != ".png":
            raise ConfigError(f"save_as={str(path)!r}: without matplotlib only .png files can be written "
                              "(pip install matplotlib for other formats)") from None
        _write_png(matrix, path)
        return
    fig, ax = plt.subplots(figsize=figsize)
    ax.imshow(matrix.numpy(), cmap=cmap if cmap is not None else "Blues", interpolation="nearest")
    if title is not None:
        ax.set_title(title)
    fig.tight_layout()
    fig.savefig(str(path), dpi=dpi)
    plt.close(fig)


def _write_png(matrix: torch.Tensor, path: Path, max_side: int = 2048) -> None:
    """An 8-bit greyscale PNG of ``matrix`` (0 white, 1 dark), each cell a square of pixels."""
    n = max(1, matrix.shape[0])
    cell = max(1, min(16, max_side // n))
    shade = (255 - 200 * matrix.clamp(0, 1)).to(torch.uint8)
    img = shade.repeat_interleave(cell, 0).repeat_interleave(cell, 1)
    h, w = img.shape
    raw = b"".join(b"\x00" + bytes(row) for row in img.tolist())

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)) + \
        chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")
    path.write_bytes(png)


def draw_computational_graph(DG: Any, save_as: str | Path | None = None, title: str | None = "Computational Graph",
                             figsize=(16, 16), dpi: int = 200, cmap: Any = None) -> torch.Tensor:
    """Save (and return) the layer adjacency matrix of :func:`computational_graph` as an image."""
    _, adj = computational_graph(DG)
    _save(adj, save_as, title, figsize, dpi, cmap)
    return adj


def draw_dependency_graph(DG: Any, save_as: str | Path | None = None, title: str | None = "Dependency Graph",
                          figsize=(16, 16), dpi: int = 200, cmap: Any = None) -> torch.Tensor:
    """Save (and return) the direct-dependency matrix of :func:`dependency_matrix` as an image."""
    _, dep = dependency_matrix(DG)
    _save(dep, save_as, title, figsize, dpi, cmap)
    return dep


def draw_groups(DG: Any, save_as: str | Path | None = None, title: str | None = "Groups", figsize=(16, 16),
                dpi: int = 200, cmap: Any = None) -> torch.Tensor:
    """Save (and return) the group matrix of :func:`group_matrix` as an image."""
    _, mat = group_matrix(DG)
    _save(mat, save_as, title, figsize, dpi, cmap)
    return mat


class print_tool:  # the seed's name
    """Show a model's printout before and after pruning, changed lines as ``before => after``.

    Example:
        >>> import torch, anyprune as tp
        >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
        >>> tp.utils.print_tool.before_pruning(model)
        >>> dg = tp.DependencyGraph().build_dependency(model, torch.randn(1, 4))
        >>> dg.groups()[0].prune([0, 1, 2])
        >>> print(tp.utils.print_tool.after_pruning(model, do_print=False))
        Sequential(
          (0): Linear(in_features=4, out_features=8, bias=True) => (0): Linear(in_features=4, out_features=5, bias=True)
          (1): ReLU()
          (2): Linear(in_features=8, out_features=2, bias=True) => (2): Linear(in_features=5, out_features=2, bias=True)
        )
    """

    _before: str | None = None

    @staticmethod
    def before_pruning(model: nn.Module) -> None:
        """Remember ``model``'s printout."""
        print_tool._before = str(model)

    @staticmethod
    def after_pruning(model: nn.Module, do_print: bool = True) -> str:
        """Compare ``model``'s printout with the one remembered; print it (``do_print``) and return it."""
        if print_tool._before is None:
            raise ConfigError("call print_tool.before_pruning(model) before print_tool.after_pruning(model)")
        before, after = print_tool._before.split("\n"), str(model).split("\n")
        lines = [b if b == a else f"{b} => {a.lstrip()}" for b, a in zip(before, after)]
        if len(after) > len(before):
            lines += [f"+ {a.lstrip()}" for a in after[len(before):]]
        elif len(before) > len(after):
            lines += [f"{b} => (removed)" for b in before[len(after):]]
        text = "\n".join(lines)
        if do_print:
            print(text)
        print_tool._before = None
        return text
