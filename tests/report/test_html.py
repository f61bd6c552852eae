"""The HTML report: structure, escaping, numbers, bar widths, validation, and a report of a real pruning run."""

from __future__ import annotations

import copy
import re
from html.parser import HTMLParser

import pytest
import torch
from torch import nn

from anyprune import ConfigError
from anyprune.report import layer_rows, layer_widths, render_report, validate_report_data, write_report
from tests.report.common import resnet18_pruned_weight_widths, resnet18_report_data

EVIL = '<script>alert("x")</script>'


def sample() -> dict:
    return {
        "title": "Pruning <b>report</b>",
        "model": "hf:./my & model",
        "summary": {"params": [1_000_000, 250_000], "macs": [4_000_000_000, 1_000_000_000],
                    "latency_ms": [20.0, 8.0]},
        "layers": [
            {"name": "encoder.conv1", "type": "Conv2d", "before": 64, "after": 32},
            {"name": f"block.{EVIL}", "type": "Linear", "before": 256, "after": 64},
            {"name": "head", "type": "Linear", "before": 512, "after": 512},
        ],
        "groups": [
            {"root": "encoder.conv1", "size": 64, "pruned": 32, "structure": "channels", "exact": True,
             "coupled": ["encoder.bn1", "encoder.conv2"]},
            {"root": "attn.q_proj", "size": 8, "pruned": 2, "structure": "heads", "exact": False,
             "coupled": [f"attn.{n}_proj" for n in "kvo"] + [f"layer{i}" for i in range(7)]},
        ],
        "pinned": [{"reason": f"model output {EVIL}", "count": 1000, "examples": ["head.weight", "head.bias"]}],
        "settings": {"ratio": 0.5, "importance": "l1"},
    }


class Page(HTMLParser):
    """Elements (tag, attrs) in document order, and the text of each table row by its attributes."""

    def __init__(self, page: str) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict]] = []
        self.rows: list[tuple[dict, list[str]]] = []
        self.text: list[str] = []
        self._row: tuple[dict, list[str]] | None = None
        self.feed(page)
        self.close()

    def handle_starttag(self, tag, attrs):
        a = {k: v or "" for k, v in attrs}
        self.elements.append((tag, a))
        if tag == "tr":
            self._row = (a, [])
            self.rows.append(self._row)

    def handle_endtag(self, tag):
        if tag == "tr":
            self._row = None

    def handle_data(self, data):
        self.text.append(data)
        if self._row is not None and data.strip():
            self._row[1].append(data.strip())

    def row(self, **attrs) -> list[str]:
        found = [cells for a, cells in self.rows if all(a.get(k.replace("_", "-")) == v for k, v in attrs.items())]
        assert len(found) == 1, (attrs, found)
        return found[0]

    def by_class(self, cls: str) -> list[dict]:
        return [a for _, a in self.elements if cls in a.get("class", "").split()]


def width(style: str) -> float:
    m = re.fullmatch(r"width:([0-9.]+)%", style)
    assert m, style
    return float(m.group(1))


def test_page_is_self_contained():
    page = render_report(sample())
    assert page.startswith("<!DOCTYPE html>")
    tags = {tag for tag, _ in Page(page).elements}
    assert {"html", "head", "style", "body", "table"} <= tags
    assert not tags & {"script", "link", "img", "iframe", "object", "embed"}
    lowered = page.lower()
    for needle in ("http:", "https:", "//", "url(", "@import", "@font-face", "src="):
        assert needle not in lowered, needle
    assert lowered.count("<style>") == 1


def test_every_string_is_escaped():
    page = render_report(sample())
    assert "<script" not in page
    assert "<b>report" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page
    assert "Pruning &lt;b&gt;report&lt;/b&gt;" in page
    assert "hf:./my &amp; model" in page
    parsed = Page(page)
    # the hostile name is text of a row and the value of its data-name attribute, never markup
    assert parsed.row(data_name=f"block.{EVIL}")[0] == f"block.{EVIL}"
    assert any(EVIL in t for t in parsed.text)


