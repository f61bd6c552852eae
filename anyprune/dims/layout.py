"""Layouts: how the positions of one tensor dimension map onto atoms.

An *atom* is an index space with a size: the output channels of a conv, the
heads of an attention projection, a head's positions. Every dimension of every
traced value has a *layout*, an expression over atoms:

* ``("a", id)``          one atom; position ``p`` is index ``p`` of the atom;
* ``("s", (L1, L2, …))`` a concatenation (sum) of segments, as ``torch.cat``;
* ``("p", (L1, L2, …))`` a row-major product, as ``view(C) -> (H, D)``.

Rules couple dimensions by *unifying* their layouts. Unification refines atoms
(an atom is *cut* into a sum, or *factored* into a product) until both layouts
have the same structure, then merges atoms pairwise (union-find). Refinement is
global: an atom that is cut is cut everywhere it appears, which is what makes
coupling transitive. Whatever the algebra cannot express exactly is *pinned*
(never pruned), so the result is always safe, if sometimes conservative.

A group is an unpinned atom; pruning indices ``I`` of atom ``a`` removes, from
every dimension whose layout contains ``a``, the positions whose ``a``-index is
in ``I`` (:meth:`AtomTable.removal_mask`). All of this works per dimension,
never per index, except when a mask for one parameter is materialised.
"""

from __future__ import annotations

import torch

Layout = tuple  # ("a", int) | ("s", tuple[Layout, ...]) | ("p", tuple[Layout, ...])

__all__ = ["AtomTable", "Layout", "atom", "cat_layouts", "prod_layouts"]


def atom(i: int) -> tuple:
    return ("a", i)


def cat_layouts(parts: list) -> tuple:
    """A sum layout of ``parts`` (a single part is returned as it is)."""
    flat: list = []
    for p in parts:
        if p[0] == "s":
            flat.extend(p[1])
        else:
            flat.append(p)
    if len(flat) == 1:
        return flat[0]
    return ("s", tuple(flat))


def prod_layouts(parts: list) -> tuple:
    """A row-major product layout of ``parts`` (a single part is returned as it is)."""
    flat: list = []
    for p in parts:
        if p[0] == "p":
            flat.extend(p[1])
        else:
            flat.append(p)
    if len(flat) == 1:
        return flat[0]
    return ("p", tuple(flat))


