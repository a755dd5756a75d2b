"""What ``/stream`` runs and keeps, as the Rust llm HTTP server did.

That server had no tasks: a request completes its raw prompt on the model, up to the
model's context. So ``/stream`` runs the default model bare (``default_task``'s model,
or the default model), unless the config's ``stream_task`` opts into a task.

Its ``cache`` id saved the prompt for ``--restore-prompt`` to load in a later run. Here
a request with a cache id (not 0, which means no caching) keeps its prompt state in
the durable KV snapshots, and writes its prompt, as plain UTF-8 text, to
``state_dir/prompts/<owner>/<id>.txt``; the response's ``X-Poly-Prompt-File`` header
names that file, and ``poly-ray run -R FILE`` restores it (docs/api/simple.md). Each
credential keeps its 64 most recently saved prompts.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from pathlib import Path

from poly_ray.config import Config
from poly_ray.errors import NotFound

PROMPT_FILE_HEADER = "X-Poly-Prompt-File"
PROMPTS_PER_OWNER = 64  # saved prompts kept per credential, the least recently saved removed first
_PLAIN_ID = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,63}")


def stream_target(config: Config) -> tuple[str, str]:
    """("task", stream_task), else ("model", the default model)."""
    if config.stream_task is not None:
        return "task", config.stream_task
    if config.default_target is None:
        raise NotFound("no task or model is configured")
    kind, name = config.default_target
    return "model", config.tasks[name].model if kind == "task" else name


def prompt_file(state_dir: Path, owner: str, cache: int | str) -> Path:
    """Where a cache id's prompt is saved: one folder per credential (its name hashed:
    an owner is a key id or a token's subject, not a file name), the id as the file's
    name where it is a plain one."""
    folder = hashlib.sha256(owner.encode()).hexdigest()[:16]
    name = str(cache) if _PLAIN_ID.fullmatch(str(cache)) else hashlib.sha256(str(cache).encode()).hexdigest()[:32]
    return state_dir.expanduser() / "prompts" / folder / f"{name}.txt"


async def save_prompt(state_dir: Path, owner: str, cache: int | str, prompt: str) -> Path:
    """Write the prompt of a cache id (off the event loop; a temp file renamed into place)."""
    path = prompt_file(state_dir, owner, cache)

    def write() -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(prompt, encoding="utf-8")
        tmp.replace(path)
        # A budget, as the KV snapshots have one: a caller's ids cannot fill the disk.
        saved = sorted(path.parent.glob("*.txt"), key=lambda p: p.stat().st_mtime, reverse=True)
        for old in saved[PROMPTS_PER_OWNER:]:
            old.unlink(missing_ok=True)

    await asyncio.to_thread(write)
    return path
