"""The HTML report as a real browser shows it: headless Chromium's DOM and screenshots.

Needs the ``chromium`` command (Debian package ``chromium``; ``make browser`` installs it where apt is
available); skipped with a message otherwise.
"""

from __future__ import annotations

from collections import Counter

import pytest

from anyprune.report import write_report
from tests.report.common import chromium, decode_png, dump_dom, resnet18_report_data, screenshot
from tests.report.test_html import Page

pytestmark = pytest.mark.skipif(
    chromium() is None,
    reason="chromium is not installed: the report is not checked in a browser (Debian: `apt-get install chromium`, "
           "or `make browser`)",
)

KEPT = (0x25, 0x63, 0xEB)  # --kept in the report's CSS


def is_kept(px: tuple[int, int, int]) -> bool:
    return all(abs(a - b) <= 3 for a, b in zip(px, KEPT))


def is_removed(px: tuple[int, int, int]) -> bool:
    """The removed part: pale red with darker red stripes and edge."""
    r, g, b = px
    return r >= 200 and r - g >= 40 and r - b >= 40


def pixels(row: bytes) -> list[tuple[int, int, int]]:
    return [(row[i], row[i + 1], row[i + 2]) for i in range(0, len(row), 3)]


def bar_bands(rows: list[bytes]) -> list[tuple[int, int]]:
    """``(kept px, removed px)`` along the middle scanline of each horizontal band holding bar colours."""
    counts = []
    for row in rows:
        px = pixels(row)
        counts.append((sum(map(is_kept, px)), sum(map(is_removed, px))))
    bands, start = [], None
    for y, (k, r) in enumerate([*counts, (0, 0)]):
        if (k or r) and start is None:
            start = y
        elif not (k or r) and start is not None:
            bands.append(counts[(start + y - 1) // 2])
            start = None
    return bands


def test_chromium_shows_the_numbers_of_a_real_report(tmp_path):
    data = resnet18_report_data()
    page = write_report(data, tmp_path / "report.html")
    dom = dump_dom(page)
    assert dom.lstrip().lower().startswith("<!doctype html>")
    p = Page(dom)
    (p0, p1), (m0, m1) = data["summary"]["params"], data["summary"]["macs"]
    lat0, lat1 = data["summary"]["latency_ms"]
    assert p.row(data_metric="params")[:4] == ["Parameters", f"{p0:,}", f"{p0 / 1e6:.2f} M", f"{p1:,}"]
    assert p.row(data_metric="macs")[1] == f"{m0:,}"
    assert p.row(data_metric="macs")[3] == f"{m1:,}"
    assert p.row(data_metric="latency_ms")[1:3] == [f"{lat0:,.2f} ms", f"{lat1:,.2f} ms"]
    assert p.row(data_name="layer4.1.conv2") == ["layer4.1.conv2", "Conv2d", "512 → 256", "50% kept"]
    assert p.row(data_name="fc") == ["fc", "Linear", "1,000 → 1,000", "100% kept"]
    assert p.row(data_root="layer4.0.conv2")[:7] == ["11", "layer4.0.conv2", "channels", "512", "256", "256", "exact"]
    outputs = [cells for a, cells in p.rows if a.get("class") == "pin" and cells[0].startswith("model output")]
    assert [cells[1:] for cells in outputs] == [["1,000", "fc.weight", "fc.bias"]]

    png = tmp_path / "report.png"
    screenshot(page, png, 1200, 1600)
    assert png.is_file()
    assert 20_000 < png.stat().st_size < 5_000_000
    width, height, rows = decode_png(png.read_bytes())
    assert (width, height) == (1200, 1600)
    colours = Counter(px for row in rows[::8] for px in pixels(row))
    assert len(colours) > 50, "the screenshot is (almost) a single colour"
    assert colours.most_common(1)[0][1] < 0.95 * sum(colours.values())
    assert any(is_kept(px) for px in colours)
    assert any(is_removed(px) for px in colours)


def test_bars_are_drawn_to_scale_and_names_stay_text(tmp_path):
    hostile = ['<script>document.title="owned"</script>', '<img src=x onerror="alert(1)">']
    data = {
        "title": "Bars", "model": hostile[1],
        "summary": {"params": [10, 5], "macs": [10, 5], "latency_ms": None},
        "layers": [
            {"name": hostile[0], "type": "Linear", "before": 100, "after": 25},
            {"name": "same", "type": "Linear", "before": 200, "after": 200},
            {"name": hostile[1], "type": "Conv2d", "before": 400, "after": 100},
        ],
        "groups": [], "pinned": [],
    }
    page = write_report(data, tmp_path / "bars.html")

    p = Page(dump_dom(page))
    assert not {tag for tag, _ in p.elements} & {"script", "img"}
    assert [a["data-name"] for _, a in p.elements if a.get("class") == "layer"] == [*hostile[:1], "same", hostile[1]]
    assert p.row(data_name=hostile[0])[:3] == [hostile[0], "Linear", "100 → 25"]
    assert p.row(data_metric="latency_ms") == ["CPU latency", "n/a", "n/a", "n/a", "n/a"]

    png = tmp_path / "bars.png"
    screenshot(page, png, 1000, 700)
    _, _, rows = decode_png(png.read_bytes())
    legend, *bars = bar_bands(rows)
    assert legend[0] > 10
    assert legend[1] > 10
    assert len(bars) == 3, bar_bands(rows)
    track = sum(bars[2])  # the widest layer (400) spans the whole track
    assert track > 300
    expected = [(25, 75), (200, 0), (100, 300)]  # (kept, removed) in units of the widest layer, 400
    for (kept, removed), (k, r) in zip(bars, expected):
        assert kept == pytest.approx(k / 400 * track, abs=2)
        assert removed == pytest.approx(r / 400 * track, abs=2)
