"""Reports of a pruning run: one self-contained HTML page (no scripts, fonts or external resources).

Build the report's data with :func:`layer_widths` (before and after pruning, merged by :func:`layer_rows`),
:func:`group_summary` and :func:`pinned_summary`, then :func:`write_report` it; the schema is documented in
:func:`render_report`.
"""

from __future__ import annotations

from .html import (
    group_summary,
    layer_rows,
    layer_widths,
    pinned_summary,
    render_report,
    validate_report_data,
    write_report,
)

__all__ = [
    "group_summary",
    "layer_rows",
    "layer_widths",
    "pinned_summary",
    "render_report",
    "validate_report_data",
    "write_report",
]
