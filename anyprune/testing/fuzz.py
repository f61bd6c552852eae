"""Random valid networks for property-based tests of the dimension graph.

A network is described by a :class:`NetSpec`: an input kind, a chain of
:class:`Block` s and a head. Every block knows the width (and, for images, the
spatial size) it receives and what it hands on, so a spec is valid by
construction; :func:`build_net` turns it into an ``nn.Module`` and
:func:`example_input` gives a matching input.

The blocks are the hard cases of the dimension graph: plain, grouped and
depthwise convolutions, linear layers, BatchNorm/GroupNorm/LayerNorm/RMSNorm,
activations, residual adds, concatenation and split/chunk/slicing along the
channel dim, channel shuffles, squeeze-excitation gates, unwrapped parameters
(scales, class tokens, position embeddings), flatten -> linear, gated MLPs and
attention (reshape into heads and back, grouped-query attention with
``expand`` or ``repeat_interleave``, matmul + softmax or
``F.scaled_dot_product_attention``).

:func:`net_specs` is a `hypothesis <https://hypothesis.readthedocs.io>`_
strategy; hypothesis is imported only when it is called, so the rest of the
module (specs and builders) needs nothing but torch. Failing examples shrink to
short chains of simple blocks, and a spec's ``repr`` is valid Python that
rebuilds it, so a found example can be pasted into a regression test.

Example:
    >>> spec = NetSpec("image", (Block("conv", out=4, k=3), Block("bn"), Block("act", fn="relu")), "mean")
    >>> model = build_net(spec)
    >>> tuple(model(example_input(spec)).shape)
    (2, 3)
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "Block", "NetSpec", "build_net", "example_input", "net_specs", "IMAGE_KINDS", "TOKEN_KINDS", "HEADS",
    "IMAGE_SHAPE", "TOKEN_SHAPE", "N_OUT", "attention_blocks",
]

IMAGE_SHAPE = (2, 3, 4, 4)  # batch, channels, height, width
TOKEN_SHAPE = (2, 5, 6)  # batch, tokens, features
N_OUT = 3

IMAGE_KINDS = ("conv", "bn", "gn", "act", "res", "cat", "split", "shuffle", "se", "scale", "pool")
TOKEN_KINDS = ("linear", "ln", "act", "mlp", "glu", "attn", "cat", "layerscale")
HEADS = ("mean", "flatten", "conv", "tokens")  # image heads; "tokens" continues with token blocks
TOKEN_HEADS = ("mean", "cls", "flatten")

_ACTS = {
    "relu": F.relu, "gelu": F.gelu, "silu": F.silu, "sigmoid": torch.sigmoid, "tanh": torch.tanh,
    "hardswish": F.hardswish, "leaky_relu": F.leaky_relu,
}


class Block:
    """One block of a random network: a kind and its options (plain Python values).

    Its ``repr`` is the call that rebuilds it, so a failing example can be pasted into a test.
    """

    __slots__ = ("kind", "options")

    def __init__(self, kind: str, **options: Any) -> None:
        self.kind = kind
        self.options: tuple[tuple[str, Any], ...] = tuple(sorted(options.items()))

    def get(self, name: str, default: Any = None) -> Any:
        return dict(self.options).get(name, default)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Block) and (self.kind, self.options) == (other.kind, other.options)

    def __hash__(self) -> int:
        return hash((self.kind, self.options))

    def __repr__(self) -> str:
        opts = "".join(f", {k}={v!r}" for k, v in self.options)
        return f"Block({self.kind!r}{opts})"


@dataclasses.dataclass(frozen=True)
class NetSpec:
    """A whole network: ``input`` is ``"image"`` or ``"tokens"``.

    For an image network, ``blocks`` act on ``(B, C, H, W)``; a ``"tokens"``
    head turns the feature map into tokens (``tokenize`` options) and
    ``token_blocks`` follow, then ``token_head``. A token network has only
    ``token_blocks`` and ``token_head``.
    """

    input: str
    blocks: tuple[Block, ...] = ()
    head: str = "mean"
    tokenize: Block | None = None
    token_blocks: tuple[Block, ...] = ()
    token_head: str = "mean"

    def kinds(self) -> set[str]:
        """Every block kind (and head) the network uses, e.g. ``{"image:conv", "tokens:attn", "head:mean"}``."""
        out = {f"image:{b.kind}" for b in self.blocks} | {f"tokens:{b.kind}" for b in self.token_blocks}
        out |= {f"attn:{b.get('variant')}" for b in self.token_blocks if b.kind == "attn"}
        if self.input == "image":
            out.add(f"head:{self.head}")
        if self.input == "tokens" or self.head == "tokens":
            out.add(f"token_head:{self.token_head}")
        return out


# ---------------------------------------------------------------- image blocks
class _Conv(nn.Module):
    def __init__(self, c: int, b: Block) -> None:
        super().__init__()
        k = b.get("k", 1)
        groups = c if b.get("depthwise") else b.get("groups", 1)
        self.conv = nn.Conv2d(c, b.get("out", c), k, padding=k // 2, groups=groups, bias=b.get("bias", True))

    def forward(self, x):
        return self.conv(x)


class _Act(nn.Module):
    def __init__(self, b: Block) -> None:
        super().__init__()
        self.fn = b.get("fn", "relu")

    def forward(self, x):
        return _ACTS[self.fn](x)


class _Res(nn.Module):
    """``x + act(bn(conv(x)))`` (the branch conv may be grouped)."""

    def __init__(self, c: int, b: Block) -> None:
        super().__init__()
        k = b.get("k", 1)
        self.conv = nn.Conv2d(c, c, k, padding=k // 2, groups=b.get("groups", 1))
        self.bn = nn.BatchNorm2d(c) if b.get("bn") else nn.Identity()

    def forward(self, x):
        return x + F.relu(self.bn(self.conv(x)))


class _Cat(nn.Module):
    """``cat([x, conv(x)])`` (or the other order) along the channel dim."""

    def __init__(self, c: int, b: Block, conv: bool = True) -> None:
        super().__init__()
        out = b.get("out", 2)
        self.layer = nn.Conv2d(c, out, 1) if conv else nn.Linear(c, out)
        self.first = b.get("first", False)
        self.dim = 1 if conv else -1

    def forward(self, x):
        y = self.layer(x)
        return torch.cat([y, x] if self.first else [x, y], self.dim)


class _Split(nn.Module):
    """Split the channels in two, transform one piece, concatenate (ShuffleNetV2 / C2f style).

    ``how``: ``"split"`` (literal sizes), ``"slice"`` / ``"narrow"`` (a literal bound ``at``, never the
    middle: a middle cut is read as derived from the size), ``"chunk"`` or ``"half"`` (the middle,
    derived from the size).
    """

    def __init__(self, c: int, b: Block) -> None:
        super().__init__()
        self.how = b.get("how", "split")
        self.at = c // 2 if self.how in ("chunk", "half") else b.get("at", 1)
        self.which = b.get("which", 1)
        piece = self.at if self.which == 0 else c - self.at
        self.conv = nn.Conv2d(piece, b.get("out", piece), 1)
        self.swap = b.get("swap", False)

    def forward(self, x):
        c = x.shape[1]
        if self.how == "chunk":
            a, z = x.chunk(2, 1)
        elif self.how == "half":  # the cut follows the tensor's size
            a, z = x[:, : c // 2], x[:, c // 2:]
        elif self.how == "slice":
            a, z = x[:, : self.at], x[:, self.at:]
        elif self.how == "narrow":
            a, z = x.narrow(1, 0, self.at), x.narrow(1, self.at, c - self.at)
        else:
            a, z = torch.split(x, [self.at, c - self.at], 1)
        if self.which == 0:
            a = self.conv(a)
        else:
            z = self.conv(z)
        return torch.cat([z, a] if self.swap else [a, z], 1)


class _Shuffle(nn.Module):
    """``view(n, g, c // g, h, w) -> transpose -> reshape``."""

    def __init__(self, b: Block) -> None:
        super().__init__()
        self.g = b.get("groups", 2)

    def forward(self, x):
        n, c, h, w = x.shape
        return x.view(n, self.g, c // self.g, h, w).transpose(1, 2).reshape(n, c, h, w)


class _SE(nn.Module):
    def __init__(self, c: int, b: Block) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(c, b.get("hidden", 2), 1)
        self.fc2 = nn.Conv2d(b.get("hidden", 2), c, 1)

    def forward(self, x):
        s = F.adaptive_avg_pool2d(x, 1)
        return x * torch.sigmoid(self.fc2(F.relu(self.fc1(s))))


class _Scale(nn.Module):
    """An unwrapped parameter multiplied into the stream (layer scale)."""

    def __init__(self, c: int, b: Block) -> None:
        super().__init__()
        self.shape4d = b.get("shape4d", False)
        self.gamma = nn.Parameter(torch.rand(1, c, 1, 1) + 0.5 if self.shape4d else torch.rand(c) + 0.5)

    def forward(self, x):
        return x * (self.gamma if self.shape4d else self.gamma.view(1, -1, 1, 1))


class _Pool(nn.Module):
    def __init__(self, b: Block) -> None:
        super().__init__()
        self.max = b.get("max", True)

    def forward(self, x):
        return F.max_pool2d(x, 2) if self.max else F.avg_pool2d(x, 2)


def _image_block(c: int, b: Block) -> tuple[nn.Module, int]:
    if b.kind == "conv":
        return _Conv(c, b), (c * b.get("mult", 1) if b.get("depthwise") else b.get("out", c))
    if b.kind == "bn":
        return nn.BatchNorm2d(c), c
    if b.kind == "gn":
        return nn.GroupNorm(b.get("groups", 1), c), c
    if b.kind == "act":
        return _Act(b), c
    if b.kind == "res":
        return _Res(c, b), c
    if b.kind == "cat":
        return _Cat(c, b), c + b.get("out", 2)
    if b.kind == "split":
        m = _Split(c, b)
        return m, c - m.conv.in_channels + m.conv.out_channels
    if b.kind == "shuffle":
        return _Shuffle(b), c
    if b.kind == "se":
        return _SE(c, b), c
    if b.kind == "scale":
        return _Scale(c, b), c
    if b.kind == "pool":
        return _Pool(b), c
    raise ValueError(f"unknown image block {b.kind!r}")


# ---------------------------------------------------------------- token blocks
class _Tokenize(nn.Module):
    """``(B, C, H, W) -> (B, H*W, C)``, optionally with a class token and a position embedding."""

    def __init__(self, c: int, n: int, b: Block) -> None:
        super().__init__()
        self.cls = nn.Parameter(torch.randn(1, 1, c) * 0.5) if b.get("cls") else None
        n_tok = n + (1 if b.get("cls") else 0)
        self.pos = nn.Parameter(torch.randn(1, n_tok, c) * 0.5) if b.get("pos") else None

    def forward(self, x):
        x = x.flatten(2).transpose(1, 2)
        if self.cls is not None:
            x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], 1)
        if self.pos is not None:
            x = x + self.pos
        return x


