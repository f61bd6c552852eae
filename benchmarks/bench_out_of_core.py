"""Out-of-core pruning of a sharded checkpoint larger than the memory allowed.

Makes (once, under ``--work``) a Llama-architecture checkpoint of about 1.5B parameters with random float32
weights in ~1 GB safetensors shards (about 6 GB on disk; it is never shipped), then, each in a fresh process:

* *floor*: read every tensor of the checkpoint and write it back unchanged in shards (the least possible work);
* *anyprune*: ``prune_checkpoint(..., max_memory=...)``: MLP channels and attention heads -50% (L2 magnitude),
  scoring by streaming the shards, pruning on the meta model, writing the pruned shards.

Peak resident memory is the process's ``VmHWM`` (imports included). The pruned output is then loaded with plain
``from_pretrained`` on the meta device to check its config and shapes. Equality with in-memory pruning is tested
on a small config by ``tests/io/test_sharded.py``.

Run: ``.venv/bin/python benchmarks/bench_out_of_core.py [--work DIR] [--keep]``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import platform
import shutil
import time
from datetime import datetime, timezone
from pathlib import Path

from docs_section import publish

START, END = "<!-- bench_out_of_core:start -->", "<!-- bench_out_of_core:end -->"
CONFIG = {"hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 24, "num_attention_heads": 32,
          "num_key_value_heads": 4, "vocab_size": 32000, "tie_word_embeddings": False}
SHARD_BYTES = 10**9
MAX_MEMORY = "1GB"


def _peak_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def make_checkpoint(path: Path) -> int:
    """Write the random checkpoint shard by shard (one shard in memory at a time); returns its parameter count."""
    import torch
    import transformers
    from safetensors.torch import save_file

    path.mkdir(parents=True, exist_ok=True)
    cfg = transformers.LlamaConfig(**CONFIG)
    cfg.architectures = ["LlamaForCausalLM"]
    with torch.device("meta"):
        model = transformers.LlamaForCausalLM(cfg)
    shapes = {n: tuple(p.shape) for n, p in model.named_parameters()}
    gen = torch.Generator().manual_seed(0)
    weight_map: dict[str, str] = {}
    buffer: dict[str, torch.Tensor] = {}
    files: list[list[str]] = []

    def flush() -> None:
        if buffer:
            name = f"model-{len(files) + 1:05d}.safetensors"
            save_file(buffer, str(path / name), metadata={"format": "pt"})
            files.append(list(buffer))
            weight_map.update((n, name) for n in buffer)
            buffer.clear()

    filled = 0
    for n, shape in shapes.items():
        t = torch.ones(shape) if len(shape) == 1 else torch.randn(shape, generator=gen) * 0.02
        buffer[n] = t
        filled += t.numel() * 4
        if filled >= SHARD_BYTES:
            flush()
            filled = 0
    flush()
    total = sum((path / f).stat().st_size for f in set(weight_map.values()))
    (path / "model.safetensors.index.json").write_text(json.dumps({"metadata": {"total_size": total},
                                                                   "weight_map": weight_map}))
    cfg.save_pretrained(str(path))
    return sum(int(torch.Size(s).numel()) for s in shapes.values())


def _floor(src: str, dst: str, conn) -> None:
    from anyprune.io.sharded import CheckpointReader, parse_memory, write_safetensors

    t0 = time.perf_counter()
    limit = parse_memory(MAX_MEMORY) // 4
    reader = CheckpointReader(src)
    buffer, filled, k = {}, 0, 0
    Path(dst).mkdir(parents=True)
    for name, t in reader.tensors():
        buffer[name] = t.contiguous()
        filled += t.numel() * t.element_size()
        if filled >= limit:
            k += 1
            write_safetensors(Path(f"{dst}/part-{k}.safetensors"), buffer)
            buffer, filled = {}, 0
    if buffer:
        write_safetensors(Path(f"{dst}/part-{k + 1}.safetensors"), buffer)
    conn.send({"seconds": time.perf_counter() - t0, "peak_mb": _peak_mb()})


def _anyprune(src: str, dst: str, conn) -> None:
    import warnings

    import torch

    torch.set_num_threads(1)
    from anyprune.io.sharded import prune_checkpoint

    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = prune_checkpoint(src, dst, pruning_ratio=0.5, prune_num_heads=True, head_pruning_ratio=0.5,
                                  prune_head_dims=False, ignored_layers=["model.embed_tokens"],
                                  max_memory=MAX_MEMORY, progress=False)
    conn.send({"seconds": time.perf_counter() - t0, "peak_mb": _peak_mb(), "params_before": result.params_before,
               "params_after": result.params_after})


def _run(target, *args) -> dict:
    ctx = mp.get_context("spawn")
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=target, args=(*args, send))
    proc.start()
    out = recv.recv()
    proc.join()
    return out


def _check_output(path: Path) -> dict:
    import torch
    import transformers

    cfg = transformers.AutoConfig.from_pretrained(str(path))
    loaded = transformers.LlamaForCausalLM.from_pretrained(str(path)).eval()
    ids = torch.randint(0, cfg.vocab_size, (1, 8))
    with torch.no_grad():
        logits = loaded(ids).logits
    return {"intermediate_size": cfg.intermediate_size, "heads": cfg.num_attention_heads,
            "kv_heads": cfg.num_key_value_heads, "params": sum(p.numel() for p in loaded.parameters()),
            "finite": bool(torch.isfinite(logits).all())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", default="/tmp/anyprune-ooc", help="folder for the checkpoints (about 10 GB)")
    parser.add_argument("--keep", action="store_true", help="keep the checkpoints afterwards")
    parser.add_argument("--no-write", action="store_true", help="do not update docs/benchmarks.md")
    args = parser.parse_args()
    work = Path(args.work)
    src = work / "src"
    if not (src / "model.safetensors.index.json").exists():
        print("writing the random checkpoint ...", flush=True)
        n = make_checkpoint(src)
        print(f"  {n / 1e9:.2f}B parameters", flush=True)
    size = sum(f.stat().st_size for f in src.glob("*.safetensors"))
    shards = len(list(src.glob("*.safetensors")))
    for d in ("floor", "pruned"):
        shutil.rmtree(work / d, ignore_errors=True)
    floor = _run(_floor, str(src), str(work / "floor"))
    print(f"floor: {floor['seconds']:.1f} s, peak {floor['peak_mb']:.0f} MB", flush=True)
    shutil.rmtree(work / "floor", ignore_errors=True)
    ours = _run(_anyprune, str(src), str(work / "pruned"))
    print(f"anyprune: {ours['seconds']:.1f} s, peak {ours['peak_mb']:.0f} MB", flush=True)
    check = _check_output(work / "pruned")
    print(f"reloaded with from_pretrained: {check}", flush=True)
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    row = (f"| {size / 1e9:.2f} GB in {shards} shards, {ours['params_before'] / 1e9:.2f}B params | {MAX_MEMORY} | "
           f"{ours['seconds']:.0f} s | {ours['peak_mb']:,.0f} MB | {floor['seconds']:.0f} s | "
           f"{floor['peak_mb']:,.0f} MB | {ours['seconds'] / floor['seconds']:.2f}x | "
           f"{ours['params_after'] / 1e9:.2f}B params; intermediate {check['intermediate_size']}, heads "
           f"{check['heads']} / KV {check['kv_heads']}; plain from_pretrained runs: {check['finite']} |")
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    text = f"""{START}
## Out-of-core pruning of a sharded checkpoint

