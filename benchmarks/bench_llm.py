"""Benchmark graph building and pruning on Llama-shaped models: anyprune vs. Torch-Pruning.

Two cases, each (library, case) pair in its own freshly spawned process:

* ``llama3-70b-meta``: a Llama-3-70B-shaped config (80 layers, hidden 8192, 64 heads, 8 KV heads,
  intermediate 28672, vocab 128256) built on the ``meta`` device; time of
  ``DependencyGraph().build_dependency(model, input_ids)`` and of listing its groups, and the process's peak
  RSS (imports included);
* ``llama-2L-4096``: a 2-layer Llama of width 4096 (32 heads, 8 KV heads, intermediate 14336, vocab 32000)
  with real random weights (float32); time of building the graph plus pruning half of every layer's MLP
  (``get_pruning_group(mlp.gate_proj, prune_linear_out_channels, first half)`` then ``group.prune()``),
  then a forward pass checks the pruned model. Build and prune are also reported apart. The previous run's
  model is collected before the clock starts (then ``gc.freeze()``); the graph is deleted and ``gc.collect()``
  runs before it stops, so the weights a library replaces are freed inside the timing whether it drops them at
  once, keeps them while its graph lives, or leaves them to the cycle collector;
* ``llama-2L-4096-scattered``: the same with every other channel (``idxs=range(0, n, 2)``) instead of the first
  half, so that no block copy applies (what an importance ranking usually gives).

Torch-Pruning (the optional PyPI package ``torch-pruning``) runs the same calls where it can. Results are
printed as markdown and written to ``docs/benchmarks.md`` between ``<!-- bench_llm:start -->`` and
``<!-- bench_llm:end -->``.

Usage::

    .venv/bin/python benchmarks/bench_llm.py [--cases llama-2L-4096] [--repeat 3] [--no-write]
"""

from __future__ import annotations

import argparse
import datetime
import multiprocessing as mp
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from docs_section import write_section

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "benchmarks.md"
START, END = "<!-- bench_llm:start -->", "<!-- bench_llm:end -->"
MB = 2**20
CASES = ("llama3-70b-meta", "llama-2L-4096", "llama-2L-4096-scattered")


def _peak_rss() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def _config(case: str):
    from transformers import LlamaConfig

    if case == "llama3-70b-meta":
        return LlamaConfig(vocab_size=128256, hidden_size=8192, intermediate_size=28672, num_hidden_layers=80,
                           num_attention_heads=64, num_key_value_heads=8, max_position_embeddings=8192,
                           rope_theta=500000.0)
    return LlamaConfig(vocab_size=32000, hidden_size=4096, intermediate_size=14336, num_hidden_layers=2,
                       num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=4096)


