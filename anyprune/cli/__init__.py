"""``anyprune`` command line: ``inspect`` a model's groups, ``prune`` it, save it and report.

Examples::

    anyprune inspect torchvision:resnet50
    anyprune prune torchvision:resnet50 --ratio 0.5 --global --round-to 8 --out pruned/ --report report.html
    anyprune prune hf:path/to/llama --target-macs 0.5 --importance l2 --out pruned-llama/
    anyprune prune hf:path/to/llama --ratio 0.2 --calibration book.txt --out pruned-llama/   # OBS + re-fit
    anyprune prune torchvision:resnet50 --ratio 0.3 --calibration images/ --out pruned/
    python -m anyprune inspect pruned/          # a directory written by --out

Models are built with random weights unless a local checkpoint is given; nothing is downloaded. Bad input
ends with exit status 2 and one line on stderr saying what was wrong.
"""

from __future__ import annotations

import argparse
import fnmatch
import os
import sys
import time
import warnings
from collections.abc import Sequence
from typing import Any

from ..errors import AnyPruneError, ConfigError

__all__ = ["main"]

IMPORTANCE = ("l1", "l2", "lamp", "fpgm", "random", "taylor", "bn", "obs", "wanda_sp", "fluctuation")


class _BadInput(Exception):
    pass


def _ratio(text: str) -> float:
    try:
        v = float(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from err
    if not 0.0 <= v < 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {text}")
    return v


def _budget(text: str) -> float:
    try:
        v = float(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from err
    if not v > 0 or v != v:
        raise argparse.ArgumentTypeError(f"must be a fraction in (0, 1] or an absolute count, got {text}")
    return v


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from err
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text}")
    return v


MAX_INPUT_SIZE = 2048
"""The largest --input-size: one example image of that side is a few tens of MB."""


def _image_side(text: str) -> int:
    v = _positive_int(text)
    if v > MAX_INPUT_SIZE:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_INPUT_SIZE}, got {text}")
    return v


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit status 2
        raise _BadInput(message)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="anyprune", description="Structural pruning for any PyTorch model.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    common = _Parser(add_help=False)
    common.add_argument("model", help="torchvision:NAME, timm:NAME, hf:PATH or a directory saved by anyprune")
    common.add_argument("--input-size", type=_image_side, default=None,
                        help=f"image side for vision models (at most {MAX_INPUT_SIZE})")
    common.add_argument("--no-progress", action="store_true", help="no progress bars")
    ins = sub.add_parser("inspect", parents=[common], help="list the model's prunable groups")
    ins.add_argument("--all", action="store_true", help="groups of every dim, not only conv/linear outputs")
    pr = sub.add_parser("prune", parents=[common], help="prune, verify, save and report")
    pr.add_argument("--ratio", type=_ratio, default=0.5, help="fraction of each group to remove (default 0.5)")
    pr.add_argument("--global", dest="global_pruning", action="store_true", help="rank all groups together")
    pr.add_argument("--importance", choices=IMPORTANCE, default=None,
                    help="criterion (default: l2; obs with --calibration)")
    pr.add_argument("--calibration", default=None, metavar="PATH",
                    help="calibration data: a text file (language models) or an image folder (vision models); "
                         "enables the calibrated criteria and least-squares reconstruction")
    pr.add_argument("--calibration-samples", type=_positive_int, default=32,
                    help="sequences (text) or batches of 16 images to use (default 32)")
    pr.add_argument("--calibration-seq-len", type=_positive_int, default=256, help="tokens per text sequence")
    pr.add_argument("--no-reconstruct", action="store_true", help="with --calibration: do not re-fit consumers")
    pr.add_argument("--reconstruction-target", choices=("auto", "dense", "layer"), default="auto",
                    help="with --calibration: what re-fitted layers reproduce (default auto: the dense model's "
                         "outputs outside the chain of repeated blocks, where cross-validation agrees)")
    pr.add_argument("--round-to", type=_positive_int, default=None, help="keep multiples of this many channels")
    pr.add_argument("--target-macs", type=_budget, default=None, help="MACs budget: fraction or absolute")
    pr.add_argument("--target-params", type=_budget, default=None, help="parameter budget: fraction or absolute")
    pr.add_argument("--ignore", action="append", default=[], metavar="PATTERN",
                    help="module names (fnmatch patterns) never pruned; repeatable")
    pr.add_argument("--heads", type=_ratio, default=None, help="also remove this fraction of attention heads")
    pr.add_argument("--out", default=None, help="directory to save the pruned model (safetensors + JSON)")
    pr.add_argument("--max-memory", default=None, metavar="SIZE",
                    help="prune an hf:DIR safetensors checkpoint out of core, holding at most SIZE (e.g. 2GB) of "
                         "tensors; writes a Hugging Face checkpoint to --out (magnitude criteria: l1, l2, lamp)")
    pr.add_argument("--report", default=None, help="write an HTML report to this file")
    pr.add_argument("--no-latency", action="store_true", help="skip the CPU latency measurement (1 thread)")
    return p


