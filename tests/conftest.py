from __future__ import annotations

import os

import pytest
import torch

from tests.helpers import STATS


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def pytest_terminal_summary(terminalreporter) -> None:
    """Report how much the reliability tests checked (fuzzed networks, fault-injection points)."""
    s = STATS
    if s["networks"]:
        terminalreporter.write_sep("-", f"anyprune fuzz (profile {os.environ.get('ANYPRUNE_FUZZ', 'fast')!r})")
        terminalreporter.write_line(
            f"{s['networks']} random networks built, {s['groups_found']} prunable groups found, "
            f"{s['groups_checked']} groups pruned and checked ({s['exact']} exact, against the masked model; "
            f"{s['approximate']} approximate, shapes only), {s['rebuilt']} pruned networks rebuilt and linted; "
            f"by structure: {s['structure:heads']} heads groups ({s['attention:heads']} of attention blocks), "
            f"{s['structure:head_dim']} head_dim groups ({s['attention:head_dim']} of attention blocks)"
        )
    if s["fault_points"]:
        terminalreporter.write_sep("-", "anyprune fault injection")
        terminalreporter.write_line(
            f"{s['fault_points']} failure points tried on {s['fault_models']} models, "
            f"{s['fault_restored']} restored exactly"
        )
