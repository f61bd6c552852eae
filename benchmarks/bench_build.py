"""Benchmark dependency-graph construction: anyprune vs. Torch-Pruning.

For each torchvision model of :mod:`anyprune.testing.zoo` (random weights, eval mode, the zoo's example input,
``1x3x224x224`` for image models) this measures

* the wall time of ``anyprune.DependencyGraph().build_dependency(model, example_inputs)``, median of
  ``--repeat`` runs, each run on a fresh ``copy.deepcopy`` of a model built once;
* the peak extra resident memory of one build;
* the number of pruning groups found (``len(DG.groups())``);

and the same for the optional PyPI package ``torch-pruning`` (``torch_pruning.DependencyGraph()
.build_dependency(model, example_inputs=...)``, groups counted with ``len(list(DG.get_all_groups()))``) when it is
installed. Its columns read "n/a" otherwise.

Every (library, model) pair runs in its own freshly spawned process, so neither library's imports, caches or
allocator state leak into the other's numbers; this parent process never imports torch, so that it stays small.

The table is printed as markdown and written into ``docs/benchmarks.md`` between the markers
``<!-- bench_build:start -->`` and ``<!-- bench_build:end -->`` (the rest of the file is kept).

Usage::

    make bench
    .venv/bin/python benchmarks/bench_build.py [--models resnet18,resnet50] [--repeat 3] [--no-write]
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import importlib.util
import multiprocessing as mp
import os
import platform
import re
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from docs_section import write_section

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "benchmarks.md"
START, END = "<!-- bench_build:start -->", "<!-- bench_build:end -->"

# the whole torchvision zoo of anyprune.testing.zoo (kept as names: the parent process does not import torch)
DEFAULT_MODELS = (
    "resnet18", "resnet50", "resnext50_32x4d", "wide_resnet50_2", "vgg16_bn", "alexnet", "squeezenet1_1",
    "densenet121", "googlenet", "inception_v3", "mobilenet_v2", "mobilenet_v3_large", "mnasnet1_0",
    "shufflenet_v2_x1_0", "efficientnet_b0", "efficientnet_v2_s", "regnet_x_1_6gf", "regnet_y_1_6gf",
    "convnext_tiny", "fcn_resnet50", "deeplabv3_mobilenet_v3_large", "lraspp_mobilenet_v3_large", "r3d_18",
    "fasterrcnn_resnet50_fpn",
)
LIBS = ("anyprune", "torch_pruning")
MB = 2**20


# ------------------------------------------------------------------ memory probes (run in the child)
def _current_rss() -> int | None:
    """Resident set size now, in bytes (Linux only)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def _reset_peak_rss() -> bool:
    """Reset the kernel's resident high-water mark (``VmHWM``); Linux only, ``False`` where not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_rss() -> int:
    """Peak resident set size in bytes: ``VmHWM`` where /proc has it, else ``getrusage``'s ``ru_maxrss``."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB elsewhere


# ------------------------------------------------------------------ one measurement (run in the child)
def _short(exc: BaseException, limit: int = 90) -> str:
    msg = " ".join(f"{type(exc).__name__}: {exc}".split())
    return msg if len(msg) <= limit else msg[: limit - 1] + "…"


def _where(exc: BaseException) -> str:
    """``file.py:line in function`` of the innermost frame, for the notes."""
    import traceback

    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return ""
    f = frames[-1]
    return f"{Path(f.filename).parent.name}/{Path(f.filename).name}:{f.lineno} in {f.name}"


def _warning_text(w: Any) -> str:
    """One line; lists shortened to their length (Torch-Pruning lists a set, in a different order each run)."""
    msg = " ".join(f"{w.category.__name__}: {w.message}".split())
    msg = re.sub(r"\[([^\[\]]*)\]", lambda m: f"[{m.group(1).count(',') + 1} items]", msg)
    return msg if len(msg) <= 300 else msg[:299] + "…"