# ------------------------------------------------------------------ helpers
def _progress(iterable, total: int | None, desc: str, enabled: bool):
    if not enabled:
        return iterable
    try:
        from tqdm import tqdm
    except ImportError:  # optional
        return iterable
    return tqdm(iterable, total=total, desc=desc, leave=False, file=sys.stderr)


def _graph(loaded, **kwargs):
    from ..depgraph import DependencyGraph

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return DependencyGraph().build_dependency(loaded.model, loaded.inputs,
                                                  output_transform=loaded.output_transform, **kwargs)


def _fmt(n: float | None, unit: str = "") -> str:
    if n is None:
        return "n/a"
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= div:
            return f"{n / div:.2f}{suffix}{unit}"
    return f"{n:.0f}{unit}" if float(n).is_integer() else f"{n:.2f}{unit}"


# ------------------------------------------------------------------ commands
def _inspect(args) -> int:
    from ..report import group_summary, pinned_summary
    from .models import load_model

    loaded = load_model(args.model, args.input_size)
    t0 = time.perf_counter()
    dg = _graph(loaded)
    groups = dg.groups(root_module_types=None) if args.all else dg.groups()
    took = time.perf_counter() - t0
    rows = [group_summary(g) for g in groups]
    print(f"{loaded.source}: {len(rows)} prunable groups (graph built in {took * 1000:.0f} ms)")
    print(f"{'#':>3}  {'root':<48} {'size':>6}  {'structure':<9}  {'kind':<11}  coupled")
    for k, r in enumerate(rows):
        names = [r["root"], *r["coupled"]]
        shown = ", ".join(names[:3]) + (f" +{len(names) - 3} more" if len(names) > 3 else "")
        kind = "exact" if r["exact"] else "approximate"
        print(f"{k:>3}  {r['root'][:48]:<48} {r['size']:>6}  {r['structure']:<9}  {kind:<11}  {shown}")
    pins = pinned_summary(dg, max_examples=3)
    if pins:
        print("pinned (never pruned):")
        for p in sorted(pins, key=lambda p: -p["count"]):
            print(f"  {p['count']:>6} positions  {p['reason']}  (e.g. {', '.join(p['examples'])})")
    return 0


def _importance(name: str, loaded, progress: bool = False):
    from .. import importance as imp

    if name in ("l1", "l2"):
        return imp.GroupMagnitudeImportance(p=1 if name == "l1" else 2)
    if name == "lamp":
        return imp.LAMPImportance()
    if name == "fpgm":
        return imp.FPGMImportance()
    if name == "random":
        return imp.RandomImportance()
    if name == "bn":
        return imp.BNScaleImportance()
    if name in ("obs", "wanda_sp", "fluctuation"):
        return {"obs": imp.OBSImportance, "wanda_sp": imp.WandaSPImportance,
                "fluctuation": imp.FluctuationImportance}[name](progress=progress)
    # taylor: gradients of a self-supervised loss on the example inputs (no labels on the command line)
    from ..trace.recorder import run_model

    model = loaded.model
    model.zero_grad()
    out = run_model(model, loaded.inputs)
    out = loaded.output_transform(out) if loaded.output_transform else out
    out.float().pow(2).mean().backward()
    return imp.GroupTaylorImportance()


def _measure(model, inputs, latency: bool):
    from ..utils import count_ops_and_params

    macs, params = count_ops_and_params(model, inputs)
    ms = None
    if latency:
        import logging

        # torch.utils.benchmark imports cpp_extension, which logs a CUDA_HOME notice on CPU-only machines
        logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
        from ..utils import measure_latency

        ms, _std = measure_latency(model, inputs, repeat=5, warmup=1, num_threads=1)
    return params, macs, ms


