"""Ollama's /api/pull over poly-ray's configured models.

Nothing comes from Ollama's registry: ``model`` names a configured task or model,
and pulling it fetches that model's file into this node's cache as a replica
would (a ``url`` or ``hf`` source, or ``model_path`` with a ``url``), streaming
Ollama's progress lines. A pip package or a local file has nothing to pull, and
the answer says so. Model replicas fetch their own copy on their nodes when they start.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path, PurePosixPath
from urllib.parse import urlparse

from poly_ray.config import Config, ModelConfig, parse_hf
from poly_ray.engine.sources import resolve
from poly_ray.errors import ConfigError, NotFound

PROGRESS_EVERY_S = 0.25  # at most this often a progress line, besides the last one


def model_of(config: Config, name: str) -> tuple[str, str, ModelConfig]:
    """(kind, model name, its config) of the task or model ``name``; NotFound says what may be pulled."""
    if name in config.tasks:
        model = config.tasks[name].model
        return "task", model, config.models[model]
    if name in config.models:
        return "model", name, config.models[name]
    raise NotFound(f"model '{name}' is not configured here: poly-ray serves the tasks and models of its config "
                   "and pulls nothing from Ollama's registry (add a [models.NAME] with url or hf to download one)")


def _what(model: ModelConfig) -> str:
    if model.hf:
        repo, _, filename = parse_hf(model.hf)
        return f"{repo}/{filename}"
    if model.url is None:  # lines() downloads only a model with hf or url
        raise ValueError("a model to pull has hf or url")
    return PurePosixPath(urlparse(model.url).path).name or model.url


async def lines(name: str, model: ModelConfig, cache_path: Path) -> AsyncIterator[dict]:
    """Ollama's pull progress for one model: status lines, then ``success`` or an ``error`` line."""
    yield {"status": "pulling manifest"}
    if model.package is not None:
        yield {"status": f"model '{name}' is the pip package {model.package}, installed with the server: nothing to pull"}
        yield {"status": "success"}
        return
    if model.model_path is not None and (model.url is None or model.model_path.is_file()):
        yield {"status": f"model '{name}' is the local file {model.model_path}: nothing to pull"}
        yield {"status": "success"}
        return
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()
    status, digest = f"pulling {_what(model)}", f"sha256:{model.sha256.lower()}" if model.sha256 else ""

    def progress(done: int, total: int) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, (done, total))

    work = asyncio.ensure_future(asyncio.to_thread(resolve, name, model, cache_path, progress))
    last, shown = 0.0, None
    while True:
        getter = asyncio.ensure_future(queue.get())
        await asyncio.wait({getter, work}, return_when=asyncio.FIRST_COMPLETED)
        if not getter.done():
            getter.cancel()
            break
        done, total = getter.result()
        shown = (done, total)
        if time.monotonic() - last >= PROGRESS_EVERY_S or (total and done >= total):
            last = time.monotonic()
            yield {"status": status, "digest": digest, "total": total or done, "completed": done}
            shown = None
    while not queue.empty():
        shown = queue.get_nowait()
    if shown:
        yield {"status": status, "digest": digest, "total": shown[1] or shown[0], "completed": shown[0]}
    try:
        work.result()
    except ConfigError as e:
        yield {"error": str(e)}
        return
    if model.sha256 or model.hf:
        yield {"status": "verifying sha256 digest"}  # resolve checked it before it returned
    yield {"status": "success"}
