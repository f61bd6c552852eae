"""Benchmark a whole high-level pruning step: anyprune vs. Torch-Pruning.

For resnet50, densenet121 and vit_b_16 (torchvision, random weights, eval mode, a 1x3x224x224 input) this times

    pruner = MetaPruner(model, example_inputs, importance=GroupMagnitudeImportance(p=2),
                        global_pruning=True, pruning_ratio=0.5, ignored_layers=[classifier])
    pruner.step()

(graph construction, scoring every group, global ranking and pruning) with ``anyprune.pruner.MetaPruner`` and
with ``torch_pruning.pruner.MetaPruner`` from the optional PyPI package ``torch-pruning``, the median of
``--repeat`` runs, each on a fresh ``copy.deepcopy`` of a model built once. It also records the parameters and
MACs left, so that the two libraries are seen to do comparable work. Every (library, model) pair runs in its own
freshly spawned process (see ``bench_build.py``).

The table goes into ``docs/benchmarks.md`` between ``<!-- bench_prune:start -->`` and ``<!-- bench_prune:end -->``.

Usage::

    make bench-prune
    .venv/bin/python benchmarks/bench_prune.py [--models resnet50,densenet121,vit_b_16] [--repeat 3] [--no-write]
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
START, END = "<!-- bench_prune:start -->", "<!-- bench_prune:end -->"
DEFAULT_MODELS = ("resnet50", "densenet121", "vit_b_16")
LIBS = ("anyprune", "torch_pruning")


def _short(exc: BaseException, limit: int = 160) -> str:
    msg = " ".join(f"{type(exc).__name__}: {exc}".split())
    return msg if len(msg) <= limit else msg[: limit - 1] + "…"


def _measure(lib: str, name: str, repeat: int, threads: int) -> dict[str, Any]:
    import copy
    import gc
    import warnings

    import torch
    import torchvision

    torch.set_num_threads(threads)
    if lib == "anyprune":
        import anyprune as tpl
    else:
        try:
            import torch_pruning as tpl
        except Exception as e:  # optional dependency
            return {"unavailable": _short(e)}
    import anyprune

    torch.manual_seed(0)
    model = torchvision.models.get_model(name).eval()
    x = torch.randn(1, 3, 224, 224)
    base_macs, base_params = anyprune.utils.count_ops_and_params(model, x)
    times: list[float] = []
    macs = params = None
    broken = None
    warned: dict[str, None] = {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for i in range(repeat):
            work = copy.deepcopy(model)
            head = [m for m in work.modules() if isinstance(m, torch.nn.Linear) and m.out_features == 1000]
            gc.collect()
            try:
                t0 = time.perf_counter()
                pruner = tpl.pruner.MetaPruner(work, x, importance=tpl.importance.GroupMagnitudeImportance(p=2),
                                               global_pruning=True, pruning_ratio=0.5, ignored_layers=head)
                pruner.step()
                times.append(time.perf_counter() - t0)
            except Exception as e:
                return {"error": _short(e)}
            if i == 0:
                try:
                    with torch.no_grad():
                        out = work(x)
                    if out.shape != (1, 1000):
                        raise RuntimeError(f"the pruned model returns shape {tuple(out.shape)}")
                    macs, params = anyprune.utils.count_ops_and_params(work, x)
                except Exception as e:
                    broken = _short(e)
            del pruner, work
        for w in caught:
            text = re.sub(r"[^\s(]*/([^/\s]+\.py)", r"\1", " ".join(f"{w.category.__name__}: {w.message}".split()))
            warned.setdefault(text[:200], None)
    out: dict[str, Any] = {"ms": statistics.median(times) * 1000, "runs_ms": [t * 1000 for t in times],
                           "threads": torch.get_num_threads(), "warnings": list(warned)}
    if broken is not None:
        out["broken"] = broken
    else:
        out.update(params=params / base_params, macs=macs / base_macs)
    return out


def _child(conn, lib: str, name: str, repeat: int, threads: int) -> None:
    try:
        result = _measure(lib, name, repeat, threads)
    except BaseException as e:
        result = {"error": _short(e)}
    conn.send(result)
    conn.close()


def run_one(lib: str, name: str, repeat: int, timeout: float, threads: int) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(send, lib, name, repeat, threads), daemon=True)
    proc.start()
    send.close()
    try:
        if recv.poll(timeout):
            return recv.recv()
        return {"error": f"timed out after {timeout:.0f}s"}
    except EOFError:
        proc.join(5)
        return {"error": f"child exit code {proc.exitcode}"}
    finally:
        if proc.is_alive():
            proc.kill()
        proc.join()


def _cell(res: dict[str, Any] | None, key: str, fmt: str) -> str:
    if res is None or "unavailable" in res:
        return "n/a"
    if "error" in res:
        return ("error: " + res["error"].replace("|", "\\|")) if key == "ms" else "—"
    if key not in res:
        return "pruned model fails" if "broken" in res else "—"
    return format(res[key], fmt)


def make_table(rows: list[tuple[str, dict[str, Any], dict[str, Any] | None]]) -> str:
    head = ("model", "anyprune (ms)", "torch-pruning (ms)", "speedup", "anyprune params left", "torch-pruning params "
            "left", "anyprune MACs left", "torch-pruning MACs left")
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join([":---"] + ["---:"] * (len(head) - 1)) + "|"]
    for name, ap, tp in rows:
        ok = ap is not None and tp is not None and "ms" in ap and "ms" in tp
        speed = f"{tp['ms'] / ap['ms']:.1f}x" if ok else "n/a"
        lines.append("| " + " | ".join((name, _cell(ap, "ms", ".0f"), _cell(tp, "ms", ".0f"), speed,
                                        _cell(ap, "params", ".1%"), _cell(tp, "params", ".1%"),
                                        _cell(ap, "macs", ".1%"), _cell(tp, "macs", ".1%"))) + " |")
    return "\n".join(lines)


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def make_section(table: str, repeat: int, threads: int, notes: list[str]) -> str:
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    text = f"""{START}
## High-level pruning step

