"""Shared by the report tests: a report of a real pruning run, Chromium, and a small PNG decoder."""

from __future__ import annotations

import copy
import functools
import os
import shutil
import signal
import struct
import subprocess
import tempfile
import time
import zlib
from pathlib import Path

import torch

import anyprune
from anyprune.report import group_summary, layer_rows, layer_widths, pinned_summary

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars", "--force-device-scale-factor=1"]


def _latency_ms(model: torch.nn.Module, x: torch.Tensor) -> float:
    with torch.no_grad():
        model(x)
        t = time.perf_counter()
        model(x)
        return (time.perf_counter() - t) * 1000


@functools.cache
def _resnet18_run() -> tuple[dict, dict]:
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.resnet18().eval()
    x = torch.randn(1, 3, 64, 64)
    macs0, params0 = anyprune.utils.count_ops_and_params(model, x)
    lat0 = _latency_ms(model, x)
    widths0 = layer_widths(model)
    dg = anyprune.DependencyGraph().build_dependency(model, x)
    pinned = pinned_summary(dg)
    groups = []
    for g in dg.get_all_groups():
        groups.append(group_summary(g, pruned=g.size // 2))
        g.prune(idxs=list(range(g.size // 2)))
    macs1, params1 = anyprune.utils.count_ops_and_params(model, x)
    lat1 = _latency_ms(model, x)
    data = {
        "title": "Pruning report",
        "model": "torchvision:resnet18",
        "summary": {"params": [params0, params1], "macs": [macs0, macs1], "latency_ms": [lat0, lat1]},
        "layers": layer_rows(widths0, layer_widths(model)),
        "groups": groups,
        "pinned": pinned,
        "settings": {"ratio": 0.5},
    }
    # the widths the pruned model really has, read from its weights (not from module attributes)
    weights = {name: m.weight.shape[0] for name, m in model.named_modules()
               if isinstance(m, (torch.nn.Conv2d, torch.nn.BatchNorm2d, torch.nn.Linear))}
    return data, weights


def resnet18_report_data() -> dict:
    """Report data of torchvision resnet18 (random weights, 1x3x64x64) with every group pruned by half."""
    return copy.deepcopy(_resnet18_run()[0])


def resnet18_pruned_weight_widths() -> dict[str, int]:
    """``{layer: weight.shape[0]}`` of the pruned resnet18 behind :func:`resnet18_report_data`."""
    return dict(_resnet18_run()[1])


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def run_chromium(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run headless Chromium with a throw-away profile; raise if it fails or hangs (e.g. on a dialog a
    script opened), after ending every process it started."""
    exe = chromium()
    assert exe is not None
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as profile:
        proc = subprocess.Popen([exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, start_new_session=True)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise AssertionError(f"chromium did not finish within {timeout} s: {' '.join(args)}") from None
    if proc.returncode:
        raise AssertionError(f"chromium failed ({proc.returncode}): {err[-2000:]}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def dump_dom(page: Path) -> str:
    return run_chromium("--dump-dom", page.resolve().as_uri()).stdout


def screenshot(page: Path, png: Path, width: int, height: int) -> None:
    run_chromium(f"--screenshot={png}", f"--window-size={width},{height}", page.resolve().as_uri())


def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    if pa <= pb and pa <= pc:
        return a
    return b if pb <= pc else c


def decode_png(data: bytes) -> tuple[int, int, list[bytes]]:
    """``(width, height, rows)`` of an 8-bit RGB or RGBA, non-interlaced PNG; each row as RGB bytes."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG file"
    pos, idat, header = 8, b"", None
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + n]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + n
    assert header is not None, "PNG without IHDR"
    width, height, depth, color, _, _, interlace = header
    if depth != 8 or color not in (2, 6) or interlace != 0:
        raise AssertionError(f"unsupported PNG (8-bit RGB/RGBA, not interlaced, expected): {header}")
    bpp = 3 if color == 2 else 4
    stride = width * bpp
    raw = zlib.decompress(idat)
    assert len(raw) == height * (stride + 1), "truncated image data"
    prev = bytearray(stride)
    rows = []
    for y in range(height):
        f = raw[y * (stride + 1)]
        cur = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        if f == 1:
            for i in range(bpp, stride):
                cur[i] = (cur[i] + cur[i - bpp]) & 0xFF
        elif f == 2:
            cur = bytearray((c + p) & 0xFF for c, p in zip(cur, prev))
        elif f == 3:
            for i in range(stride):
                left = cur[i - bpp] if i >= bpp else 0
                cur[i] = (cur[i] + ((left + prev[i]) >> 1)) & 0xFF
        elif f == 4:
            for i in range(stride):
                if i >= bpp:
                    cur[i] = (cur[i] + _paeth(cur[i - bpp], prev[i], prev[i - bpp])) & 0xFF
                else:
                    cur[i] = (cur[i] + prev[i]) & 0xFF
        else:
            assert f == 0, f"bad filter type {f}"
        rows.append(bytes(cur) if bpp == 3 else bytes(b for i, b in enumerate(cur) if i % 4 != 3))
        prev = cur
    return width, height, rows
