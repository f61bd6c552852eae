"""Write one benchmark's section into ``docs/benchmarks.md`` (shared by the benchmark scripts)."""

from __future__ import annotations

from pathlib import Path

DOCS = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"


def publish(text: str, start: str, end: str, write: bool = True) -> None:
    """Print a benchmark's section and, with ``write``, put it into ``docs/benchmarks.md``."""
    print(text)
    if write:
        write_section(text, start, end)


def write_section(section: str, start: str, end: str, path: Path = DOCS) -> None:
    """Replace the text between the markers ``start`` and ``end`` (both inside ``section``) or append ``section``."""
    old = path.read_text() if path.exists() else "# Benchmarks\n"
    i, j = old.find(start), old.find(end)
    if i != -1 and j > i:
        new = old[:i] + section.rstrip("\n") + old[j + len(end):]
    else:
        new = old.rstrip("\n") + "\n\n" + section.rstrip("\n") + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(new)
