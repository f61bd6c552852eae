"""Write the HTML report of a real pruning run and screenshot it with headless Chromium (``docs/report.png``).

torchvision ResNet-18 with random weights is traced on a ``1x3x224x224`` input; every group found is pruned by
half (its first ``size // 2`` indices, as an illustration: no importance criterion); params, MACs and CPU latency
are measured before and after; the layer bars show the convolutions and the classifier (each BatchNorm has the
width of its convolution); the report is written with :func:`anyprune.report.write_report` and
screenshotted by ``chromium --headless --screenshot``.

Usage::

    .venv/bin/python benchmarks/make_report_screenshot.py [--html report.html] [--png docs/report.png]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import torch
import torchvision

import anyprune
from anyprune.report import group_summary, layer_rows, layer_widths, pinned_summary, write_report

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars", "--force-device-scale-factor=1"]


def cpu_latency_ms(model: torch.nn.Module, x: torch.Tensor, repeat: int = 10) -> float:
    """Best wall time of one forward pass over ``repeat`` runs, in milliseconds (after two warm-up passes)."""
    times = []
    with torch.no_grad():
        for i in range(repeat + 2):
            t = time.perf_counter()
            model(x)
            if i >= 2:
                times.append((time.perf_counter() - t) * 1000)
    return min(times)


def resnet18_report(size: int = 224) -> dict:
    torch.manual_seed(0)
    model = torchvision.models.resnet18().eval()
    x = torch.randn(1, 3, size, size)
    macs0, params0 = anyprune.utils.count_ops_and_params(model, x)
    lat0 = cpu_latency_ms(model, x)
    widths0 = layer_widths(model)
    dg = anyprune.DependencyGraph().build_dependency(model, x)
    pinned = pinned_summary(dg)
    groups = []
    for g in dg.get_all_groups():
        groups.append(group_summary(g, pruned=g.size // 2))
        g.prune(idxs=list(range(g.size // 2)))
    macs1, params1 = anyprune.utils.count_ops_and_params(model, x)
    lat1 = cpu_latency_ms(model, x)
    return {
        "title": "Pruning report",
        "model": "torchvision:resnet18",
        "summary": {"params": [params0, params1], "macs": [macs0, macs1], "latency_ms": [lat0, lat1]},
        # convolutions and the classifier only (their norms have the same widths), so the groups fit the screenshot
        "layers": [r for r in layer_rows(widths0, layer_widths(model)) if r["type"] in ("Conv2d", "Linear")],
        "groups": groups,
        "pinned": pinned,
        "settings": {"input": f"1×3×{size}×{size}", "ratio": 0.5, "indices": "first half of every group",
                     "weights": "random"},
    }


def screenshot(html: Path, png: Path, width: int = 1200, height: int = 2600) -> None:
    """Screenshot ``html`` at ``width`` x ``height``; with Pillow, crop the blank bottom and reduce to 64 colours."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("chromium is not installed (Debian: apt-get install chromium)")
    png.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--screenshot={png}",
                        f"--window-size={width},{height}", html.resolve().as_uri()],
                       check=True, capture_output=True, timeout=120)
    try:
        from PIL import Image, ImageChops
    except ImportError:  # keep Chromium's full-colour PNG
        return
    with Image.open(png) as im:
        rgb = im.convert("RGB")
    box = ImageChops.difference(rgb, Image.new("RGB", rgb.size, (255, 255, 255))).getbbox()
    if box is not None:
        rgb = rgb.crop((0, 0, rgb.width, min(rgb.height, box[3] + 24)))
    rgb.quantize(colors=64, method=Image.Quantize.MEDIANCUT).save(png, optimize=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--html", type=Path, help="where to keep the report (default: a temporary file)")
    ap.add_argument("--png", type=Path, default=ROOT / "docs" / "report.png")
    args = ap.parse_args()
    data = resnet18_report()
    with tempfile.TemporaryDirectory() as tmp:
        html = write_report(data, args.html or Path(tmp) / "report.html")
        screenshot(html, args.png)
    print(f"wrote {args.png} ({args.png.stat().st_size // 1024} KiB)" + (f" and {html}" if args.html else ""))


if __name__ == "__main__":
    main()
