"""The Rust /stream server's README, verbatim, on poly-ray: its example command
(`cargo run --release -- -m model.llm -f -P 8081` becomes `poly-ray run -m model.llm
-f -P 8081`) starts the whole graph in a subprocess, and its example body streams the
prompt's line, then the generated text."""

import os
import sys
from pathlib import Path

import httpx
import pytest
from subprocess_server import started

pytestmark = pytest.mark.ray
REPO = Path(__file__).resolve().parents[2]

BODY = {"num_predict": 64, "prompt": "Once upon a time", "n_batch": 16, "top_k": 50, "top_p": 0.9,
        "repeat_penalty": 1.5, "temp": 0.7, "cache": 42}


def test_the_documented_command_and_body(gemma_path, tmp_path, monkeypatch):
    (tmp_path / "model.llm").symlink_to(gemma_path)  # a GGUF file by any name
    monkeypatch.setenv("PYTHONPATH", str(REPO))  # this tree's poly_ray, in Ray's workers too
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    command = [sys.executable, "-m", "poly_ray.cli", "run", "-m", "model.llm", "-f", "-P", "8081"]
    with started(command, "http://127.0.0.1:8081", cwd=tmp_path, log=tmp_path / "run.log"):
        r = httpx.post("http://127.0.0.1:8081/stream", json=BODY, timeout=300)
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain"), r.text
        first, _, generated = r.text.partition("\n")
        assert first == "Once upon a time" and generated.strip()
        saved = r.headers["X-Poly-Prompt-File"]
        assert saved.startswith(str(tmp_path / "data")) and open(saved).read() == "Once upon a time"
        # Every API, not only /stream: the task and the model are names for clients.
        r = httpx.post("http://127.0.0.1:8081/v1/completions", json={"model": "model", "prompt": "Hi", "max_tokens": 2},
                       timeout=300)
        assert r.status_code == 200, r.text
    assert os.path.exists(saved)