def test_summary_numbers_and_ratios():
    p = Page(render_report(sample()))
    assert p.row(data_metric="params") == ["Parameters", "1,000,000", "1.00 M", "250,000", "250.00 K", "0.250×",
                                           "−75.0%"]
    assert p.row(data_metric="macs") == ["MACs", "4,000,000,000", "4.00 G", "1,000,000,000", "1.00 G", "0.250×",
                                         "−75.0%"]
    assert p.row(data_metric="latency_ms") == ["CPU latency", "20.00 ms", "8.00 ms", "0.400×", "−60.0%",
                                               "2.50× faster"]
    assert "<b>2</b> of 3 layers narrowed" in render_report(sample())


def test_missing_latency_reads_na():
    data = sample()
    data["summary"]["latency_ms"] = None
    p = Page(render_report(data))
    assert p.row(data_metric="latency_ms") == ["CPU latency", "n/a", "n/a", "n/a", "n/a"]


def test_zero_before_gives_na_ratio():
    data = sample()
    data["summary"]["macs"] = [0, 0]
    assert Page(render_report(data)).row(data_metric="macs")[-2:] == ["n/a", "n/a"]


def test_layer_rows_have_labels_and_proportional_bars():
    data = sample()
    page = render_report(data)
    p = Page(page)
    assert p.row(data_name="encoder.conv1") == ["encoder.conv1", "Conv2d", "64 → 32", "50% kept"]
    assert p.row(data_name="head") == ["head", "Linear", "512 → 512", "100% kept"]
    kept = [width(a["style"]) for a in p.by_class("kept") if "style" in a]
    removed = [width(a["style"]) for a in p.by_class("removed") if "style" in a]
    assert len(kept) == len(removed) == len(data["layers"])
    scale = max(r["before"] for r in data["layers"])
    for row, k, r in zip(data["layers"], kept, removed):
        assert k == pytest.approx(row["after"] / scale * 100, abs=0.006)
        assert r == pytest.approx((row["before"] - row["after"]) / scale * 100, abs=0.006)
    # 64 -> 32 and 256 -> 64 of a 512-wide track; the widest layer fills it
    assert (kept, removed) == ([6.25, 12.5, 100.0], [6.25, 37.5, 0.0])
    # kept and removed are drawn differently
    css = page[page.index("<style>"):page.index("</style>")]
    colours = {cls: re.search(rf"\.{cls} {{[^}}]*background: ([^;]+);", css).group(1) for cls in ("kept", "removed")}
    assert colours["kept"] != colours["removed"]


def test_groups_and_pinned_with_truncated_lists():
    p = Page(render_report(sample()))
    assert p.row(data_root="encoder.conv1") == ["1", "encoder.conv1", "channels", "64", "32", "32", "exact",
                                                "encoder.bn1", "encoder.conv2"]
    heads = p.row(data_root="attn.q_proj")
    assert heads[:7] == ["2", "attn.q_proj", "heads", "8", "2", "6", "approximate"]
    assert heads[7:] == ["attn.k_proj", "attn.v_proj", "attn.o_proj", "layer0", "layer1", "layer2", "+4 more"]
    pins = [cells for a, cells in p.rows if a.get("class") == "pin"]
    assert pins == [[f"model output {EVIL}", "1,000", "head.weight", "head.bias"]]


def test_empty_sections_say_so():
    data = sample()
    data.update(layers=[], groups=[], pinned=[])
    del data["settings"]
    page = render_report(data)
    for text in ("No prunable layers listed.", "No prunable groups.", "Nothing was pinned."):
        assert text in page
    assert 'class="layer"' not in page
    assert "<dl" not in page


def test_settings_are_listed():
    page = render_report(sample())
    assert "<dt>ratio</dt><dd>0.5</dd><dt>importance</dt><dd>l1</dd>" in page


def _set(path: str, value):
    def edit(d: dict) -> None:
        *keys, last = path.split(".")
        for k in keys:
            d = d[int(k)] if k.isdigit() else d[k]
        if value is KeyError:
            del d[last]
        elif last.isdigit():
            d[int(last)] = value
        else:
            d[last] = value
    return edit