def _prune(args) -> int:
    import torch

    from ..io.saving import save_pruned
    from ..pruner import MetaPruner
    from .models import calibration_data, load_model

    _check_outputs(args)
    if args.max_memory is not None:
        return _prune_out_of_core(args)
    loaded = load_model(args.model, args.input_size)
    calibration = None
    if args.calibration is not None:
        calibration = calibration_data(loaded, args.calibration, args.input_size, args.calibration_seq_len,
                                       args.calibration_samples)
    if args.importance is None:
        args.importance = "obs" if calibration is not None else "l2"
    if args.importance in ("obs", "wanda_sp", "fluctuation") and calibration is None:
        raise ConfigError(f"--importance {args.importance} needs --calibration (a text file or an image folder)")
    model = loaded.model
    names = dict(model.named_modules())
    ignored = []
    for pattern in args.ignore:
        hits = [m for n, m in names.items() if n and fnmatch.fnmatch(n, pattern)]
        if not hits:
            raise ConfigError(f"--ignore {pattern!r} matches no module")
        ignored.extend(hits)
    from ..report import group_summary, layer_rows, layer_widths, pinned_summary

    widths_before = layer_widths(model)
    before = _measure(model, loaded.inputs, not args.no_latency)
    importance = _importance(args.importance, loaded, not args.no_progress)
    kwargs: dict[str, Any] = {}
    if args.heads is not None:
        kwargs.update(prune_num_heads=True, head_pruning_ratio=args.heads)
    if calibration is not None:
        kwargs.update(calibration=calibration, reconstruct=not args.no_reconstruct,
                      reconstruction_target=args.reconstruction_target)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pruner = MetaPruner(model, loaded.inputs, importance=importance, pruning_ratio=args.ratio,
                            global_pruning=args.global_pruning, round_to=args.round_to, ignored_layers=ignored,
                            target_macs=args.target_macs, target_params=args.target_params,
                            output_transform=loaded.output_transform, **kwargs)
        dg = pruner.DG
        all_groups = dg.groups()
        summaries = {g.atoms[0]: group_summary(g) for g in all_groups}
        if calibration is not None:  # calibration, scoring and reconstruction need the whole step at once
            table = dg.dims.atoms
            sizes = {a: table.atom_size(a) for a in summaries}
            pruner.step()
            for a, row in summaries.items():
                row["pruned"] = sizes[a] - table.atom_size(a)
        else:
            steps = list(pruner.step(interactive=True) or [])
            for g in _progress(steps, len(steps), "pruning", not args.no_progress):
                summaries[g.atoms[0]]["pruned"] = sum(int(m.sum()) for m in g.removal().values())
                g.prune()
    with torch.no_grad():
        dg.verify()
    after = _measure(model, loaded.inputs, not args.no_latency)
    print(f"{loaded.source}: pruned {sum(1 for r in summaries.values() if r['pruned'])} of {len(all_groups)} groups; "
          "the pruned model re-ran the example inputs with unchanged output shapes")
    print(f"{'':<14}{'before':>12}{'after':>12}{'ratio':>9}")
    for label, b, a, unit in (("params", before[0], after[0], ""), ("MACs", before[1], after[1], ""),
                              ("CPU latency", before[2], after[2], " ms")):
        ratio = f"{b / a:.2f}x" if a and b else "n/a"
        print(f"{label:<14}{_fmt(b, unit):>12}{_fmt(a, unit):>12}{ratio:>9}")
    if args.out:
        out = _save_atomically(model, args.out, loaded.source,
                               lambda m, d, source: save_pruned(m, d, source=source, example_inputs=loaded.inputs))
        print(f"saved to {out} (model.safetensors + anyprune.json)")
    if args.report:
        from ..report import write_report

        data = {
            "title": f"anyprune: {loaded.source}",
            "model": loaded.source,
            "summary": {"params": [before[0], after[0]], "macs": [before[1], after[1]],
                        "latency_ms": [before[2], after[2]] if before[2] is not None else None},
            "layers": layer_rows(widths_before, layer_widths(model)),
            "groups": list(summaries.values()),
            "pinned": pinned_summary(dg, max_examples=5),
            "settings": {"ratio": args.ratio, "global": str(args.global_pruning), "importance": args.importance,
                         "calibration": args.calibration or "none",
                         "reconstruction": str(calibration is not None and not args.no_reconstruct)},
        }
        path = _write_atomically(args.report, lambda tmp: write_report(data, tmp))
        print(f"report written to {path}")
    return 0


