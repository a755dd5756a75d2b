"""`poly-ray import llm-api config.yaml` and `poly-ray import poly config.toml`, through
the CLI as a subprocess: the TOML written is a config `poly-ray check` accepts, each key
that has no equivalent is named with why, and a file of another kind is one line and
exit code 2."""

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

# llm-api's README, "Llama models on CPU - using llama.cpp", verbatim but for a GGUF file name.
LLM_API_LLAMA = """\
models_dir: /models
model_family: llama
setup_params:
  repo_id: user/repo_id
  filename: model-q4_0.gguf
model_params:
  n_ctx: 512
  n_parts: -1
  n_gpu_layers: 0
  seed: -1
  use_mmap: True
  n_threads: 8
  n_batch: 2048
  last_n_tokens_size: 64
  lora_base: null
  lora_path: null
  low_vram: False
  tensor_split: null
  rope_freq_base: 10000.0
  rope_freq_scale: 1.0
  verbose: True
"""


def cli(*argv, cwd):
    return subprocess.run([sys.executable, "-m", "poly_ray.cli", *argv], cwd=cwd, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})


def test_llm_api_config_becomes_toml_naming_what_it_cannot_map(tmp_path):
    (tmp_path / "config.yaml").write_text(LLM_API_LLAMA)
    r = cli("import", "llm-api", "config.yaml", "-o", "poly-ray.toml", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    written = tomllib.loads((tmp_path / "poly-ray.toml").read_text())
    assert written["models"]["model-q4_0"] == {"hf": "user/repo_id/model-q4_0.gguf", "context_size": 512,
                                               "threads_per_session": 8, "batch_size": 2048}
    assert written["tasks"]["default"] == {"model": "model-q4_0", "repetition_penalty_last_n": 64, "max_tokens": 512}
    assert written["cache_path"] == "/models" and written["default_task"] == "default"
    for key in ("n_parts", "use_mmap", "low_vram", "rope_freq_base", "rope_freq_scale", "verbose"):
        assert f"not mapped: model_params.{key}: " in r.stderr
    assert "seed" not in r.stderr and "lora_path" not in r.stderr  # -1 and null: the defaults here too
    assert "Traceback" not in r.stderr and "needs a fix" not in r.stderr
    r = cli("check", "-c", "poly-ray.toml", cwd=tmp_path)
    assert r.returncode == 0 and "model model-q4_0: hf = user/repo_id/model-q4_0.gguf, context 512" in r.stdout, r.stderr


@pytest.mark.parametrize(("text", "said"), [
    ("services:\n  llm:\n    image: 1b5d/llm-api\n", "is not an llm-api config.yaml: no model_family or setup_params"),
    ("models_dir: /models\nmodel_family: llama\nsetup_params: {repo_id: a/b, filename: m.gguf}\nport: 1\n",
     "unknown key 'port'"),
    ("- just\n- a list\n", "not a mapping"),
    ("key: [unclosed\n", "is not YAML (line 2)"),
    ("models_dir: /models\nmodel_family: huggingface\nsetup_params: {repo_id: a/b}\n",
     "runs transformers weights, not GGUF"),
])
def test_a_yaml_that_is_not_llm_apis_is_one_line_and_exit_code_2(tmp_path, text, said):
    (tmp_path / "config.yaml").write_text(text)
    r = cli("import", "llm-api", "config.yaml", cwd=tmp_path)
    assert r.returncode == 2 and r.stdout == "" and r.stderr.count("\n") == 1, r.stderr
    assert said in r.stderr and "Traceback" not in r.stderr


def test_polys_config_gets_polys_defaults_and_its_keys_moved(tmp_path, gemma_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "pythia.gguf").symlink_to(gemma_path)
    # Poly's first config.example.toml, and a task as its config.rs read them then.
    (tmp_path / "config.toml").write_text(
        'bind_address = "0.0.0.0:3000"\n\n[endpoints.pythia]\nmodel_path  = "./data/pythia.gguf"\n'
        'architecture = "gptneox"\nthreads_per_session = 1\n\n'
        '[tasks.complete]\nmodel = "pythia"\nbatch_size = 16\ntemperature = 0.5\n')
    r = cli("import", "poly", "config.toml", "-o", "poly-ray.toml", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    written = tomllib.loads((tmp_path / "poly-ray.toml").read_text())
    assert written["models"]["pythia"] == {"model_path": "./data/pythia.gguf", "architecture": "gptneox",
                                           "threads_per_session": 1, "context_size": 512, "batch_size": 16}
    assert written["tasks"]["complete"] == {"model": "pythia", "temperature": 0.5, "repeat_penalty": 1.3,
                                            "min_p": 0.0, "max_tokens": 512}
    assert "[endpoints.pythia] is [models.pythia]" in r.stderr and "needs a fix" not in r.stderr
    assert cli("check", "-c", "poly-ray.toml", cwd=tmp_path).returncode == 0
    (tmp_path / "notes.toml").write_text('title = "not a Poly config"\n')
    r = cli("import", "poly", "notes.toml", cwd=tmp_path)
    assert r.returncode == 2 and "is not a Poly config.toml" in r.stderr and r.stderr.count("\n") == 1