class AtomTable:
    """Atoms, their refinements and their unions.

    Every atom has a size; a representative atom (see :meth:`find`) is either a
    leaf or has a definition (a layout over new atoms of the same total size).
    Leaves carry two flags: ``pin`` (a reason why the atom must never be
    pruned) and ``mix`` (a reason why pruning it is only approximate: an op
    normalises or averages over it).
    """

    def __init__(self) -> None:
        self._parent: list[int] = []
        self._size: list[int] = []
        self._defn: list[tuple | None] = []
        self._pin: list[str | None] = []
        self._mix: list[str | None] = []
        self._order: list[int] = []  # creation order of the representative (for stable output)
        self.version = 0
        self._norm_cache: dict = {}
        self._norm_version = -1

    # ------------------------------------------------------------------ atoms
    def new(self, size: int, pin: str | None = None) -> tuple:
        """A fresh leaf atom of ``size`` (pinned if ``pin`` is a reason)."""
        if size < 0:
            raise ValueError(f"atom size must be >= 0, got {size}")
        i = len(self._parent)
        self._parent.append(i)
        self._size.append(int(size))
        self._defn.append(None)
        self._pin.append(pin)
        self._mix.append(None)
        self._order.append(i)
        return ("a", i)

    def new_layouts(self, shape, pin: str | None = None) -> list:
        return [self.new(int(s), pin) for s in shape]

    def find(self, i: int) -> int:
        parent = self._parent
        root = i
        while parent[root] != root:
            root = parent[root]
        while parent[i] != root:
            parent[i], i = root, parent[i]
        return root

    def atom_size(self, i: int) -> int:
        r = self.find(i)
        d = self._defn[r]
        return self._size[r] if d is None else self.size(d)

    def pin_reason(self, i: int) -> str | None:
        return self._pin[self.find(i)]

    def mix_reason(self, i: int) -> str | None:
        return self._mix[self.find(i)]

    @property
    def num_atoms(self) -> int:
        return len(self._parent)

    def is_leaf(self, i: int) -> bool:
        """True if ``i`` is its own representative and is not refined."""
        return self.find(i) == i and self._defn[i] is None

    def leaves(self) -> list[int]:
        """Representative leaf atoms, in creation order."""
        return [i for i in range(len(self._parent)) if self._parent[i] == i and self._defn[i] is None]

    # ---------------------------------------------------------------- layouts
    def size(self, layout: tuple) -> int:
        kind = layout[0]
        if kind == "a":
            return self.atom_size(layout[1])
        if kind == "s":
            return sum(self.size(k) for k in layout[1])
        n = 1
        for k in layout[1]:
            n *= self.size(k)
        return n

    def size_after(self, layout: tuple, removed: dict[int, int]) -> int:
        """Size of ``layout`` once ``removed[a]`` indices of each leaf atom ``a`` are gone."""
        layout = self.norm(layout)
        kind = layout[0]
        if kind == "a":
            return self._size[layout[1]] - removed.get(layout[1], 0)
        if kind == "s":
            return sum(self.size_after(k, removed) for k in layout[1])
        n = 1
        for k in layout[1]:
            n *= self.size_after(k, removed)
        return n

    def shrink(self, removed: dict[int, int]) -> None:
        """Record that ``removed[a]`` indices of each leaf atom were pruned."""
        for a, k in removed.items():
            r = self.find(a)
            if self._defn[r] is not None:
                raise ValueError(f"atom {a} is refined; only leaf atoms can shrink")
            self._size[r] -= k
        self.version += 1

    def norm(self, layout: tuple) -> tuple:
        """Expand definitions and flatten nested sums/products."""
        if self._norm_version != self.version:
            self._norm_cache.clear()
            self._norm_version = self.version
        hit = self._norm_cache.get(layout)
        if hit is not None:
            return hit
        out = self._norm(layout)
        self._norm_cache[layout] = out
        return out

    def _norm(self, layout: tuple) -> tuple:
        kind = layout[0]
        if kind == "a":
            r = self.find(layout[1])
            d = self._defn[r]
            if d is None:
                return ("a", r)
            return self.norm(d)
        kids = [self.norm(k) for k in layout[1]]
        if kind == "s":
            return cat_layouts(kids)
        # products: drop pinned size-1 factors (they move no position and are never pruned)
        kept = [k for k in kids if not (k[0] == "a" and self._size[k[1]] == 1 and self._pin[k[1]] is not None)]
        if not kept:
            kept = kids[:1]
        return prod_layouts(kept)

    def atoms(self, layout: tuple) -> list[int]:
        """Leaf atoms of a layout (after normalisation), each once, in order."""
        out: list[int] = []
        seen: set[int] = set()

        def walk(lay: tuple) -> None:
            if lay[0] == "a":
                if lay[1] not in seen:
                    seen.add(lay[1])
                    out.append(lay[1])
            else:
                for k in lay[1]:
                    walk(k)

        walk(self.norm(layout))
        return out

    def contains(self, layout: tuple, a: int) -> bool:
        return self.find(a) in self.atoms(layout)

    # --------------------------------------------------------------- flags
    def pin(self, layout: tuple, reason: str) -> None:
        for a in self.atoms(layout):
            if self._pin[a] is None:
                self._pin[a] = reason

    def mark_mixing(self, layout: tuple, reason: str) -> None:
        for a in self.atoms(layout):
            if self._mix[a] is None:
                self._mix[a] = reason

    def _inherit(self, parent: int, children: list[tuple]) -> None:
        for c in children:
            ci = c[1]
            if self._pin[ci] is None:
                self._pin[ci] = self._pin[parent]
            if self._mix[ci] is None:
                self._mix[ci] = self._mix[parent]

    def _define(self, a: int, layout: tuple) -> bool:
        """Make leaf ``a`` stand for ``layout``; False if that would be circular."""
        if a in self.atoms(layout):
            return False
        pin, mix = self._pin[a], self._mix[a]
        if pin is not None:
            self.pin(layout, pin)
        if mix is not None:
            self.mark_mixing(layout, mix)
        self._defn[a] = layout
        self.version += 1
        return True

    # ------------------------------------------------------------ refinement
    def cut(self, layout: tuple, pos: int) -> tuple[tuple, tuple]:
        """Split a layout at ``pos``: returns ``(left, right)`` with ``layout ≡ left ⊕ right``."""
        layout = self.norm(layout)
        n = self.size(layout)
        if not 0 < pos < n:
            raise ValueError(f"cut position {pos} outside (0, {n})")
        kind = layout[0]
        if kind == "a":
            a = layout[1]
            left, right = self.new(pos), self.new(n - pos)
            self._inherit(a, [left, right])
            self._defn[a] = ("s", (left, right))
            self.version += 1
            return left, right
        kids = list(layout[1])
        if kind == "s":
            off = 0
            for i, k in enumerate(kids):
                sk = self.size(k)
                if pos == off:
                    return cat_layouts(kids[:i]), cat_layouts(kids[i:])
                if pos < off + sk:
                    lft, rgt = self.cut(k, pos - off)
                    return cat_layouts([*kids[:i], lft]), cat_layouts([rgt, *kids[i + 1:]])
                off += sk
            raise AssertionError("unreachable")
        first, rest = kids[0], prod_layouts(kids[1:])
        inner = self.size(rest)
        q, r = divmod(pos, inner)
        if r == 0:
            lft, rgt = self.cut(first, q)
            return prod_layouts([lft, rest]), prod_layouts([rgt, rest])
        n_first = self.size(first)
        before = after = None
        row = first
        if q > 0:
            before, row = self.cut(row, q)
        if q + 1 < n_first:
            row, after = self.cut(row, 1)
        il, ir = self.cut(rest, r)
        left_parts = ([prod_layouts([before, rest])] if before is not None else []) + [prod_layouts([row, il])]
        right_parts = [prod_layouts([row, ir])] + ([prod_layouts([after, rest])] if after is not None else [])
        return cat_layouts(left_parts), cat_layouts(right_parts)

    def split(self, layout: tuple, sizes: list[int]) -> list[tuple]:
        """Cut a layout into consecutive pieces of the given sizes (a size-0 piece is a new empty atom)."""
        if sum(sizes) != self.size(layout):
            raise ValueError(f"pieces {sizes} do not add up to {self.size(layout)}")
        pieces: list[tuple] = []
        rest = layout
        remaining = self.size(layout)
        for s in sizes:
            if s == 0:
                pieces.append(self.new(0, pin="empty piece"))
            elif s == remaining:
                pieces.append(rest)
            else:
                piece, rest = self.cut(rest, s)
                pieces.append(piece)
            remaining -= s
        return pieces

    def factor(self, layout: tuple, sizes: list[int], why: str = "reshape") -> list[tuple]:
        """Express a layout as a row-major product of dims of ``sizes``.

        Atoms are factored exactly; products are realigned; anything else is
        expressed as equal rows that are unified with each other, the row index
        becoming a pinned *tile* atom (pruning must then act on every row alike).
        """
        sizes = [int(s) for s in sizes]
        if len(sizes) == 1:
            return [layout]
        head = sizes[0]
        tail = 1
        for s in sizes[1:]:
            tail *= s
        first, rest = self._factor2(layout, head, tail, why)
        return [first, *self.factor(rest, sizes[1:], why)]

    def _factor2(self, layout: tuple, k: int, m: int, why: str) -> tuple[tuple, tuple]:
        layout = self.norm(layout)
        if k == 1:
            return self.new(1, pin=f"size-1 dim ({why})"), layout
        if m == 1:
            return layout, self.new(1, pin=f"size-1 dim ({why})")
        kind = layout[0]
        if kind == "a":
            a = layout[1]
            hi, lo = self.new(k), self.new(m)
            self._inherit(a, [hi, lo])
            self._defn[a] = ("p", (hi, lo))
            self.version += 1
            return hi, lo
        if kind == "p":
            kids = list(layout[1])
            acc = 1
            for i, kid in enumerate(kids):
                if acc == k:
                    return prod_layouts(kids[:i]), prod_layouts(kids[i:])
                sk = self.size(kid)
                if acc * sk > k:
                    need = k // acc
                    if k % acc == 0 and sk % need == 0:
                        a_hi, a_lo = self._factor2(kid, need, sk // need, why)
                        return prod_layouts([*kids[:i], a_hi]), prod_layouts([a_lo, *kids[i + 1:]])
                    break
                acc *= sk
        # general case: k equal rows, unified with one another
        rows = self.split(layout, [m] * k)
        for other in rows[1:]:
            self.unify(rows[0], other, why)
        tile = self.new(k, pin=f"tiled dim ({why}): every row is pruned alike")
        return tile, rows[0]

    # ----------------------------------------------------------- unification
    def unify(self, x: tuple, y: tuple, why: str = "") -> None:
        """Couple two layouts of equal size position by position."""
        x, y = self.norm(x), self.norm(y)
        if x == y:
            return
        sx, sy = self.size(x), self.size(y)
        if sx != sy:
            raise ValueError(f"cannot couple dims of sizes {sx} and {sy} ({why})")
        kx, ky = x[0], y[0]
        if kx == "a" and ky == "a":
            self._union(x[1], y[1])
        elif kx == "a":
            if not self._define(x[1], y):
                self._give_up(x, y, why)
        elif ky == "a":
            if not self._define(y[1], x):
                self._give_up(x, y, why)
        elif kx == "p" and ky == "p":
            self._unify_products(x, y, why)
        else:
            self._unify_segments(x, y, why)

    def _give_up(self, x: tuple, y: tuple, why: str) -> None:
        reason = f"layouts could not be aligned ({why})"
        self.pin(x, reason)
        self.pin(y, reason)

    def _union(self, a: int, b: int) -> None:
        a, b = self.find(a), self.find(b)
        if a == b:
            return
        if self._order[b] < self._order[a]:
            a, b = b, a
        self._parent[b] = a
        if self._pin[a] is None:
            self._pin[a] = self._pin[b]
        if self._mix[a] is None:
            self._mix[a] = self._mix[b]
        self.version += 1

    def _unify_segments(self, x: tuple, y: tuple, why: str) -> None:
        xs = list(x[1]) if x[0] == "s" else [x]
        ys = list(y[1]) if y[0] == "s" else [y]
        while xs and ys:
            a, b = xs[0], ys[0]
            sa, sb = self.size(a), self.size(b)
            if sa == sb:
                self.unify(a, b, why)
                xs.pop(0)
                ys.pop(0)
            elif sa < sb:
                b1, b2 = self.cut(b, sa)
                self.unify(a, b1, why)
                xs.pop(0)
                ys[0] = b2
            else:
                a1, a2 = self.cut(a, sb)
                self.unify(a1, b, why)
                ys.pop(0)
                xs[0] = a2

    def _unify_products(self, x: tuple, y: tuple, why: str) -> None:
        xs, ys = list(x[1]), list(y[1])
        i = j = 0
        while i < len(xs) and j < len(ys):
            a, b = self.norm(xs[i]), self.norm(ys[j])
            sa, sb = self.size(a), self.size(b)
            if sa == 1:
                self.pin(a, f"size-1 factor ({why})")
                i += 1
            elif sb == 1:
                self.pin(b, f"size-1 factor ({why})")
                j += 1
            elif sa == sb:
                self.unify(a, b, why)
                i += 1
                j += 1
            elif sb % sa == 0:
                b1, b2 = self._factor2(b, sa, sb // sa, why)
                ys[j : j + 1] = [b1, b2]
            elif sa % sb == 0:
                a1, a2 = self._factor2(a, sb, sa // sb, why)
                xs[i : i + 1] = [a1, a2]
            else:
                self._give_up(x, y, why)
                return
        for k in xs[i:]:
            self.pin(k, f"size-1 factor ({why})")
        for k in ys[j:]:
            self.pin(k, f"size-1 factor ({why})")

    # ------------------------------------------------------ element level
    def removal_mask(self, layout: tuple, removed: dict[int, torch.Tensor]) -> torch.Tensor:
        """Boolean mask over the positions of ``layout`` that pruning removes.

        ``removed`` maps a leaf atom to a boolean tensor over its indices.
        """
        layout = self.norm(layout)
        return self._mask(layout, removed)

    def _mask(self, layout: tuple, removed: dict[int, torch.Tensor]) -> torch.Tensor:
        kind = layout[0]
        if kind == "a":
            m = removed.get(layout[1])
            if m is None:
                return torch.zeros(self._size[layout[1]], dtype=torch.bool)
            return m
        kids = [self._mask(k, removed) for k in layout[1]]
        if kind == "s":
            return torch.cat(kids)
        shape = [k.numel() for k in kids]
        out = torch.zeros(shape, dtype=torch.bool)
        for axis, k in enumerate(kids):
            view = [1] * len(shape)
            view[axis] = shape[axis]
            out |= k.view(view)
        return out.reshape(-1)

    def index_of(self, layout: tuple, a: int) -> torch.Tensor:
        """For every position of ``layout``, its index in atom ``a`` (``-1`` where absent)."""
        layout = self.norm(layout)
        a = self.find(a)
        return self._index(layout, a)

    def _index(self, layout: tuple, a: int) -> torch.Tensor:
        kind = layout[0]
        if kind == "a":
            n = self._size[layout[1]]
            if layout[1] == a:
                return torch.arange(n)
            return torch.full((n,), -1, dtype=torch.long)
        kids = [self._index(k, a) for k in layout[1]]
        if kind == "s":
            return torch.cat(kids)
        shape = [k.numel() for k in kids]
        out = torch.full(shape, -1, dtype=torch.long)
        for axis, k in enumerate(kids):
            if bool((k >= 0).any()):
                view = [1] * len(shape)
                view[axis] = shape[axis]
                out = torch.where(k.view(view) >= 0, k.view(view).expand(shape), out)
        return out.reshape(-1)

    def describe(self, layout: tuple, names: dict[int, str] | None = None) -> str:
        """A short text form, e.g. ``A3(64)`` or ``[A1(16) ⊕ A2(16)]`` or ``(H(8)×D(64))``."""
        layout = self.norm(layout)
        names = names or {}

        def show(lay: tuple) -> str:
            if lay[0] == "a":
                return f"{names.get(lay[1], 'A' + str(lay[1]))}({self._size[lay[1]]})"
            sep = " ⊕ " if lay[0] == "s" else "×"
            body = sep.join(show(k) for k in lay[1])
            return f"[{body}]" if lay[0] == "s" else f"({body})"

        return show(layout)