| checkpoint | max_memory | anyprune time | anyprune peak RSS | floor time | floor peak RSS | anyprune / floor | \
result |
|:---|:---|---:|---:|---:|---:|---:|:---|
{row}

Measured {stamp} on {platform.machine()}, Python {platform.python_version()}, one thread.

Method: `benchmarks/bench_out_of_core.py` writes a Llama-architecture checkpoint (hidden 2048, intermediate 8192,
24 layers, 32 heads over 4 KV heads, vocabulary 32000, untied; random float32 weights) in shards of about 1 GB.
Tensors are read with plain reads (not a memory map) and shards are written straight from each tensor's memory.
*anyprune*: `anyprune.io.sharded.prune_checkpoint(src, out, pruning_ratio=0.5, prune_num_heads=True,
head_pruning_ratio=0.5, prune_head_dims=False, ignored_layers=["model.embed_tokens"], max_memory="{MAX_MEMORY}")`
(MLP channels and attention heads; the hidden size is kept; the command line: `anyprune prune hf:DIR --out DIR2
--max-memory {MAX_MEMORY} --ratio 0.5 --heads 0.5 --ignore model.embed_tokens`): the graph is built from the
config on the meta device, L2 magnitudes are computed reading one tensor at a time, the step runs on the meta model
(deciding the kept positions and the config), and each tensor is read again, cut and written into output shards of
a quarter of `max_memory`. *floor*: the same reads and writes without any pruning (one fresh process each).
*peak RSS* is `VmHWM` of that process, Python, torch and transformers included. The output is loaded with plain
`from_pretrained` and run on 8 tokens. Tensor-for-tensor equality with pruning the loaded model in memory (same
criterion, same settings) is checked on a small sharded config by `tests/io/test_sharded.py`.
{END}
"""
    publish(text, START, END, write=not args.no_write)


if __name__ == "__main__":
    main()
