"""A self-contained HTML report of a pruning run.

:func:`render_report` turns a plain dict (see its docstring for the schema)
into one HTML page: inline CSS, no scripts, no fonts, no external resources,
so the file can be mailed, archived or opened offline. Every string that comes
from the model (layer names, reasons) is escaped.

:func:`layer_widths` lists the output width of every prunable layer of a
model; call it before and after pruning and merge the two with
:func:`layer_rows` to build the report's ``"layers"``. :func:`group_summary`
and :func:`pinned_summary` describe the groups and pinned dims of a
:class:`anyprune.DependencyGraph` in the report's format.
"""

from __future__ import annotations

import math
import os
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from html import escape
from pathlib import Path
from typing import Any

from torch import nn

from ..errors import ConfigError

__all__ = [
    "STRUCTURES",
    "group_summary",
    "layer_rows",
    "layer_widths",
    "pinned_summary",
    "render_report",
    "validate_report_data",
    "write_report",
]

#: The values ``groups[i]["structure"]`` may take (see :attr:`anyprune.groups.Group.structure`).
STRUCTURES = ("heads", "head_dim", "channels")

#: Longest list of names shown in a cell; the rest is summarised as "+N more".
MAX_NAMES = 6


# ---------------------------------------------------------------- validation
def _where(path: str) -> str:
    return f"report data: {path}" if path else "report data"


def _kind(v: Any) -> str:
    return "None" if v is None else type(v).__name__


def _field(obj: Mapping, key: str, path: str) -> Any:
    if key not in obj:
        raise ConfigError(f"{_where(path)}: missing field {key!r}")
    return obj[key]


def _dict(v: Any, path: str) -> Mapping:
    if not isinstance(v, Mapping):
        raise ConfigError(f"{_where(path)} must be a dict, got {_kind(v)}")
    return v


def _list(v: Any, path: str) -> Sequence:
    if not isinstance(v, (list, tuple)):
        raise ConfigError(f"{_where(path)} must be a list, got {_kind(v)}")
    return v


def _str(v: Any, path: str) -> str:
    if not isinstance(v, str):
        raise ConfigError(f"{_where(path)} must be a str, got {_kind(v)}")
    return v


