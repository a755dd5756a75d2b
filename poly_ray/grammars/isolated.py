"""The schema converter in warm child processes, with a memory limit and a hard timeout.

llama-cpp-python's converter is the one piece of the grammar path whose cost the caps
bound only indirectly: ``allOf`` copies the properties of what it references, and a
stray ``}`` in a pattern makes it loop for ever. A thread cannot be stopped, so the
conversion runs in a child (``_worker.py``) that caps its own address space; a child
past ``timeout_s`` is killed and replaced. Children stay warm between requests (a
round trip costs well under a millisecond; starting one about 40 ms, once), at most
``AT_ONCE`` of them, and exit when this process closes their stdin (or dies).
"""

from __future__ import annotations

import json
import os
import selectors
import subprocess
import sys
import threading
import time
from pathlib import Path

MEMORY_BYTES = 512 << 20  # a child's address space beyond what its interpreter maps at start
AT_ONCE = 2  # children converting together, per process

_WORKER = str(Path(__file__).with_name("_worker.py"))


class Failed(Exception):
    """The conversion did not finish: ``reason`` is "timeout", "memory" or "busy" (no child
    came free within the timeout: the only one not about the schema itself)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def _converter_path() -> str:
    import llama_cpp.llama_grammar  # the pure-Python converter; the child loads this file alone

    return llama_cpp.llama_grammar.__file__


class _Child:
    def __init__(self):
        self.proc = subprocess.Popen(
            [sys.executable, "-I", _WORKER, _converter_path(), str(MEMORY_BYTES)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, close_fds=True)
        assert self.proc.stdin is not None and self.proc.stdout is not None  # both piped above
        self.stdin, self.stdout = self.proc.stdin, self.proc.stdout
        self.buffer = b""

    def ask(self, request: dict, deadline: float) -> dict:
        self.stdin.write(json.dumps(request).encode() + b"\n")  # all of it (a large schema too)
        self.stdin.flush()
        fd = self.stdout.fileno()
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            while b"\n" not in self.buffer:
                left = deadline - time.monotonic()
                if left <= 0 or not sel.select(left):
                    raise Failed("timeout")
                chunk = os.read(fd, 1 << 20)
                if not chunk:  # killed by the kernel past its limit, or crashed
                    raise Failed("memory")
                self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        return json.loads(line)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()
        for f in (self.stdin, self.stdout):
            f.close()


_idle: list[_Child] = []
_slots = threading.BoundedSemaphore(AT_ONCE)
_lock = threading.Lock()


def convert(schema_json: str, max_bytes: int, timeout_s: float) -> dict:
    """The child's answer for one schema (see ``_worker``); Failed past ``timeout_s``
    (waiting for a free child included) or when the child dies. Blocking."""
    deadline = time.monotonic() + timeout_s
    if not _slots.acquire(timeout=timeout_s):
        raise Failed("busy")
    try:
        with _lock:
            child = _idle.pop() if _idle else None
        if child is None or child.proc.poll() is not None:
            child = _Child()
        try:
            answer = child.ask({"schema": schema_json, "max_bytes": max_bytes}, deadline)
        except (Failed, OSError, ValueError) as e:
            child.kill()
            raise e if isinstance(e, Failed) else Failed("memory") from None
        if answer.get("memory"):  # a child that ran out of memory is not trusted again
            child.kill()
        else:
            with _lock:
                _idle.append(child)
        return answer
    finally:
        _slots.release()
