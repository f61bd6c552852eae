"""The bad-input sweep: every row of ``tests/bad_input_table.py`` gives its error and leaves the model untouched."""

from __future__ import annotations

import os
import pathlib
import re
import warnings

import pytest

from anyprune.errors import AnyPruneError
from tests.bad_input_table import ROWS, Row, render_markdown
from tests.helpers import assert_same_state, state

DOC = pathlib.Path(__file__).resolve().parent.parent / "docs" / "bad_inputs.md"


@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_bad_input(row: Row):
    s = row.setup()
    before = state(s.model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pinned-dim notices of the tiny models are not what is tested
        if row.error is None:
            result = row.call(s)
            assert row.check is not None, f"{row.id}: a row that must work needs a check"
            row.check(s, result)
            return
        with pytest.raises(row.error, match=re.escape(row.message)) as info:
            row.call(s)
    assert isinstance(info.value, AnyPruneError), f"{row.id}: {type(info.value).__name__} is not an anyprune error"
    assert_same_state(before, state(s.model))


def test_table_is_well_formed():
    ids = [r.id for r in ROWS]
    assert len(ids) == len(set(ids)), "duplicate rows"
    assert all(r.message for r in ROWS)
    assert len(ROWS) >= 150
    assert len({r.entry for r in ROWS}) >= 25, "every public entry point has rows"


def test_doc_is_in_sync_with_the_table():
    text = render_markdown(ROWS)
    if os.environ.get("ANYPRUNE_WRITE_DOCS"):
        DOC.write_text(text)
    assert DOC.read_text() == text, "docs/bad_inputs.md is out of date: run `make bad-inputs-doc`"