def _measure(lib: str, name: str, repeat: int, threads: int) -> dict[str, Any]:
    """Build ``name`` once and time ``repeat`` graph builds with ``lib``; runs in a fresh spawned process."""
    import copy
    import gc
    import warnings

    import torch

    from anyprune.testing import zoo

    if threads > 0:
        torch.set_num_threads(threads)

    if lib == "anyprune":
        import anyprune

        def build(model, inputs):
            dg = anyprune.DependencyGraph().build_dependency(model, inputs)
            return dg, len(dg.groups())
    else:
        try:
            import torch_pruning
        except Exception as e:  # optional dependency: any import failure means "not available"
            return {"unavailable": _short(e)}

        def build(model, inputs):
            dg = torch_pruning.DependencyGraph().build_dependency(model, example_inputs=inputs)
            return dg, len(list(dg.get_all_groups()))

    torch.manual_seed(0)
    model = zoo.build(name)
    inputs = zoo.example_inputs(name)
    times: list[float] = []
    groups = peak = None
    seen: dict[str, None] = {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for i in range(repeat):
            work = copy.deepcopy(model)
            gc.collect()
            if i == 0:  # memory is measured on the first build of the process
                base = _current_rss()
                if not _reset_peak_rss() or base is None:
                    base = _peak_rss()  # fall back to the growth of the high-water mark
            try:
                t0 = time.perf_counter()
                dg, n = build(work, inputs)
                times.append(time.perf_counter() - t0)
            except Exception as e:
                seen.update(dict.fromkeys(map(_warning_text, caught)))
                return {"error": _short(e), "where": _where(e), "warnings": list(seen)}
            if i == 0:
                peak = max(_peak_rss() - base, 0)
                groups = n
            del dg, work
            for w in caught:
                seen.setdefault(_warning_text(w), None)
            caught.clear()
    return {
        "ms": statistics.median(times) * 1000,
        "runs_ms": [t * 1000 for t in times],
        "peak_mb": peak / MB,
        "groups": groups,
        "warnings": list(seen),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }


def _child(conn, lib: str, name: str, repeat: int, threads: int) -> None:
    try:
        result = _measure(lib, name, repeat, threads)
    except BaseException as e:  # model construction etc.; report, never hang the parent
        result = {"error": _short(e)}
    conn.send(result)
    conn.close()


def _exit_reason(code: int | None) -> str:
    if code is not None and code < 0:
        return f"killed by signal {-code}" + (" (SIGKILL: out of memory?)" if code == -9 else "")
    return f"child exit code {code}"


def run_one(lib: str, name: str, repeat: int, timeout: float, threads: int = 1) -> dict[str, Any]:
    """``_measure`` in a fresh spawned process; a crash or timeout becomes an ``error`` entry."""
    ctx = mp.get_context("spawn")
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(send, lib, name, repeat, threads), daemon=True)
    proc.start()
    send.close()
    try:
        if recv.poll(timeout):
            return recv.recv()
        return {"error": f"timed out after {timeout:.0f}s" if proc.is_alive() else _exit_reason(proc.exitcode)}
    except EOFError:
        proc.join(5)
        return {"error": _exit_reason(proc.exitcode)}
    finally:
        if proc.is_alive():
            proc.kill()
        proc.join()


# ------------------------------------------------------------------ report
def _cell(res: dict[str, Any] | None, key: str, fmt: str) -> str:
    if res is None or "unavailable" in res:
        return "n/a"
    if "error" in res:
        return "error: " + res["error"].replace("|", "\\|") if key == "ms" else "—"
    return format(res[key], fmt)