def _int(v: Any, path: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise ConfigError(f"{_where(path)} must be an int, got {_kind(v)}")
    if v < 0:
        raise ConfigError(f"{_where(path)} must be >= 0, got {v}")
    return v


def _num(v: Any, path: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ConfigError(f"{_where(path)} must be a number, got {_kind(v)}")
    if not math.isfinite(v) or v < 0:
        raise ConfigError(f"{_where(path)} must be a finite number >= 0, got {v}")
    return float(v)


def _pair(v: Any, path: str, item) -> tuple:
    seq = _list(v, path)
    if len(seq) != 2:
        raise ConfigError(f"{_where(path)} must be [before, after], got {len(seq)} values")
    return item(seq[0], f"{path}[0]"), item(seq[1], f"{path}[1]")


def _strs(v: Any, path: str) -> list[str]:
    return [_str(s, f"{path}[{i}]") for i, s in enumerate(_list(v, path))]


def _known(obj: Mapping, keys: Iterable[str], path: str) -> None:
    extra = sorted(str(k) for k in obj if k not in set(keys))
    if extra:
        raise ConfigError(f"{_where(path)}: unknown field {extra[0]!r} (expected {', '.join(keys)})")


_TOP = ("title", "model", "summary", "layers", "groups", "pinned", "settings")


def validate_report_data(data: Any) -> dict:
    """Check ``data`` against the schema of :func:`render_report`; return a normalised copy.

    Raises:
        ConfigError: (a ``ValueError``) naming the first missing, unknown or ill-typed field,
            e.g. ``report data: layers[3].after must be an int, got str``.
    """
    d = _dict(data, "")
    _known(d, _TOP, "")
    out: dict[str, Any] = {"title": _str(_field(d, "title", ""), "title"),
                           "model": _str(_field(d, "model", ""), "model")}

    s = _dict(_field(d, "summary", ""), "summary")
    _known(s, ("params", "macs", "latency_ms"), "summary")
    lat = _field(s, "latency_ms", "summary")
    out["summary"] = {
        "params": _pair(_field(s, "params", "summary"), "summary.params", _int),
        "macs": _pair(_field(s, "macs", "summary"), "summary.macs", _int),
        "latency_ms": None if lat is None else _pair(lat, "summary.latency_ms", _num),
    }

    layers = []
    for i, item in enumerate(_list(_field(d, "layers", ""), "layers")):
        p = f"layers[{i}]"
        row = _dict(item, p)
        _known(row, ("name", "type", "before", "after"), p)
        layers.append({"name": _str(_field(row, "name", p), f"{p}.name"),
                       "type": _str(_field(row, "type", p), f"{p}.type"),
                       "before": _int(_field(row, "before", p), f"{p}.before"),
                       "after": _int(_field(row, "after", p), f"{p}.after")})
    out["layers"] = layers

    groups = []
    for i, item in enumerate(_list(_field(d, "groups", ""), "groups")):
        p = f"groups[{i}]"
        row = _dict(item, p)
        _known(row, ("root", "size", "pruned", "structure", "exact", "coupled"), p)
        size = _int(_field(row, "size", p), f"{p}.size")
        pruned = _int(_field(row, "pruned", p), f"{p}.pruned")
        if pruned > size:
            raise ConfigError(f"{_where(p)}.pruned ({pruned}) is larger than {p}.size ({size})")
        structure = _str(_field(row, "structure", p), f"{p}.structure")
        if structure not in STRUCTURES:
            raise ConfigError(f"{_where(p)}.structure must be one of {', '.join(STRUCTURES)}, got {structure!r}")
        exact = _field(row, "exact", p)
        if not isinstance(exact, bool):
            raise ConfigError(f"{_where(p)}.exact must be a bool, got {_kind(exact)}")
        groups.append({"root": _str(_field(row, "root", p), f"{p}.root"), "size": size, "pruned": pruned,
                       "structure": structure, "exact": exact,
                       "coupled": _strs(_field(row, "coupled", p), f"{p}.coupled")})
    out["groups"] = groups

    pinned = []
    for i, item in enumerate(_list(_field(d, "pinned", ""), "pinned")):
        p = f"pinned[{i}]"
        row = _dict(item, p)
        _known(row, ("reason", "count", "examples"), p)
        pinned.append({"reason": _str(_field(row, "reason", p), f"{p}.reason"),
                       "count": _int(_field(row, "count", p), f"{p}.count"),
                       "examples": _strs(_field(row, "examples", p), f"{p}.examples")})
    out["pinned"] = pinned

    settings = {}
    raw_settings = d.get("settings")
    for k, v in (_dict(raw_settings, "settings") if raw_settings is not None else {}).items():
        key = _str(k, "settings (a key)")
        if v is not None and (isinstance(v, (list, tuple, dict, set)) or not isinstance(v, (str, int, float))):
            raise ConfigError(f"{_where(f'settings.{key}')} must be a str, number, bool or None, got {_kind(v)}")
        settings[key] = v
    out["settings"] = settings
    return out


# ---------------------------------------------------------------- formatting
def _e(s: Any) -> str:
    return escape(str(s), quote=True)


def _n(v: int) -> str:
    return f"{v:,}"


def _compact(v: float) -> str:
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(v) >= scale:
            return f"{v / scale:.2f} {unit}"
    return f"{v:g}"


def _ms(v: float) -> str:
    return f"{v:,.2f} ms" if v >= 0.1 else f"{v:.3g} ms"


def _pct(x: float) -> str:
    return f"{x:.2f}%"


def _change(before: float, after: float) -> str:
    if before == 0:
        return "n/a"
    c = (after - before) / before * 100
    sign = "−" if c < 0 else "+"
    return f"{sign}{abs(c):.1f}%"


def _names(names: Sequence[str], limit: int = MAX_NAMES) -> str:
    if not names:
        return '<span class="muted">none</span>'
    shown = "".join(f"<code>{_e(n)}</code> " for n in names[:limit])
    rest = len(names) - limit
    more = f'<span class="more">+{rest} more</span>' if rest > 0 else ""
    return f'<span class="names">{shown}{more}</span>'


_CSS = """
:root { --kept: #2563eb; --removed: #f2a7a0; --removed-edge: #d9534f; --line: #e3e6eb; --muted: #6b7280; }
* { box-sizing: border-box; }
body { margin: 0; padding: 24px 32px 48px; color: #1f2933; background: #fff;
  font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
h1 { font-size: 24px; margin: 0 0 4px; }
h2 { font-size: 18px; margin: 32px 0 8px; padding-bottom: 4px; border-bottom: 2px solid var(--line); }
.sub { color: var(--muted); margin: 0 0 16px; }
.sub code { color: #1f2933; }
code { font: 12.5px/1.4 ui-monospace, "SFMono-Regular", Menlo, Consolas, "Liberation Mono", monospace; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: 5px 10px; border-bottom: 1px solid var(--line); vertical-align: middle; }
th { font-weight: 600; color: #374151; background: #f7f8fa; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
table.summary { width: auto; min-width: 640px; }
table.summary td.num { min-width: 120px; }
small, .muted { color: var(--muted); }
.good { color: #15803d; font-weight: 600; }
.stats { display: flex; flex-wrap: wrap; gap: 10px; margin: 12px 0 0; padding: 0; list-style: none; }
.stats li { background: #f7f8fa; border: 1px solid var(--line); border-radius: 6px; padding: 6px 12px; }
.stats b { font-size: 16px; }
dl.settings { display: flex; flex-wrap: wrap; gap: 4px 16px; margin: 0 0 8px; }
dl.settings dt { color: var(--muted); } dl.settings dd { margin: 0 8px 0 0; font-weight: 600; }
td.lname { white-space: nowrap; }
td.track-cell { width: 48%; min-width: 240px; }
.track { display: flex; height: 14px; width: 100%; background: #f3f4f6; border-radius: 3px; overflow: hidden; }
.kept { display: block; height: 100%; background: var(--kept); }
.removed { display: block; height: 100%; background: var(--removed);
  background-image: repeating-linear-gradient(135deg, transparent 0 4px, rgba(217, 83, 79, .45) 4px 6px);
  box-shadow: inset 0 0 0 1px var(--removed-edge); }
.legend { display: flex; gap: 18px; align-items: center; margin: 4px 0 8px; color: var(--muted); }
.legend .swatch { display: inline-block; width: 22px; height: 12px; vertical-align: -1px; margin-right: 6px; }
.badge { display: inline-block; padding: 1px 8px; border-radius: 10px; font-size: 12px; font-weight: 600; }
.b-channels { background: #e0ecff; color: #1e40af; } .b-heads { background: #fde7c7; color: #92400e; }
.b-head_dim { background: #ede4ff; color: #5b21b6; }
.b-exact { background: #dcf5e3; color: #166534; } .b-approx { background: #fff1c2; color: #854d0e; }
.names code { background: #f3f4f6; border-radius: 3px; padding: 0 4px; margin-right: 2px; }
.more { color: var(--muted); white-space: nowrap; }
footer { margin-top: 36px; color: var(--muted); font-size: 12px; }
"""


def _summary_table(summary: Mapping) -> str:
    rows = []
    for key, label in (("params", "Parameters"), ("macs", "MACs")):
        before, after = summary[key]
        ratio = f"{after / before:.3f}×" if before else "n/a"
        rows.append(
            f'<tr data-metric="{key}"><th>{label}</th>'
            f'<td class="num">{_n(before)}<br><small>{_compact(before)}</small></td>'
            f'<td class="num">{_n(after)}<br><small>{_compact(after)}</small></td>'
            f'<td class="num">{ratio}</td><td class="num">{_change(before, after)}</td></tr>'
        )
    lat = summary["latency_ms"]
    if lat is None:
        rows.append('<tr data-metric="latency_ms"><th>CPU latency</th><td class="num">n/a</td><td class="num">n/a</td>'
                    '<td class="num">n/a</td><td class="num">n/a</td></tr>')
    else:
        before, after = lat
        ratio = f"{after / before:.3f}×" if before else "n/a"
        speedup = f'<br><small class="good">{before / after:.2f}× faster</small>' if before and after else ""
        rows.append(
            f'<tr data-metric="latency_ms"><th>CPU latency</th><td class="num">{_ms(before)}</td>'
            f'<td class="num">{_ms(after)}</td><td class="num">{ratio}</td>'
            f'<td class="num">{_change(before, after)}{speedup}</td></tr>'
        )
    return ('<table class="summary" id="summary"><thead><tr><th></th><th class="num">Before</th>'
            '<th class="num">After</th><th class="num">After / before</th><th class="num">Change</th></tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table>')


def _layers_table(layers: Sequence[Mapping]) -> str:
    if not layers:
        return '<p class="muted">No prunable layers listed.</p>'
    scale = max(max(r["before"], r["after"]) for r in layers)
    rows = []
    for r in layers:
        before, after = r["before"], r["after"]
        kept = after / scale * 100 if scale else 0.0
        removed = max(before - after, 0) / scale * 100 if scale else 0.0
        share = f"{after / before * 100:.0f}% kept" if before else "n/a"
        label = f"{_n(before)} → {_n(after)}"
        rows.append(
            f'<tr class="layer" data-name="{_e(r["name"])}" data-before="{before}" data-after="{after}">'
            f'<td class="lname"><code>{_e(r["name"])}</code></td><td><small>{_e(r["type"])}</small></td>'
            f'<td class="track-cell"><div class="track" title="{_e(label)} ({share})">'
            f'<span class="kept" style="width:{_pct(kept)}"></span>'
            f'<span class="removed" style="width:{_pct(removed)}"></span></div></td>'
            f'<td class="num">{label}</td><td class="num"><small>{share}</small></td></tr>'
        )
    legend = ('<div class="legend"><span><span class="swatch kept"></span>kept</span>'
              '<span><span class="swatch removed"></span>removed</span>'
              f'<span>bar length: output width (longest = {_n(scale)})</span></div>')
    return (f'{legend}<table class="layers" id="layers"><thead><tr><th>Layer</th><th>Type</th>'
            '<th>Width</th><th class="num">Before → after</th><th class="num">Share</th></tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table>')


def _groups_table(groups: Sequence[Mapping]) -> str:
    if not groups:
        return '<p class="muted">No prunable groups.</p>'
    rows = []
    for i, g in enumerate(groups):
        kind = '<span class="badge b-exact">exact</span>' if g["exact"] else \
            '<span class="badge b-approx">approximate</span>'
        rows.append(
            f'<tr class="group" data-root="{_e(g["root"])}"><td class="num">{i + 1}</td>'
            f'<td><code>{_e(g["root"])}</code></td>'
            f'<td><span class="badge b-{g["structure"]}">{g["structure"]}</span></td>'
            f'<td class="num">{_n(g["size"])}</td><td class="num">{_n(g["pruned"])}</td>'
            f'<td class="num">{_n(g["size"] - g["pruned"])}</td><td>{kind}</td>'
            f'<td>{_names(g["coupled"])}</td></tr>'
        )
    return ('<table class="groups" id="groups"><thead><tr><th class="num">#</th><th>Root layer</th>'
            '<th>Structure</th><th class="num">Size</th><th class="num">Pruned</th><th class="num">Kept</th>'
            f'<th>Exact</th><th>Coupled layers</th></tr></thead><tbody>{"".join(rows)}</tbody></table>')


def _pinned_table(pinned: Sequence[Mapping]) -> str:
    if not pinned:
        return '<p class="muted">Nothing was pinned.</p>'
    rows = "".join(
        f'<tr class="pin"><td>{_e(p["reason"])}</td><td class="num">{_n(p["count"])}</td>'
        f'<td>{_names(p["examples"])}</td></tr>'
        for p in pinned
    )
    return ('<table class="pinned" id="pinned"><thead><tr><th>Reason</th><th class="num">Dims</th>'
            f'<th>Examples</th></tr></thead><tbody>{rows}</tbody></table>')


def render_report(data: Mapping[str, Any]) -> str:
    """Render the report of a pruning run as one self-contained HTML page.

    ``data`` (checked by :func:`validate_report_data`; a ``ConfigError`` names any missing, unknown or
    ill-typed field)::

        {
          "title": str,                      # page title, e.g. "Pruning report"
          "model": str,                      # model name, e.g. "torchvision:resnet18"
          "summary": {
            "params": [before: int, after: int],
            "macs": [before: int, after: int],
            "latency_ms": [before: float, after: float] | None,   # CPU latency; None shows "n/a"
          },
          "layers": [                        # output width of each prunable layer (see layer_widths)
            {"name": str, "type": str, "before": int, "after": int}, ...
          ],
          "groups": [                        # every group found, before pruning (see group_summary)
            {"root": str, "size": int, "pruned": int,        # 0 <= pruned <= size
             "structure": "heads" | "head_dim" | "channels", "exact": bool,
             "coupled": [str, ...]}, ...                      # other layers pruned with the root
          ],
          "pinned": [                        # dims that can never be pruned (see pinned_summary)
            {"reason": str, "count": int, "examples": [str, ...]}, ...
          ],
          "settings": {str: str | int | float | bool | None},  # optional: options of the run
        }

    Bars are drawn with CSS widths proportional to the widths (the widest layer spans the track); the
    kept part and the removed part have different colours. Lists longer than ``MAX_NAMES`` end in
    "+N more". Every string is HTML-escaped.

    >>> page = render_report({"title": "t", "model": "m", "summary": {"params": [10, 5], "macs": [8, 2],
    ...     "latency_ms": None}, "layers": [], "groups": [], "pinned": []})
    >>> page.startswith("<!DOCTYPE html>"), "n/a" in page
    (True, True)
    """
    d = validate_report_data(data)
    layers, groups, pinned = d["layers"], d["groups"], d["pinned"]
    narrowed = sum(1 for r in layers if r["after"] < r["before"])
    pruned_groups = sum(1 for g in groups if g["pruned"])
    exact = sum(1 for g in groups if g["exact"])
    pinned_dims = sum(p["count"] for p in pinned)
    stats = (
        '<ul class="stats">'
        f'<li><b>{narrowed}</b> of {len(layers)} layers narrowed</li>'
        f'<li><b>{pruned_groups}</b> of {len(groups)} groups pruned</li>'
        f'<li><b>{exact}</b> exact, <b>{len(groups) - exact}</b> approximate groups</li>'
        f'<li><b>{_n(pinned_dims)}</b> pinned dims ({len(pinned)} reason{"" if len(pinned) == 1 else "s"})</li>'
        '</ul>'
    )
    settings = ""
    if d["settings"]:
        items = "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in d["settings"].items())
        settings = f'<dl class="settings">{items}</dl>'
    package = sys.modules.get(__package__.rsplit(".", 1)[0]) if __package__ else None
    version = getattr(package, "__version__", "")
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<title>{_e(d["title"])} — {_e(d["model"])}</title><style>{_CSS}</style></head><body>\n'
        f'<header><h1>{_e(d["title"])}</h1><p class="sub">Model <code id="model">{_e(d["model"])}</code></p>'
        f'{settings}</header>\n'
        f'<section><h2>Summary</h2>{_summary_table(d["summary"])}{stats}</section>\n'
        f'<section><h2>Layer widths</h2>{_layers_table(layers)}</section>\n'
        f'<section><h2>Groups</h2>{_groups_table(groups)}</section>\n'
        f'<section><h2>Pinned dims</h2>{_pinned_table(pinned)}</section>\n'
        f'<footer>Generated by anyprune {_e(version)}</footer>\n</body></html>\n'
    )


def write_report(data: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """Render ``data`` (see :func:`render_report`) and write it to ``path`` (UTF-8); return the path.

    The data is validated before anything is written; missing parent folders are created.
    """
    page = render_report(data)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    return out


# ------------------------------------------------------------- data helpers
def _width(m: nn.Module) -> int | None:
    if isinstance(m, nn.modules.conv._ConvNd):
        return int(m.out_channels)
    if isinstance(m, nn.Linear):
        return int(m.out_features)
    if isinstance(m, (nn.Embedding, nn.EmbeddingBag)):
        return int(m.embedding_dim)
    if isinstance(m, nn.modules.batchnorm._NormBase):  # BatchNorm*, InstanceNorm*
        return int(m.num_features)
    if isinstance(m, nn.GroupNorm):
        return int(m.num_channels)
    shape = getattr(m, "normalized_shape", None)  # LayerNorm, RMSNorm and look-alikes
    if isinstance(shape, (tuple, list)) and shape and isinstance(shape[-1], int):
        return int(shape[-1])
    name = type(m).__name__
    nf = getattr(m, "nf", None)
    if name == "Conv1D" and isinstance(nf, int):  # Hugging Face GPT-2 style projection
        return nf
    weight = getattr(m, "weight", None)
    if name.endswith("Norm") and isinstance(weight, nn.Parameter) and weight.dim() == 1:  # e.g. LlamaRMSNorm
        return int(weight.shape[0])
    return None


def layer_widths(model: nn.Module) -> dict[str, tuple[str, int]]:
    """``{name: (type name, output width)}`` of every Conv/Linear/Embedding/norm layer, in module order.

    The width is ``out_channels`` (convolutions), ``out_features`` (``Linear``), ``embedding_dim``,
    ``num_features`` (batch/instance norms), ``num_channels`` (``GroupNorm``), ``normalized_shape[-1]``
    (``LayerNorm``, ``RMSNorm``), ``nf`` (Hugging Face ``Conv1D``) or, for other ``*Norm`` modules with a
    1-D weight, the weight's length. Works on models on the ``meta`` device.

    >>> layer_widths(nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.Linear(8, 2)))
    {'0': ('Conv2d', 8), '1': ('BatchNorm2d', 8), '4': ('Linear', 2)}
    """
    if not isinstance(model, nn.Module):
        raise ConfigError(f"layer_widths: model must be a torch.nn.Module, got {type(model).__name__}")
    out: dict[str, tuple[str, int]] = {}
    for name, m in model.named_modules():
        w = _width(m)
        if w is not None:
            out[name] = (type(m).__name__, w)
    return out


def layer_rows(before: Mapping[str, tuple[str, int]], after: Mapping[str, tuple[str, int]],
               changed_only: bool = False) -> list[dict]:
    """Merge two :func:`layer_widths` results into the report's ``"layers"`` (order of ``before``).

    A layer missing from ``after`` is reported with width 0; ``changed_only`` keeps only narrowed layers.
    """
    rows = []
    for name, (kind, width) in before.items():
        new = after[name][1] if name in after else 0
        if changed_only and new == width:
            continue
        rows.append({"name": name, "type": kind, "before": int(width), "after": int(new)})
    return rows


def group_summary(group: Any, pruned: int = 0) -> dict:
    """The report's entry for a :class:`anyprune.groups.Group` (call it before pruning the group).

    ``root`` is the root layer's name, ``coupled`` the other layers (and parameters outside any layer)
    the group reaches, in the group's order.
    """
    root = group.root
    root_name = getattr(root, "module_name", "") or getattr(root, "fqn", "") or str(root)
    coupled: list[str] = []
    for sl in group.slices:
        name = getattr(sl, "module_name", "") or getattr(sl, "fqn", "")
        if name and name != root_name and name not in coupled:
            coupled.append(name)
    return {"root": root_name, "size": int(group.size), "pruned": int(pruned), "structure": group.structure,
            "exact": bool(group.exact), "coupled": coupled}


_SITE_PACKAGES = re.compile(r"[^\s()]*[/\\](?:site|dist)-packages[/\\]")


def pinned_summary(dg: Any, max_examples: int | None = None) -> list[dict]:
    """The report's ``"pinned"`` for a built :class:`anyprune.DependencyGraph`: pinned dims grouped by reason.

    ``count`` is the number of pinned positions (e.g. 1000 for the outputs of a 1000-class classifier);
    ``examples`` are the parameters whose dims are pinned for that reason (all, or at most ``max_examples``).
    Source locations inside installed packages are shown from the package on
    (``torchvision/models/resnet.py:92``, not the full path to ``site-packages``).
    """
    table = dg.dims.atoms
    by_reason: dict[str, dict[str, Any]] = {}
    for a in dg.index.by_atom:
        if not table.is_leaf(a):
            continue
        reason = table.pin_reason(a)
        if reason is None:
            continue
        reason = _SITE_PACKAGES.sub("", reason)
        entry = by_reason.setdefault(reason, {"reason": reason, "count": 0, "examples": []})
        entry["count"] += table.atom_size(a)
        for sl in dg.index.slices_of([a]):
            name = getattr(sl, "fqn", None) or getattr(sl, "module_name", "")
            full = max_examples is not None and len(entry["examples"]) >= max_examples
            if name and name not in entry["examples"] and not full:
                entry["examples"].append(name)
    return list(by_reason.values())