{table}

Measured {now} on {platform.machine()} ({os.cpu_count()} logical CPUs, {platform.system()} {platform.release()}),
Python {platform.python_version()}, torch {_version("torch")} ({threads} intra-op thread), torchvision
{_version("torchvision")}, anyprune {_version("anyprune")}, torch-pruning {_version("torch-pruning")}.

Method: `benchmarks/bench_prune.py`. Each time is the median of {repeat} runs of
`MetaPruner(model, example_inputs, importance=GroupMagnitudeImportance(p=2), global_pruning=True,
pruning_ratio=0.5, ignored_layers=[classifier])` followed by `pruner.step()`, on a fresh `copy.deepcopy` of the
model (random weights, eval mode, one 1×3×224×224 input), in a fresh process per library and model. It includes
building the dependency graph, scoring every group, the global ranking and the removal. *speedup* is
torch-pruning time / anyprune time. *params left* and *MACs left* are the pruned model's parameters and MACs
(`anyprune.utils.count_ops_and_params`) as a fraction of the original's. Where both libraries find the same groups
and scores (the CNNs here) they end at the same counts. On vit_b_16 they do different work: anyprune
prunes the MLP hidden dims and the embedding width, which `nn.MultiheadAttention` requires to equal heads ×
head_dim, along its head_dim factor (whole heads only with `prune_num_heads=True`); it updates `hidden_dim`,
`embed_dim` and `head_dim`, and its step ends with a re-trace that checks the pruned model runs. torch-pruning also
prunes the embedding width, but its pruned model no longer runs (its time is still that of the complete step).

Reproduce with `make bench-prune` or `.venv/bin/python benchmarks/bench_prune.py`.
"""
    if notes:
        text += "\nNotes from this run:\n\n" + "\n".join(f"- {n}" for n in notes) + "\n"
    return text + END + "\n"


def write_docs(section: str) -> None:
    write_section(section, START, END)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    have_tp = importlib.util.find_spec("torch_pruning") is not None
    rows, notes = [], []
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        results: dict[str, dict[str, Any] | None] = {}
        for lib in LIBS:
            if lib == "torch_pruning" and not have_tp:
                results[lib] = None
                continue
            t0 = time.perf_counter()
            res = results[lib] = run_one(lib, name, args.repeat, args.timeout, args.threads)
            label = "torch-pruning" if lib == "torch_pruning" else lib
            status = f"{res['ms']:.0f} ms" if "ms" in res else res.get("error") or res.get("unavailable")
            print(f"  {name:<12} {label:<14} {status}  [{time.perf_counter() - t0:.1f}s]", file=sys.stderr)
            if "error" in res:
                notes.append(f"{label} failed on `{name}`: {res['error']}")
            if "broken" in res:
                notes.append(f"{label}'s pruned `{name}` no longer runs: {res['broken']}")
            for w in res.get("warnings", ())[:3]:
                notes.append(f"{label} warned on `{name}`: {w}")
        rows.append((name, results["anyprune"], results["torch_pruning"]))
    table = make_table(rows)
    print(table)
    if not args.no_write:
        write_docs(make_section(table, args.repeat, args.threads, list(dict.fromkeys(notes))))
        print(f"wrote {DOCS.relative_to(ROOT)}", file=sys.stderr)


if __name__ == "__main__":
    main()