class _Linear(nn.Module):
    def __init__(self, c: int, b: Block) -> None:
        super().__init__()
        self.fc = nn.Linear(c, b.get("out", c), bias=b.get("bias", True))

    def forward(self, x):
        return self.fc(x)


class _Norm(nn.Module):
    def __init__(self, c: int, b: Block) -> None:
        super().__init__()
        self.norm = nn.RMSNorm(c) if b.get("rms") else nn.LayerNorm(c)

    def forward(self, x):
        return self.norm(x)


class _MLP(nn.Module):
    """``x + fc2(act(fc1(norm(x))))``."""

    def __init__(self, c: int, b: Block) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(c) if b.get("norm") else nn.Identity()
        self.fc1 = nn.Linear(c, b.get("hidden", 4))
        self.fc2 = nn.Linear(b.get("hidden", 4), c)

    def forward(self, x):
        return x + self.fc2(F.gelu(self.fc1(self.norm(x))))


class _GLU(nn.Module):
    """Gated MLP: separate gate/up projections, or one packed projection chunked in two."""

    def __init__(self, c: int, b: Block) -> None:
        super().__init__()
        h = b.get("hidden", 4)
        self.packed = b.get("packed", False)
        if self.packed:
            self.gate_up = nn.Linear(c, 2 * h, bias=False)
        else:
            self.gate = nn.Linear(c, h, bias=False)
            self.up = nn.Linear(c, h, bias=False)
        self.down = nn.Linear(h, c, bias=False)

    def forward(self, x):
        if self.packed:
            g, u = self.gate_up(x).chunk(2, -1)
        else:
            g, u = self.gate(x), self.up(x)
        return x + self.down(F.silu(g) * u)


class _Attention(nn.Module):
    """Multi-head attention with ``heads`` query heads sharing ``kv`` key/value heads.

    ``view``: how q/k/v are split into heads: ``"minus1"`` ``view(B, N, H, -1)`` (head_dim derived),
    ``"heads"`` ``view(B, N, -1, D)`` (head count derived), ``"derived"``
    ``view(B, N, H, C // H)`` (ints in the trace; the graph reads the innermost as derived),
    ``"unflatten"`` ``unflatten(-1, (H, -1))``. Sizes the code keeps as constants (``H`` here,
    ``D`` in ``"heads"``) are pinned by the graph; a view whose every size is a module attribute
    (``view(B, N, self.h, self.d)``) needs those attributes updated, which plain modules do not do.
    ``repeat`` (when kv < heads): ``"expand"``
    (``k[:, :, None].expand(...).flatten(1, 2)``), ``"interleave"`` (``repeat_interleave``) or
    ``"gqa"`` (``enable_gqa=True``, SDPA only). ``variant``: ``"matmul"`` or ``"sdpa"``.
    ``packed``: one qkv projection split in three.
    """

    def __init__(self, c: int, b: Block) -> None:
        super().__init__()
        self.h, self.kv, self.d = b.get("heads", 2), b.get("kv", 2), b.get("dim", 2)
        self.dv = self.d if b.get("packed") else b.get("dim_v", self.d)
        self.view_style = b.get("view", "minus1")
        self.repeat = b.get("repeat", "expand")
        self.variant = b.get("variant", "matmul")
        self.packed = b.get("packed", False)
        self.scale = 1.0 / math.sqrt(self.d)
        if self.packed:
            self.qkv = nn.Linear(c, (self.h + 2 * self.kv) * self.d)
        else:
            self.q = nn.Linear(c, self.h * self.d)
            self.k = nn.Linear(c, self.kv * self.d)
            self.v = nn.Linear(c, self.kv * self.dv)
        self.proj = nn.Linear(self.h * self.dv, c)

    def _heads(self, t, n_heads: int, d: int):
        b, n, _ = t.shape
        if self.view_style == "minus1":
            t = t.view(b, n, n_heads, -1)
        elif self.view_style == "heads":
            t = t.view(b, n, -1, d)
        elif self.view_style == "derived":
            t = t.view(b, n, n_heads, t.shape[-1] // n_heads)
        else:
            t = t.unflatten(-1, (n_heads, -1))
        return t.transpose(1, 2)  # (B, heads, N, d)

    def _repeat(self, t):
        if t.shape[1] == self.h or self.repeat == "gqa":
            return t
        r = self.h // self.kv
        if self.repeat == "interleave":
            return t.repeat_interleave(r, dim=1)
        return t[:, :, None].expand(-1, -1, r, -1, -1).flatten(1, 2)

    def forward(self, x):
        if self.packed:
            qkv = self.qkv(x)
            q, k, v = qkv.split([self.h * self.d, self.kv * self.d, self.kv * self.d], -1)
        else:
            q, k, v = self.q(x), self.k(x), self.v(x)
        q, k, v = self._heads(q, self.h, self.d), self._heads(k, self.kv, self.d), self._heads(v, self.kv, self.dv)
        k, v = self._repeat(k), self._repeat(v)
        if self.variant == "sdpa":
            gqa = {"enable_gqa": True} if self.repeat == "gqa" and self.kv != self.h else {}
            y = F.scaled_dot_product_attention(q, k, v, scale=self.scale, **gqa)
        else:
            att = (q @ k.transpose(-2, -1)) * self.scale
            y = att.softmax(-1) @ v
        y = y.transpose(1, 2).flatten(2)
        return x + self.proj(y)


class _LayerScale(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.rand(c) + 0.5)

    def forward(self, x):
        return x * self.gamma


def _token_block(c: int, b: Block) -> tuple[nn.Module, int]:
    if b.kind == "linear":
        return _Linear(c, b), b.get("out", c)
    if b.kind == "ln":
        return _Norm(c, b), c
    if b.kind == "act":
        return _Act(b), c
    if b.kind == "mlp":
        return _MLP(c, b), c
    if b.kind == "glu":
        return _GLU(c, b), c
    if b.kind == "attn":
        return _Attention(c, b), c
    if b.kind == "cat":
        return _Cat(c, b, conv=False), c + b.get("out", 2)
    if b.kind == "layerscale":
        return _LayerScale(c), c
    raise ValueError(f"unknown token block {b.kind!r}")


def attention_blocks(model: nn.Module) -> list[str]:
    """Qualified names of the attention blocks of a network built by :func:`build_net`."""
    return [n for n, m in model.named_modules() if isinstance(m, _Attention)]


# ---------------------------------------------------------------- the network
class FuzzNet(nn.Module):
    """The network a :class:`NetSpec` describes."""

    def __init__(self, spec: NetSpec) -> None:
        super().__init__()
        self.spec_repr = repr(spec)
        self.head_kind = spec.head if spec.input == "image" else "tokens"
        self.token_head = spec.token_head
        self.blocks = nn.ModuleList()
        if spec.input == "image":
            c, hw = IMAGE_SHAPE[1], IMAGE_SHAPE[2]
            for b in spec.blocks:
                m, c = _image_block(c, b)
                self.blocks.append(m)
                hw = hw // 2 if b.kind == "pool" else hw
            n_tok = hw * hw
        else:
            c, n_tok = TOKEN_SHAPE[2], TOKEN_SHAPE[1]
        self.tokenize: nn.Module | None = None
        self.token_blocks = nn.ModuleList()
        if self.head_kind == "mean":
            self.head: nn.Module = nn.Linear(c, N_OUT)
        elif self.head_kind == "flatten":
            self.pooled = min(2, hw)
            self.head = nn.Linear(c * self.pooled * self.pooled, N_OUT)
        elif self.head_kind == "conv":
            self.head = nn.Conv2d(c, N_OUT, 1)
        else:
            if spec.input == "image":
                self.tokenize = _Tokenize(c, n_tok, spec.tokenize or Block("tokenize"))
                n_tok += 1 if (spec.tokenize or Block("tokenize")).get("cls") else 0
            for b in spec.token_blocks:
                m, c = _token_block(c, b)
                self.token_blocks.append(m)
            self.head = nn.Linear(c * n_tok if self.token_head == "flatten" else c, N_OUT)

    def forward(self, x):
        for m in self.blocks:
            x = m(x)
        if self.head_kind == "mean":
            return self.head(x.mean((2, 3)))
        if self.head_kind == "flatten":
            return self.head(torch.flatten(F.adaptive_avg_pool2d(x, self.pooled), 1))
        if self.head_kind == "conv":
            return self.head(x)
        if self.tokenize is not None:
            x = self.tokenize(x)
        for m in self.token_blocks:
            x = m(x)
        if self.token_head == "mean":
            return self.head(x.mean(1))
        if self.token_head == "cls":
            return self.head(x[:, 0])
        return self.head(x.flatten(1))


def build_net(spec: NetSpec, seed: int = 0, dtype: torch.dtype = torch.float64) -> FuzzNet:
    """The network of ``spec`` in eval mode, with random weights (norm statistics and affines included)."""
    torch.manual_seed(seed)
    model = FuzzNet(spec)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for m in model.modules():
            if not isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm, nn.RMSNorm)):
                continue
            for name, low, width in (("running_mean", -1.0, 2.0), ("running_var", 0.5, 1.0), ("weight", 0.5, 1.0),
                                     ("bias", -0.5, 1.0)):
                t = getattr(m, name, None)
                if isinstance(t, torch.Tensor):
                    t.copy_(torch.rand(t.shape, generator=gen) * width + low)
    return model.to(dtype).eval()


