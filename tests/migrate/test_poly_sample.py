"""Poly's sample configuration (its README's "model+task+memory" example), verbatim: its
GGML model is refused at start-up naming the conversion; with a GGUF file in the GGML
file's place, the config is accepted as written (architecture, use_gpu, the Qdrant
store, the task's prelude, prefix, postfix and memorization)."""

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

POLY_SAMPLE = r'''
[models.gpt2dutch]
model_path = "./data/gpt2-small-dutch-f16.bin"
architecture = "gpt2"
use_gpu = false

[memories.dutch_qdrant]
store = { qdrant = { url = "http://127.0.0.1:6333", collection = "nl" } }
dimensions = 768
embedding_model = "gpt2dutch"

[tasks.dutch_completion]
model = "gpt2dutch"
prelude = "### System:\nYou are an AI assistant that follows instruction extremely well. Help as much as you can.\n"
prefix =  "\n### User:\n"
postfix = "\n### Response:"
memorization = { memory = "dutch_qdrant", retrieve = 2 }
'''

# A GGML file's start as llama.cpp's last GGML writer made it: the magic "ggjt" (a
# little-endian uint32), version 3, then GPT-2 small's hyperparameters.
GGJT_HEAD = (0x67676A74).to_bytes(4, "little") + (3).to_bytes(4, "little") + b"".join(
    n.to_bytes(4, "little") for n in (50257, 1024, 768, 12, 12, 1))


def check(folder):
    return subprocess.run([sys.executable, "-m", "poly_ray.cli", "check", "-c", "config.toml"], cwd=folder,
                          capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})


def test_the_ggml_model_is_refused_naming_the_conversion(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "gpt2-small-dutch-f16.bin").write_bytes(GGJT_HEAD + bytes(256))
    (tmp_path / "config.toml").write_text(POLY_SAMPLE)
    r = check(tmp_path)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr
    assert "models.gpt2dutch.model_path:" in r.stderr and "is a GGML file (ggjt)" in r.stderr
    assert "convert_hf_to_gguf.py" in r.stderr


def test_the_sample_with_a_gguf_model_in_its_place_is_accepted_as_written(tmp_path, gemma_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "gpt2-small-dutch-f16.gguf").symlink_to(gemma_path)
    (tmp_path / "config.toml").write_text(POLY_SAMPLE.replace("f16.bin", "f16.gguf"))
    r = check(tmp_path)
    assert r.returncode == 0, r.stderr
    assert "model gpt2dutch: model_path" in r.stdout
    assert "task dutch_completion: model gpt2dutch, max_tokens 256, recalls 2 from memory dutch_qdrant" in r.stdout
    assert "memory dutch_qdrant:" in r.stdout and "http://127.0.0.1:6333 collection nl" in r.stdout