def make_table(rows: list[tuple[str, dict[str, Any], dict[str, Any] | None]]) -> str:
    head = ("model", "anyprune build (ms)", "anyprune peak MB", "torch-pruning build (ms)", "torch-pruning peak MB",
            "speedup", "anyprune groups", "torch-pruning groups")
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join([":---"] + ["---:"] * (len(head) - 1)) + "|"]
    for name, ap, tp in rows:
        ok = all(r is not None and "ms" in r for r in (ap, tp))
        speedup = f"{tp['ms'] / ap['ms']:.1f}x" if ok else "n/a"
        cells = (name, _cell(ap, "ms", ".0f"), _cell(ap, "peak_mb", ".0f"), _cell(tp, "ms", ".0f"),
                 _cell(tp, "peak_mb", ".0f"), speedup, _cell(ap, "groups", "d"), _cell(tp, "groups", "d"))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def make_section(table: str, repeat: int, threads: Any, tp_note: str, notes: list[str]) -> str:
    proc = platform.processor() or platform.machine()
    plural = "" if threads == 1 else "s"
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    text = f"""{START}
## Dependency-graph build time

{table}

Measured {now} on {_cpu_name()} ({proc}, {os.cpu_count()} logical CPUs,
{platform.system()} {platform.release()}), Python {platform.python_version()}, torch {_version("torch")}
({threads} intra-op thread{plural}), torchvision {_version("torchvision")}, anyprune {_version("anyprune")},
torch-pruning {tp_note}.

Method: each torchvision model is built once with random weights in eval mode (`anyprune.testing.zoo.build`) with the
zoo's example input (`zoo.example_inputs`: a 1×3×224×224 image; 299×299 for inception_v3, a 1×3×4×112×112 clip
for r3d_18, one 3×160×160 image for Faster R-CNN), in a fresh process (`multiprocessing`, spawn context) per
library and model. *build (ms)* is the median wall time of {repeat} calls of
`DependencyGraph().build_dependency(model, example_inputs)`, each on a fresh `copy.deepcopy` of the model (the copy is
not timed; the first call of the process is included, cold). Autograd is enabled, as Torch-Pruning requires. Torch
runs one intra-op thread by default: a build is mostly Python work (Torch-Pruning's includes a real batch-1 forward
pass), and on a 2-core machine shared with other jobs, 2 OpenMP threads made such a forward pass take ~2.5 s instead
of ~30 ms. anyprune's build runs no arithmetic: it traces on `meta` twins of the parameters (shapes only, with fast
shape functions for common ops, `anyprune/trace/shapes.py`) and falls back to a real forward pass only when the
model needs values (data-dependent control flow, ops without meta kernels); none of the models below needs it.
*peak MB* is the first build's peak extra resident memory: the kernel's resident high-water mark (`VmHWM`, reset
through `/proc/self/clear_refs` just before the build) minus the resident size right before it (model, input and copy
already allocated); it includes one-time lazy imports and caches. `resource.getrusage(...).ru_maxrss` is only the
fallback where `/proc` is missing: a spawned child starts with its parent's high-water mark and it cannot be reset.
`tracemalloc` is not used: tensor storage is allocated outside Python's allocator and would be missed. *speedup* is
torch-pruning time / anyprune time; on a shared machine the same build varies by about ±20% from one invocation to
the next, so ratios between 0.8x and 1.2x are ties. *groups* is `len(DG.groups())` for anyprune and
`len(list(DG.get_all_groups()))` for Torch-Pruning, both with default arguments.

Reproduce with `make bench` or `.venv/bin/python benchmarks/bench_build.py` (options: `--models a,b,c`,
`--repeat N`, `--threads N`).
"""
    if notes:
        text += "\nNotes from this run:\n\n" + "\n".join(f"- {n}" for n in notes) + "\n"
    return text + END + "\n"


def write_docs(section: str, path: Path = DOCS) -> None:
    write_section(section, START, END, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS),
                        help="comma-separated names from anyprune.testing.zoo.ZOO (checked in the child processes)")
    parser.add_argument("--repeat", type=int, default=3, help="builds per model and library (median reported)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads in each child (0: torch's default)")
    parser.add_argument("--timeout", type=float, default=120, help="seconds allowed per model and library")
    parser.add_argument("--no-write", action="store_true", help=f"do not update {DOCS.relative_to(ROOT)}")
    args = parser.parse_args()
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")

    have_tp = importlib.util.find_spec("torch_pruning") is not None
    tp_note = _version("torch-pruning") if have_tp else "not installed"
    if not have_tp:
        print("note: torch-pruning is not installed (pip install torch-pruning); its columns read n/a", file=sys.stderr)

    rows: list[tuple[str, dict[str, Any], dict[str, Any] | None]] = []
    notes: list[str] = []
    threads: Any = "?"
    for name in models:
        results: dict[str, dict[str, Any] | None] = {}
        for lib in LIBS:
            if lib == "torch_pruning" and not have_tp:
                results[lib] = None
                continue
            t0 = time.perf_counter()
            res = results[lib] = run_one(lib, name, args.repeat, args.timeout, args.threads)
            threads = res.get("threads", threads)
            label = "torch-pruning" if lib == "torch_pruning" else lib
            if "unavailable" in res:
                tp_note = f"not importable ({res['unavailable']})"
                notes.append(f"torch-pruning could not be imported: {res['unavailable']}")
            status = f"{res['ms']:.0f} ms" if "ms" in res else res.get("error") or res.get("unavailable")
            print(f"  {name:<20} {label:<14} {status}  [{time.perf_counter() - t0:.1f}s]", file=sys.stderr)
            if "error" in res:
                where = f" (raised at `{res['where']}`)" if res.get("where") else ""
                notes.append(f"{label} failed on `{name}`: {res['error']}{where}")
            for w in res.get("warnings", ()):
                notes.append(f"{label} warned on `{name}`: {w}")
        rows.append((name, results["anyprune"], results["torch_pruning"]))

    table = make_table(rows)
    print(table)
    for n in dict.fromkeys(notes):
        print(f"note: {n}")
    if not args.no_write:
        write_docs(make_section(table, args.repeat, threads, tp_note, list(dict.fromkeys(notes))))
        print(f"wrote {DOCS.relative_to(ROOT)}", file=sys.stderr)


if __name__ == "__main__":
    main()