def example_input(spec: NetSpec, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """A random input of the shape the network expects (deterministic)."""
    shape = IMAGE_SHAPE if spec.input == "image" else TOKEN_SHAPE
    return torch.randn(shape, generator=torch.Generator().manual_seed(1234), dtype=dtype)


# ---------------------------------------------------------------- strategies
def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


# attention is drawn three times as often as any other token block, and the ``"heads"`` view (the only one
# whose head count is derived, hence prunable) twice as often as each other view: otherwise whole-head
# groups would be rare among the drawn networks
_TOKEN_DRAW = (*TOKEN_KINDS, "attn", "attn")
_VIEW_DRAW = ("minus1", "heads", "derived", "unflatten", "heads")
# networks drawn for their attention: half of the views derive the head count
_VIEW_DRAW_ATTENTION = ("heads", "minus1", "heads", "derived", "heads", "unflatten")


def net_specs(max_blocks: int = 5, max_token_blocks: int = 4, attention: bool = False):
    """A hypothesis strategy of valid :class:`NetSpec` s (hypothesis is imported here).

    ``attention=True`` draws only token networks with at least one attention block of 2 or 4 query heads
    (the other blocks are drawn as usual), for properties about head and head_dim groups.
    """
    from hypothesis import strategies as st

    widths = st.sampled_from([4, 2, 3, 6, 8])

    @st.composite
    def image_block(draw, c: int, hw: int) -> Block:
        kinds = [k for k in IMAGE_KINDS if k != "pool" or hw >= 2]
        kind = draw(st.sampled_from(kinds))
        if kind == "conv":
            shape = draw(st.sampled_from(["plain", "grouped", "depthwise"]))
            k = draw(st.sampled_from([1, 3]))
            bias = draw(st.booleans())
            if shape == "depthwise":
                mult = draw(st.sampled_from([1, 2]))
                return Block("conv", k=k, depthwise=True, mult=mult, out=c * mult, bias=bias)
            groups = draw(st.sampled_from(_divisors(c))) if shape == "grouped" else 1
            out = groups * draw(st.integers(1, max(1, 8 // groups)))
            return Block("conv", out=out, k=k, groups=groups, bias=bias)
        if kind == "gn":
            return Block("gn", groups=draw(st.sampled_from(_divisors(c))))
        if kind == "act":
            return Block("act", fn=draw(st.sampled_from(sorted(_ACTS))))
        if kind == "res":
            return Block("res", k=draw(st.sampled_from([1, 3])), groups=draw(st.sampled_from(_divisors(c))),
                         bn=draw(st.booleans()))
        if kind == "cat":
            return Block("cat", out=draw(st.sampled_from([2, 3, 4])), first=draw(st.booleans()))
        if kind == "split":
            if c < 2:
                return Block("act", fn="relu")
            # a literal bound in the middle of an even dim would read as derived from the size
            bounds = [a for a in range(1, c) if 2 * a != c]
            hows = ["split"] + (["chunk", "half"] if c % 2 == 0 else []) + (["slice", "narrow"] if bounds else [])
            how = draw(st.sampled_from(hows))
            at = c // 2 if how in ("chunk", "half") else draw(st.sampled_from(bounds)) if how != "split" else \
                draw(st.integers(1, c - 1))
            return Block("split", how=how, at=at, which=draw(st.sampled_from([1, 0])),
                         out=draw(st.sampled_from([2, 3, 4])), swap=draw(st.booleans()))
        if kind == "shuffle":
            g = [d for d in _divisors(c) if 1 < d < c]
            return Block("shuffle", groups=draw(st.sampled_from(g))) if g else Block("bn")
        if kind == "se":
            return Block("se", hidden=draw(st.sampled_from([2, 1, 3])))
        if kind == "scale":
            return Block("scale", shape4d=draw(st.booleans()))
        if kind == "pool":
            return Block("pool", max=draw(st.booleans()))
        return Block(kind)

    @st.composite
    def token_block(draw, c: int, kind: str | None = None) -> Block:
        kind = kind or draw(st.sampled_from(_TOKEN_DRAW))
        if kind == "linear":
            return Block("linear", out=draw(widths), bias=draw(st.booleans()))
        if kind == "ln":
            return Block("ln", rms=draw(st.booleans()))
        if kind == "act":
            return Block("act", fn=draw(st.sampled_from(sorted(_ACTS))))
        if kind == "mlp":
            return Block("mlp", hidden=draw(st.sampled_from([4, 2, 3, 6])), norm=draw(st.booleans()))
        if kind == "glu":
            return Block("glu", hidden=draw(st.sampled_from([4, 2, 3])), packed=draw(st.booleans()))
        if kind == "attn":
            heads = draw(st.sampled_from([2, 4] if attention else [2, 1, 4]))
            kv = draw(st.sampled_from(_divisors(heads)))
            dim = draw(st.sampled_from([2, 3, 4]))
            variant = draw(st.sampled_from(["matmul", "sdpa"]))
            repeats = ["expand", "interleave"] + (["gqa"] if variant == "sdpa" else [])
            packed = draw(st.booleans())
            return Block("attn", heads=heads, kv=kv, dim=dim, dim_v=dim if packed else draw(st.sampled_from([2, 3])),
                         view=draw(st.sampled_from(_VIEW_DRAW_ATTENTION if attention else _VIEW_DRAW)),
                         repeat=draw(st.sampled_from(repeats)) if kv < heads else "expand",
                         variant=variant, packed=packed)
        if kind == "cat":
            return Block("cat", out=draw(st.sampled_from([2, 3])), first=draw(st.booleans()))
        return Block(kind)

    @st.composite
    def specs(draw) -> NetSpec:
        family = "tokens" if attention else draw(st.sampled_from(["image", "tokens"]))
        token_blocks: list[Block] = []
        blocks: list[Block] = []
        head, tokenize = "tokens", None
        if family == "image":
            c, hw = IMAGE_SHAPE[1], IMAGE_SHAPE[2]
            # a stem: the input's channels are pinned, so the first blocks get a prunable width
            blocks.append(Block("conv", out=draw(st.sampled_from([4, 6, 8])), k=draw(st.sampled_from([1, 3]))))
            c = blocks[0].get("out")
            for _ in range(draw(st.integers(0, max_blocks))):
                b = draw(image_block(c, hw))
                _, c = _image_block(c, b)
                hw = hw // 2 if b.kind == "pool" else hw
                blocks.append(b)
            head = draw(st.sampled_from(HEADS))
            if head == "tokens":
                tokenize = Block("tokenize", cls=draw(st.booleans()), pos=draw(st.booleans()))
        else:
            blocks_out = draw(st.sampled_from([4, 6, 8]))
            token_blocks.append(Block("linear", out=blocks_out, bias=draw(st.booleans())))
            c = blocks_out
        if head == "tokens":
            n = draw(st.integers(1 if attention else 0, max_token_blocks))
            forced = draw(st.integers(0, n - 1)) if attention else -1
            for k in range(n):
                b = draw(token_block(c, "attn" if k == forced else None))
                _, c = _token_block(c, b)
                token_blocks.append(b)
        token_head = draw(st.sampled_from(TOKEN_HEADS)) if head == "tokens" else "mean"
        return NetSpec(family, tuple(blocks), head, tokenize, tuple(token_blocks), token_head)

    return specs()
