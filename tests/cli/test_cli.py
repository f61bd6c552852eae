"""The command line, run as a subprocess (console script and ``python -m anyprune``)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import anyprune as tp

ROOT = Path(__file__).resolve().parents[2]
TINY_LLAMA = ROOT / "anyprune" / "testing" / "data" / "tiny-llama.json"
SCRIPT = Path(sys.executable).parent / "anyprune"


# every command runs with the network blocked: an audit hook fails on any socket use
_OFFLINE = ("import runpy, sys\n"
            "def _guard(event, args):\n"
            "    if event.startswith('socket.'):\n"
            "        raise RuntimeError('network use: ' + event)\n"
            "sys.addaudithook(_guard)\n"
            "sys.argv[0] = 'anyprune'\n"
            "runpy.run_module('anyprune', run_name='__main__')\n")


def _disk(*folders: Path) -> set[str]:
    """What a failing command could leave behind: the entries of the working directory (the repository root)
    and everything under the given folders."""
    found = {f"root:{p.name}" for p in ROOT.iterdir()}
    for folder in folders:
        found.update(str(p) for p in folder.rglob("*"))
    return found


def run(*args: str, script: bool = False) -> subprocess.CompletedProcess:
    cmd = [str(SCRIPT)] if script else [sys.executable, "-c", _OFFLINE]
    env = dict(os.environ, PYTHONWARNINGS="ignore", TRANSFORMERS_VERBOSITY="error")
    return subprocess.run([*cmd, *args, "--no-progress"], capture_output=True, text=True, timeout=600, env=env,
                          cwd=ROOT)


def test_inspect_resnet18():
    r = run("inspect", "torchvision:resnet18")
    assert r.returncode == 0, r.stderr
    assert "torchvision:resnet18: 12 prunable groups" in r.stdout
    assert re.search(r"layer4\.0\.conv2\s+512\s+channels\s+exact", r.stdout)
    assert "pinned (never pruned):" in r.stdout
    assert "model output" in r.stdout


@pytest.mark.skipif(not SCRIPT.exists(), reason="the console script is installed by `pip install -e .`")
def test_console_script_inspects_a_llama_config():
    r = run("inspect", f"hf:{TINY_LLAMA}", script=True)
    assert r.returncode == 0, r.stderr
    assert "14 prunable groups" in r.stdout
    assert re.search(r"model\.layers\.0\.self_attn\.q_proj\s+2\s+heads", r.stdout)  # the 2 KV groups


def test_prune_save_report_and_reload(tmp_path):
    out, report = tmp_path / "pruned", tmp_path / "report.html"
    r = run("prune", "torchvision:resnet18", "--ratio", "0.5", "--round-to", "8", "--input-size", "64",
            "--out", str(out), "--report", str(report), "--no-latency")
    assert r.returncode == 0, r.stderr
    params = re.search(r"params\s+(\S+)\s+(\S+)\s+(\S+)x", r.stdout)
    assert params is not None, r.stdout
    assert float(params.group(3)) > 2.0  # about 3x fewer parameters at half the channels
    assert (out / "model.safetensors").exists()
    record = json.loads((out / "anyprune.json").read_text())
    assert record["source"] == "torchvision:resnet18"
    assert record["example_inputs"]["tensors"] == [{"key": None, "shape": [1, 3, 64, 64], "dtype": "float32"}]
    html = report.read_text()
    assert "torchvision:resnet18" in html
    import torchvision

    fresh = tp.load_pruned(torchvision.models.resnet18(), out)
    assert fresh.layer1[0].conv1.out_channels % 8 == 0
    assert fresh.layer1[0].conv1.out_channels < 64
    again = run("inspect", str(out))
    assert again.returncode == 0, again.stderr
    assert "torchvision:resnet18" in again.stdout
    with torch.no_grad():
        assert fresh(torch.randn(1, 3, 64, 64)).shape == (1, 1000)


def test_prune_measures_cpu_latency():
    r = run("prune", "torchvision:resnet18", "--ratio", "0.5", "--input-size", "64")
    assert r.returncode == 0, r.stderr
    latency = re.search(r"CPU latency\s+(\S+) ms\s+(\S+) ms\s+(\S+)x", r.stdout)
    assert latency is not None, r.stdout
    assert float(latency.group(1)) > 0
    assert float(latency.group(2)) > 0


@pytest.mark.zoo
def test_prune_llama_to_a_macs_budget(tmp_path):
    pytest.importorskip("transformers")
    r = run("prune", f"hf:{TINY_LLAMA}", "--target-macs", "0.5", "--out", str(tmp_path / "m"), "--no-latency")
    assert r.returncode == 0, r.stderr
    macs = re.search(r"MACs\s+(\S+)\s+(\S+)\s+(\S+)x", r.stdout)
    assert macs is not None, r.stdout
    assert 1.9 <= float(macs.group(3)) <= 2.1


@pytest.mark.parametrize(("args", "message"), [
    (("inspect", "torchvision:no_such_net"), "unknown torchvision model"),
    (("inspect", "resnet18"), "unknown model"),
    (("inspect", "hf:/no/such/dir"), "no such Hugging Face directory"),
    (("prune", "torchvision:resnet18", "--ratio", "1.5"), "must be in [0, 1)"),
    (("prune", "torchvision:resnet18", "--ratio", "half"), "not a number"),
    (("prune", "torchvision:resnet18", "--importance", "magic"), "invalid choice"),
    (("prune", "torchvision:resnet18", "--ignore", "nothing.*"), "matches no module"),
    (("frobnicate", "torchvision:resnet18"), "invalid choice"),
])
def test_bad_input_exits_2_with_one_line(args, message, tmp_path):
    before = _disk(tmp_path)
    r = run(*args, "--out", str(tmp_path / "out")) if args[0] == "prune" else run(*args)
    assert _disk(tmp_path) == before  # nothing left on disk
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("anyprune: error:")
    assert message in lines[0]


@pytest.mark.parametrize(("args", "status", "message"), [
    (("prune", "timm:../../etc"), 2, "hub ids and paths are not accepted"),
    (("prune", "torchvision:resnet18", "--input-size", "100000"), 2, "must be at most 2048"),
    (("prune", "torchvision:resnet18", "--out", "README.md"), 2, "exists and is not a directory"),
    (("prune", "torchvision:resnet18", "--report", "no/such/folder/r.html"), 2, "does not exist"),
])
def test_hostile_arguments_give_one_line_before_any_work(args, status, message, tmp_path):
    before = _disk(tmp_path)
    r = run(*args)
    assert _disk(tmp_path) == before  # nothing left on disk
    assert r.returncode == status, (r.stdout, r.stderr)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("anyprune: error:")
    assert message in lines[0]
    assert "Traceback" not in r.stderr
    assert "pruned" not in r.stdout  # refused before the work started


@pytest.mark.parametrize("spec", ["timm:hf-hub:timm/resnet18.a1_in1k", "timm:hf_hub:timm/resnet18",
                                  "timm:local-dir:/tmp", "hf:timm/resnet18.a1_in1k"])
def test_hub_names_are_refused_without_touching_the_network(spec):
    code = (
        "import socket, sys\n"
        "def guard(event, args):\n"
        "    if event.startswith('socket.'): raise RuntimeError('network use: ' + event)\n"
        "sys.addaudithook(guard)\n"
        "from anyprune.cli import main\n"
        f"sys.exit(main(['inspect', {spec!r}]))\n"
    )
    env = dict(os.environ, PYTHONWARNINGS="ignore", TRANSFORMERS_VERBOSITY="error")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env, cwd=ROOT)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 2, r.stderr
    assert len(lines) == 1, r.stderr
    assert "network use" not in r.stderr


def test_a_config_that_transformers_rejects_gives_one_line(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"architectures": [1], "model_type": "llama"}))
    r = run("prune", f"hf:{tmp_path}")
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode != 0
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("anyprune: error:")


def test_a_failed_save_leaves_no_partial_output(tmp_path, monkeypatch, capsys):
    from anyprune import cli
    from anyprune.io import saving

    def broken_save(model, path, source=None, example_inputs=None):
        (Path(path) / "model.safetensors").write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(saving, "save_pruned", broken_save)
    out = tmp_path / "out"
    status = cli.main(["prune", "torchvision:resnet18", "--no-latency", "--no-progress", "--out", str(out)])
    err = capsys.readouterr().err
    assert status == 1
    assert err.strip().count("\n") == 0
    assert "disk full" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_unreadable_saved_directory_exits_2(tmp_path):
    (tmp_path / "anyprune.json").write_text("{not json")
    r = run("inspect", str(tmp_path))
    assert r.returncode == 2
    assert "cannot read the structure record" in r.stderr


def test_prune_with_an_image_folder_for_calibration(tmp_path):
    from PIL import Image

    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(6):
        pixels = (torch.rand(40 + i, 48, 3) * 255).to(torch.uint8).numpy()
        Image.fromarray(pixels).save(folder / f"{i}.png")
    r = run("prune", "torchvision:squeezenet1_1", "--ratio", "0.25", "--input-size", "64", "--calibration",
            str(folder), "--no-latency", "--report", str(tmp_path / "r.html"))
    assert r.returncode == 0, r.stderr
    assert "pruned 25 of 25 groups" in r.stdout
    html = (tmp_path / "r.html").read_text()
    assert "obs" in html
    assert str(folder) in html


def _tiny_llama_dir(path: Path) -> Path:
    transformers = pytest.importorskip("transformers")
    tokenizers = pytest.importorskip("tokenizers")
    words = "the of and a to in is was it that he she her his you i not be as at with".split()
    vocab = {w: i for i, w in enumerate(["<unk>", *words])}
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>")
    cfg = transformers.LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                                   num_key_value_heads=2, vocab_size=len(vocab))
    transformers.LlamaForCausalLM(cfg).save_pretrained(path)
    fast.save_pretrained(path)
    return path


def test_prune_a_language_model_with_a_text_file_for_calibration(tmp_path):
    model_dir = _tiny_llama_dir(tmp_path / "llama")
    text = tmp_path / "book.txt"
    text.write_text(" ".join(["it was the best of times and she was not at the ball with his sister"] * 60))
    r = run("prune", f"hf:{model_dir}", "--ratio", "0.25", "--calibration", str(text), "--calibration-seq-len",
            "32", "--no-latency", "--out", str(tmp_path / "out"))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "out" / "anyprune.json").exists()
    short = tmp_path / "short.txt"
    short.write_text("the")
    r = run("prune", f"hf:{model_dir}", "--calibration", str(short), "--no-latency")
    assert r.returncode == 2
    assert "fewer than one sequence" in r.stderr


@pytest.mark.parametrize(("args", "message"), [
    (("prune", "torchvision:resnet18", "--importance", "obs"), "needs --calibration"),
    (("prune", f"hf:{TINY_LLAMA}", "--calibration", str(TINY_LLAMA)), "needs a tokenizer"),
    (("prune", "torchvision:resnet18", "--calibration", "/no/such/folder"), "no such file or folder"),
])
def test_calibration_errors_exit_2_with_one_line(args, message, tmp_path):
    before = _disk(tmp_path)
    r = run(*args, "--no-latency", "--out", str(tmp_path / "out"), "--report", str(tmp_path / "r.html"))
    assert _disk(tmp_path) == before  # nothing left on disk
    assert r.returncode == 2
    assert message in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_prune_a_sharded_checkpoint_out_of_core(tmp_path):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                                   num_key_value_heads=2, vocab_size=60)
    transformers.LlamaForCausalLM(cfg).save_pretrained(tmp_path / "src", max_shard_size="40KB")
    out = tmp_path / "out"
    r = run("prune", f"hf:{tmp_path / 'src'}", "--max-memory", "100KB", "--ratio", "0.5", "--heads", "0.5",
            "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert "out of core" in r.stdout
    model = transformers.LlamaForCausalLM.from_pretrained(out)
    assert model.config.intermediate_size == 32
    assert model.config.num_attention_heads == 2
    with torch.no_grad():
        assert model(torch.randint(0, 60, (1, 5))).logits.shape == (1, 5, 60)
    before = _disk(tmp_path)
    bad = run("prune", f"hf:{tmp_path / 'src'}", "--max-memory", "100KB", "--importance", "taylor", "--out",
              str(tmp_path / "out2"))
    assert bad.returncode == 2
    assert "magnitude criteria only" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1
    assert _disk(tmp_path) == before


def test_the_demo_recipe_creates_the_folders_its_outputs_go_to():
    """`make demo` on a fresh clone: the command line refuses outputs whose folder does not exist (checked before
    any work), so the recipe must create them first."""
    recipe, inside = [], False
    for line in (ROOT / "Makefile").read_text().splitlines():
        if line.startswith("demo:"):
            inside = True
            continue
        if inside and not line.startswith(("\t", " ")):
            break
        if inside:
            recipe.append(line.strip())
    text = " ".join(recipe).replace("\\", " ")
    outputs = re.findall(r"--(?:out|report)\s+(\S+)", text)
    assert outputs, recipe
    made = re.findall(r"mkdir -p\s+(\S+)", text)
    for out in outputs:
        parent = str(Path(out).parent)
        assert any(parent == m or parent.startswith(m.rstrip("/") + "/") for m in made), (out, made)
        assert text.index(f"mkdir -p {parent}") < text.index(out)