def _measure(lib: str, case: str, repeat: int, threads: int) -> dict[str, Any]:
    import gc
    import warnings

    import torch
    from transformers import LlamaForCausalLM

    warnings.simplefilter("ignore")
    torch.set_num_threads(threads)
    if lib == "anyprune":
        import anyprune as tpl
    else:
        try:
            import torch_pruning as tpl  # type: ignore[no-redef]
        except Exception as e:  # optional
            return {"error": f"unavailable: {type(e).__name__}"}
    on_meta = case.endswith("meta")
    builds: list[float] = []
    totals: list[float] = []
    groups = None
    note = ""
    for _ in range(repeat if not on_meta else 1):
        cfg = _config(case)  # fresh each run: anyprune keeps model.config in sync with the pruned weights
        width = cfg.intermediate_size
        torch.manual_seed(0)
        if on_meta:
            with torch.device("meta"):
                model = LlamaForCausalLM(cfg)
            ids = torch.randint(0, 1000, (1, 16)).to("meta")
        else:
            model = LlamaForCausalLM(cfg).eval()
            ids = torch.randint(0, 1000, (1, 16))
        gc.collect()  # the previous run's model and graph are freed before timing, not inside it
        gc.freeze()  # ...and the collection inside the timing below scans only what build and prune created
        t0 = time.perf_counter()
        try:
            if lib == "anyprune":
                dg = tpl.DependencyGraph().build_dependency(model, ids, output_transform=lambda o: o.logits)
            else:
                dg = tpl.DependencyGraph().build_dependency(model, example_inputs=ids,
                                                            output_transform=lambda o: o.logits)
            t1 = time.perf_counter()
            if on_meta:
                groups = len(list(dg.get_all_groups()))
            else:
                for layer in model.model.layers:
                    n = layer.mlp.gate_proj.out_features
                    idxs = list(range(0, n, 2)) if case.endswith("scattered") else list(range(n // 2))
                    dg.get_pruning_group(layer.mlp.gate_proj, tpl.prune_linear_out_channels, idxs=idxs).prune()
        except Exception as e:
            return {"error": f"{type(e).__name__}: {str(e)[:120]}"}
        del dg  # a library may keep the replaced weights alive as long as its graph lives: freed inside the timing
        gc.collect()  # ...as are those it leaves to the cycle collector
        t2 = time.perf_counter()
        gc.unfreeze()
        builds.append(t1 - t0)
        totals.append(t2 - t0)
        if not on_meta:
            with torch.no_grad():
                out = model(ids).logits
            assert out.shape == (1, 16, _config(case).vocab_size)
            widths = {layer.mlp.down_proj.in_features for layer in model.model.layers}
            note = f"MLP {width} -> {sorted(widths)}"
        del model
    build, total = statistics.median(builds), statistics.median(totals)
    return {"time": total, "build": build, "groups": groups, "rss": _peak_rss(), "note": note}


def _child(lib, case, repeat, threads, q) -> None:
    try:
        q.put(_measure(lib, case, repeat, threads))
    except BaseException as e:  # report, never hang the parent
        q.put({"error": f"{type(e).__name__}: {str(e)[:120]}"})


def run(lib: str, case: str, repeat: int, threads: int, timeout: float) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_child, args=(lib, case, repeat, threads, q))
    p.start()
    p.join(timeout)
    if p.is_alive():
        p.kill()
        p.join()
        return {"error": f"timed out after {timeout:.0f} s"}
    try:
        return q.get(timeout=5)
    except Exception:
        return {"error": f"process exited with code {p.exitcode}"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=300)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    rows = []
    for case in args.cases.split(","):
        res = {lib: run(lib, case, args.repeat, args.threads, args.timeout) for lib in ("anyprune", "torch_pruning")}
        rows.append((case, res))
        print(case, res, flush=True)

    def cell(r: dict) -> str:
        return r["error"] if "error" in r else f"{r['time'] * 1000:.0f} ms"

    def split(r: dict) -> str:
        if "error" in r or r.get("groups"):
            return "-"
        return f"{r['build'] * 1000:.0f} / {(r['time'] - r['build']) * 1000:.0f} ms"

    lines = [
        f"Llama graph build and pruning ({datetime.date.today()}, {platform.machine()}, Python "
        f"{platform.python_version()}, {args.threads} thread(s), median of {args.repeat} where real weights; "
        "each library in its own process).",
        "",
        "| case | anyprune | torch-pruning | ratio | anyprune build / prune | torch-pruning build / prune "
        "| anyprune peak RSS | torch-pruning peak RSS | notes |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for case, res in rows:
        a, t = res["anyprune"], res["torch_pruning"]
        ratio = f"{t['time'] / a['time']:.1f}x" if "time" in a and "time" in t else "-"
        rss = [f"{r['rss'] / MB:.0f} MB" if "rss" in r else "-" for r in (a, t)]
        notes = "; ".join(x for x in (a.get("note", ""), f"{a['groups']} groups" if a.get("groups") else "") if x)
        lines.append(f"| {case} | {cell(a)} | {cell(t)} | {ratio} | {split(a)} | {split(t)} | {rss[0]} | {rss[1]} "
                     f"| {notes} |")
    lines += [
        "",
        "*llama3-70b-meta*: graph build plus listing the groups of a Llama-3-70B-shaped config on the meta device "
        "(peak RSS of the whole process, imports included). *llama-2L-4096*: build plus pruning half of each "
        "layer's MLP (first half of the channels; *-scattered*: every other channel), then a forward pass. The "
        "previous run's model is collected before the clock starts (then `gc.freeze()`); the graph is deleted and "
        "`gc.collect()` runs before it stops, so "
        "freeing the replaced weights counts for both libraries (torch-pruning 1.6.1 keeps them referenced until its "
        "graph is deleted: about 1.3 GB of resident memory for the scattered case; anyprune frees them when the "
        "step commits). The prune part is memory-bound: each layer "
        "writes three new 4096 x 7168 float32 tensors (117 MB each) into freshly mapped memory and frees three of "
        "235 MB, the minimum for a physically smaller model; both libraries do this work, so the ratio of the "
        "totals is bounded by it while the graph builds differ by a larger factor. Reproduce with "
        "`.venv/bin/python benchmarks/bench_llm.py` (torch-pruning: `pip install torch-pruning==1.6.1 --no-deps`).",
    ]
    table = "\n".join(lines)
    print(table)
    if not args.no_write:
        heading = "" if START in (DOCS.read_text() if DOCS.exists() else "") else "## Llama graph build and pruning\n\n"
        write_section(f"{heading}{START}\n{table}\n{END}", START, END)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
