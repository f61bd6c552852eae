"""The layout algebra: cut, factor, unify."""

from __future__ import annotations

import torch

from anyprune.dims.layout import AtomTable, cat_layouts, prod_layouts


def test_unify_atoms_and_sizes():
    t = AtomTable()
    a, b = t.new(4), t.new(4)
    t.unify(a, b)
    assert t.norm(a) == t.norm(b)


def test_cut_is_global():
    t = AtomTable()
    a = t.new(8)
    left, right = t.cut(a, 3)
    assert t.size(left) == 3
    assert t.size(right) == 5
    assert t.norm(a) == cat_layouts([t.norm(left), t.norm(right)])


def test_sum_against_atom_refines_the_atom():
    t = AtomTable()
    a, b, c = t.new(6), t.new(2), t.new(4)
    t.unify(a, cat_layouts([b, c]))
    idx = t.index_of(a, c[1])
    assert idx.tolist() == [-1, -1, 0, 1, 2, 3]


def test_factor_atom_into_heads():
    t = AtomTable()
    a = t.new(12)
    h, d = t.factor(a, [3, 4])
    assert t.norm(a) == prod_layouts([t.norm(h), t.norm(d)])
    removed = {t.norm(h)[1]: torch.tensor([False, True, False])}
    assert t.removal_mask(a, removed).nonzero().flatten().tolist() == [4, 5, 6, 7]


def test_rotate_half_ties_the_halves():
    t = AtomTable()
    x = t.new(8)
    lo, hi = t.cut(x, 4)
    t.unify(cat_layouts([hi, lo]), x)  # cat(x2, x1) added to x
    atoms = t.atoms(x)
    assert len(atoms) == 1, "both halves are one atom"
    removed = {atoms[0]: torch.tensor([True, False, False, False])}
    assert t.removal_mask(x, removed).nonzero().flatten().tolist() == [0, 4]


def test_products_realign_by_mixed_radix():
    t = AtomTable()
    a, b = t.new(6), t.new(4)
    c, d = t.new(3), t.new(8)
    t.unify(prod_layouts([a, b]), prod_layouts([c, d]))
    assert t.size(a) * t.size(b) == 24
    assert len(t.atoms(prod_layouts([a, b]))) == 3


def test_pins_propagate_through_union_and_refinement():
    t = AtomTable()
    a, b = t.new(4, pin="input"), t.new(4)
    t.unify(a, b)
    left, _ = t.cut(b, 2)
    assert t.pin_reason(left[1]) == "input"


def test_shrink_updates_sizes_everywhere():
    t = AtomTable()
    a = t.new(6)
    _h, d = t.factor(a, [2, 3])
    t.shrink({t.norm(d)[1]: 1})
    assert t.size(a) == 4
