"""`serve run poly_ray.app:build config=my.toml`, Ray's own CLI as docs/guides/clusters.md
documents it, run literally in a subprocess: the graph it starts answers on Ray's default
127.0.0.1:8000."""

import socket
import sys
from pathlib import Path

import httpx
import pytest
from subprocess_server import started

pytestmark = pytest.mark.ray
REPO = Path(__file__).resolve().parents[2]
SERVE = Path(sys.executable).parent / "serve"  # Ray's CLI, installed next to this Python


def test_the_documented_serve_run_command(gemma_path, tmp_path, monkeypatch):
    assert "serve run poly_ray.app:build config=my.toml" in (REPO / "docs" / "guides" / "clusters.md").read_text()
    with socket.socket() as s:  # the command has no port flag: Serve's default it is
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        assert s.connect_ex(("127.0.0.1", 8000)) != 0, "port 8000 is taken: the documented command listens there"
    (tmp_path / "my.toml").write_text(
        f'public = true\nstate_dir = "{tmp_path / "state"}"\n\n'
        f'[models.gemma]\nmodel_path = "{gemma_path}"\ncontext_size = 512\nslots = 1\n\n'
        '[tasks.story]\nmodel = "gemma"\nmax_tokens = 8\n')
    monkeypatch.setenv("PYTHONPATH", str(REPO))  # this tree's poly_ray, in Ray's workers too
    command = [str(SERVE), "run", "poly_ray.app:build", "config=my.toml"]
    with started(command, "http://127.0.0.1:8000", cwd=tmp_path, log=tmp_path / "serve.log"):
        r = httpx.post("http://127.0.0.1:8000/v1/task/story/completion", json={"prompt": "Once upon a time"},
                       timeout=300)
        assert r.status_code == 200 and r.json()["text"], r.text
