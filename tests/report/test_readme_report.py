"""The README's HTML report example runs as written, and the screenshot it shows is there."""

from __future__ import annotations

import re
from pathlib import Path

from tests.report.test_html import Page

ROOT = Path(__file__).resolve().parents[2]


def readme_section() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return text[text.index("## HTML report"):text.index("\n## ", text.index("## HTML report") + 1)]


def test_readme_report_example(tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", readme_section(), flags=re.S)
    assert len(blocks) == 1
    monkeypatch.chdir(tmp_path)
    exec(compile(blocks[0], "README.md", "exec"), {})
    p = Page((tmp_path / "report.html").read_text(encoding="utf-8"))
    assert p.row(data_metric="params")[1] == "11,689,512"
    assert p.row(data_name="layer4.1.conv2")[2] == "512 → 256"
    assert len([a for a, _ in p.rows if a.get("class") == "group"]) == 12


def test_readme_shows_the_screenshot():
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", readme_section())
    assert images == ["docs/report.png"]
    png = (ROOT / images[0]).read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert 20_000 < len(png) < 300_000
