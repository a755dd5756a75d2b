"""Virtual environments for clients that cannot share the test venv: langchain-llm-api
(LangChain 0.0.x on Pydantic 1) and instructor (jiter below what openai-agents needs).
Each is built once, from the registry, into a folder named by its requirements, and reused."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

CACHE = Path(os.environ.get("POLY_CLIENT_VENVS", "~/.cache/poly-ray/client-venvs")).expanduser()


def client_python(name: str, requirements: list[str]) -> Path:
    """The Python of a venv holding ``requirements``, built on first use (a minute or two)."""
    key = hashlib.sha256("\n".join([sys.version, *requirements]).encode()).hexdigest()[:12]
    venv = CACHE / f"{name}-{key}"
    python, ready = venv / "bin" / "python", venv / ".ready"
    if ready.exists():
        return python
    shutil.rmtree(venv, ignore_errors=True)  # a build cut short
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = subprocess.run([str(python), "-m", "pip", "install", "--quiet", *requirements], capture_output=True, text=True)
    if pip.returncode != 0:
        shutil.rmtree(venv, ignore_errors=True)
        raise RuntimeError(f"pip could not install {requirements} for the {name} client:\n{pip.stderr[-2000:]}")
    ready.touch()
    return python


def run_client(python: Path, script: str, base_url: str, timeout: float = 600) -> str:
    """Run ``script`` in that venv with BASE_URL set; its standard output (a failure shows its stderr)."""
    r = subprocess.run([str(python), "-c", script], capture_output=True, text=True, timeout=timeout,
                       env={**os.environ, "BASE_URL": base_url, "PYTHONPATH": ""})
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout
