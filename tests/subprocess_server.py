"""A poly-ray server started the way a user starts it, as a command in a subprocess
(`poly-ray run ...`, `serve run poly_ray.app:build ...`), waited for on its port and
stopped with Ctrl-C (SIGINT) as a user stops it; then its whole process group."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

import httpx

START_WAIT_S = 420  # Ray's start, Serve's, the model's load: minutes on a loaded 2-core machine


@contextlib.contextmanager
def started(command: list[str], url: str, *, cwd: Path, log: Path):
    """Run ``command``; yield once ``url``/ready answers 200, with the process."""
    # Its own Ray, never the test session's (a child would inherit RAY_ADDRESS).
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    with open(log, "wb") as out:
        proc = subprocess.Popen(command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + START_WAIT_S
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"{command} exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{url}/ready", timeout=5).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise AssertionError(f"{command} did not answer on {url} in {START_WAIT_S} s:\n{log.read_text()[-4000:]}")
            time.sleep(1)
        yield proc
    finally:
        _stop(proc)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            pass
    # What Ray started under it (its GCS, raylet, workers) is in the same group.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)