@pytest.mark.parametrize(("edit", "message"), [
    (_set("title", KeyError), "report data: missing field 'title'"),
    (_set("model", 3), "report data: model must be a str, got int"),
    (_set("summary", [1, 2]), "report data: summary must be a dict, got list"),
    (_set("summary.macs", KeyError), "report data: summary: missing field 'macs'"),
    (_set("summary.latency_ms", KeyError), "report data: summary: missing field 'latency_ms'"),
    (_set("summary.params", [1, 2, 3]), r"report data: summary.params must be \[before, after\], got 3 values"),
    (_set("summary.params.1", 2.5), r"report data: summary.params\[1\] must be an int, got float"),
    (_set("summary.macs.0", True), r"report data: summary.macs\[0\] must be an int, got bool"),
    (_set("summary.params.0", -1), r"report data: summary.params\[0\] must be >= 0, got -1"),
    (_set("summary.latency_ms", [float("nan"), 1.0]), r"summary.latency_ms\[0\] must be a finite number >= 0"),
    (_set("summary.latency_ms", "fast"), "report data: summary.latency_ms must be a list, got str"),
    (_set("layers", {"a": 1}), "report data: layers must be a list, got dict"),
    (_set("layers.1.after", "64"), r"report data: layers\[1\].after must be an int, got str"),
    (_set("layers.0.name", None), r"report data: layers\[0\].name must be a str, got None"),
    (_set("layers.2.type", KeyError), r"report data: layers\[2\]: missing field 'type'"),
    (_set("groups.1.structure", "rows"), r"groups\[1\].structure must be one of heads, head_dim, channels"),
    (_set("groups.0.pruned", 65), r"groups\[0\].pruned \(65\) is larger than groups\[0\].size \(64\)"),
    (_set("groups.0.exact", 1), r"report data: groups\[0\].exact must be a bool, got int"),
    (_set("groups.1.coupled", "attn.k_proj"), r"report data: groups\[1\].coupled must be a list, got str"),
    (_set("groups.1.coupled.0", 7), r"report data: groups\[1\].coupled\[0\] must be a str, got int"),
    (_set("pinned.0.count", -3), r"report data: pinned\[0\].count must be >= 0, got -3"),
    (_set("pinned.0", "output"), r"report data: pinned\[0\] must be a dict, got str"),
    (_set("grups", []), "report data: unknown field 'grups'"),
    (_set("layers.0.width", 3), r"report data: layers\[0\]: unknown field 'width'"),
    (_set("settings", {"ratio": [0.5]}), "report data: settings.ratio must be a str, number, bool or None"),
    (_set("settings", []), "report data: settings must be a dict, got list"),
])
def test_validation_names_the_field(edit, message):
    data = sample()
    edit(data)
    with pytest.raises(ConfigError, match=message):
        render_report(data)
    with pytest.raises(ValueError, match=message):
        validate_report_data(data)


def test_not_a_dict():
    with pytest.raises(ConfigError, match="report data must be a dict, got list"):
        render_report([])


def test_validate_accepts_tuples_and_returns_plain_copy():
    data = sample()
    data["summary"]["params"] = (10, 5)
    out = validate_report_data(data)
    assert out["summary"]["params"] == (10, 5)
    assert out["layers"] == data["layers"]
    assert out["layers"] is not data["layers"]


def test_write_report(tmp_path):
    path = write_report(sample(), tmp_path / "sub" / "report.html")
    assert path == tmp_path / "sub" / "report.html"
    assert path.read_text(encoding="utf-8") == render_report(sample())
    bad = sample()
    del bad["pinned"]
    with pytest.raises(ConfigError, match="missing field 'pinned'"):
        write_report(bad, tmp_path / "bad.html")
    assert not (tmp_path / "bad.html").exists()


class Conv1D(nn.Module):
    """Shaped like Hugging Face's GPT-2 projection: weight ``[in, out]`` and ``nf`` outputs."""

    def __init__(self, nf: int, nx: int) -> None:
        super().__init__()
        self.nf = nf
        self.weight = nn.Parameter(torch.zeros(nx, nf))


class LlamaLikeRMSNorm(nn.Module):
    def __init__(self, n: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(n))


def test_layer_widths_of_every_kind():
    model = nn.Module()
    model.embed = nn.Embedding(100, 48)
    model.conv = nn.Conv2d(3, 16, 3)
    model.deconv = nn.ConvTranspose2d(16, 12, 2)
    model.bn = nn.BatchNorm2d(16)
    model.inorm = nn.InstanceNorm1d(7, affine=True)
    model.gn = nn.GroupNorm(4, 20)
    model.ln = nn.LayerNorm([5, 24])
    model.rms = nn.RMSNorm(40)
    model.mine = LlamaLikeRMSNorm(36)
    model.proj = Conv1D(72, 48)
    model.act = nn.ReLU()
    model.block = nn.Sequential(nn.Linear(48, 96), nn.Dropout())
    assert layer_widths(model) == {
        "embed": ("Embedding", 48), "conv": ("Conv2d", 16), "deconv": ("ConvTranspose2d", 12),
        "bn": ("BatchNorm2d", 16), "inorm": ("InstanceNorm1d", 7), "gn": ("GroupNorm", 20), "ln": ("LayerNorm", 24),
        "rms": ("RMSNorm", 40), "mine": ("LlamaLikeRMSNorm", 36), "proj": ("Conv1D", 72),
        "block.0": ("Linear", 96),
    }


def test_layer_widths_on_meta_and_bad_input():
    with torch.device("meta"):
        model = nn.Sequential(nn.Linear(8, 1024), nn.LayerNorm(1024))
    assert layer_widths(model) == {"0": ("Linear", 1024), "1": ("LayerNorm", 1024)}
    with pytest.raises(ConfigError, match=r"layer_widths: model must be a torch\.nn\.Module, got dict"):
        layer_widths({})


def test_layer_rows_merges_before_and_after():
    before = {"a": ("Linear", 8), "b": ("Linear", 4), "c": ("Conv2d", 6)}
    after = {"a": ("Linear", 8), "b": ("Linear", 2)}
    assert layer_rows(before, after) == [
        {"name": "a", "type": "Linear", "before": 8, "after": 8},
        {"name": "b", "type": "Linear", "before": 4, "after": 2},
        {"name": "c", "type": "Conv2d", "before": 6, "after": 0},
    ]
    assert [r["name"] for r in layer_rows(before, after, changed_only=True)] == ["b", "c"]


def test_report_of_a_real_resnet18_pruning():
    data = resnet18_report_data()
    validate_report_data(data)
    (p0, p1), (m0, m1) = data["summary"]["params"], data["summary"]["macs"]
    assert p0 == 11_689_512
    assert 0 < p1 < p0 / 2
    assert 0 < m1 < m0 / 2
    # the widths the report lists are the widths of the pruned weights
    weights = resnet18_pruned_weight_widths()
    layers = {r["name"]: r for r in data["layers"]}
    assert set(weights) <= set(layers)
    assert all(layers[name]["after"] == w for name, w in weights.items())
    assert layers["layer4.1.conv2"] == {"name": "layer4.1.conv2", "type": "Conv2d", "before": 512, "after": 256}
    assert layers["fc"]["before"] == layers["fc"]["after"] == 1000
    assert len(data["groups"]) == 12
    assert all(g["structure"] == "channels" and g["exact"] and g["pruned"] == g["size"] // 2 for g in data["groups"])
    first = data["groups"][0]
    assert first["root"] == "conv1"
    assert {"bn1", "layer1.0.conv1", "layer2.0.downsample.0"} <= set(first["coupled"])
    outputs = [pin for pin in data["pinned"] if pin["reason"].startswith("model output")]
    assert len(outputs) == 1
    assert outputs[0]["count"] == 1000
    assert outputs[0]["examples"] == ["fc.weight", "fc.bias"]
    assert not any("site-packages" in pin["reason"] for pin in data["pinned"])

    page = render_report(data)
    p = Page(page)
    assert p.row(data_metric="params")[1:4:2] == [f"{p0:,}", f"{p1:,}"]
    assert p.row(data_name="layer4.1.conv2")[2] == "512 → 256"
    assert p.row(data_root="conv1")[:7] == ["1", "conv1", "channels", "64", "32", "32", "exact"]
    assert len([a for a, _ in p.rows if a.get("class") == "group"]) == 12
    assert len(p.by_class("layer")) == len(data["layers"])
    # fc (1000 wide, not pruned) spans the track; layer4 convs (512 -> 256) take 25.6% kept + 25.6% removed
    k = {a["data-name"]: a for a in p.by_class("layer")}
    assert k["fc"]["data-after"] == "1000"
    assert 'data-name="layer4.1.conv2" data-before="512" data-after="256"' in page
    assert 'style="width:25.60%"></span><span class="removed" style="width:25.60%">' in page


def test_sample_is_not_mutated_by_rendering():
    data = sample()
    snapshot = copy.deepcopy(data)
    render_report(data)
    assert data == snapshot