def _prune_out_of_core(args) -> int:
    """``prune hf:DIR --out DIR2 --max-memory SIZE``: stream the checkpoint instead of loading it."""
    from pathlib import Path

    from ..io.sharded import parse_memory, prune_checkpoint
    from .models import _offline

    budget = parse_memory(args.max_memory)
    if not args.model.startswith("hf:") or not Path(args.model[3:]).is_dir():
        raise ConfigError("--max-memory prunes a Hugging Face checkpoint directory: give hf:DIR")
    if args.out is None:
        raise ConfigError("--max-memory writes the pruned checkpoint to --out DIR: give --out")
    unsupported = [flag for flag, used in (("--calibration", args.calibration is not None),
                                           ("--report", args.report is not None),
                                           ("--target-macs", args.target_macs is not None),
                                           ("--target-params", args.target_params is not None)) if used]
    if unsupported:
        raise ConfigError(f"--max-memory does not combine with {', '.join(unsupported)} (it never loads the model)")
    name = args.importance or "l2"
    if name not in ("l1", "l2", "lamp"):
        raise ConfigError(f"--max-memory computes magnitude criteria only (l1, l2, lamp), not {name}")
    _offline()
    kwargs: dict[str, Any] = {"global_pruning": args.global_pruning, "round_to": args.round_to,
                              "prune_head_dims": False}  # a pruned head_dim has no config form next to rotary tables
    if args.heads is not None:
        kwargs.update(prune_num_heads=True, head_pruning_ratio=args.heads)
    if args.ignore:
        kwargs["ignored_layers"] = args.ignore
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = prune_checkpoint(args.model[3:], args.out, pruning_ratio=args.ratio, max_memory=budget,
                                  importance=_importance(name, None), progress=not args.no_progress, **kwargs)
    print(f"{args.model}: pruned {result.groups_pruned} groups out of core (at most {budget:,} bytes of tensors "
          f"at once); params {result.params_before:,} -> {result.params_after:,}; saved to {args.out}")
    return 0


def _check_outputs(args) -> None:
    """Refuse outputs that cannot be written before any work starts."""
    from pathlib import Path

    if args.out:
        out = Path(args.out)
        if out.exists() and not out.is_dir():
            raise ConfigError(f"--out {out} exists and is not a directory")
        parent = out.resolve().parent
        if not parent.is_dir():
            raise ConfigError(f"--out {out}: the folder {parent} does not exist")
    if args.report:
        rep = Path(args.report)
        if rep.is_dir():
            raise ConfigError(f"--report {rep} is a directory; give a file name such as report.html")
        if not rep.resolve().parent.is_dir():
            raise ConfigError(f"--report {rep}: the folder {rep.resolve().parent} does not exist")


def _save_atomically(model, out_dir: str, source: str, save) -> Any:
    """Save into a fresh folder next to ``out_dir`` and move the files in only when all are written, so that a
    failure leaves no partial output (and an earlier save in ``out_dir`` intact)."""
    import shutil
    import tempfile
    from pathlib import Path

    out = Path(out_dir)
    created = not out.exists()
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.resolve().parent))
    try:
        save(model, tmp, source=source)
        out.mkdir(exist_ok=True)
        for f in tmp.iterdir():
            os.replace(f, out / f.name)
    except BaseException:
        if created and out.exists():
            shutil.rmtree(out, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _write_atomically(path: str, write) -> Any:
    import tempfile
    from pathlib import Path

    target = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.resolve().parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return target


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return text if len(text) <= 600 else text[:597] + "..."


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``anyprune`` console script; returns the exit status."""
    try:
        args = _parser().parse_args(argv)
        return _inspect(args) if args.command == "inspect" else _prune(args)
    except _BadInput as err:
        print(f"anyprune: error: {_one_line(err)}", file=sys.stderr)
        return 2
    except (ConfigError, FileNotFoundError, PermissionError, IsADirectoryError) as err:
        print(f"anyprune: error: {_one_line(err)}", file=sys.stderr)
        return 2
    except AnyPruneError as err:
        print(f"anyprune: error: {type(err).__name__}: {_one_line(err)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("anyprune: error: interrupted; nothing was written", file=sys.stderr)
        return 130
    except RecursionError:
        print("anyprune: error: an input file is nested too deeply", file=sys.stderr)
        return 2
    except Exception as err:  # errors of torch, transformers, timm, the file system: one line, no traceback
        print(f"anyprune: error: {type(err).__name__}: {_one_line(err)}", file=sys.stderr)
        return 1
