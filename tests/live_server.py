"""A real server for the clients' tests: the ASGI app over the real Gemma engine
and a real memory (Qdrant Edge on disk, embedded by the same model), served by
uvicorn on a loopback port in a thread. Everything but Ray, which the clients
cannot tell apart (they speak HTTP and WebSocket)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from pathlib import Path

import uvicorn

from poly_ray import config
from poly_ray.api import create_app
from poly_ray.engine.llama_engine import Engine
from poly_ray.memory.memory import Memory
from poly_ray.memory.service import MemoryService
from poly_ray.memory.vectorstore import EdgeStore
from poly_ray.tasks.runner import TaskRunner

KEY = "playground-key-1"
JWT_SECRET = "s" * 40
VERDICT = {
    "type": "object",
    "properties": {"answer": {"enum": ["yes", "no"]}, "sure": {"type": "boolean"}},
    "required": ["answer", "sure"],
    "additionalProperties": False,
}


class EngineClient:
    """What serve/model.py's LlamaModel does for the orchestrator, minus Ray."""

    def __init__(self, engine: Engine):
        self.engine = engine

    async def generate(self, request):
        async for event in self.engine.generate(request):
            yield event

    async def embed(self, texts):
        return await asyncio.to_thread(self.engine.embed, texts)

    async def tokenize(self, text):
        return [{"id": t, "text": self.engine.detokenize([t])} for t in self.engine.tokenize(text)]

    async def count_tokens(self, texts):
        return sum(len(self.engine.tokenize(t)) for t in texts)

    async def chat_template(self):
        return self.engine.chat_template()

    async def stats(self):
        return self.engine.stats()


def real_app(gemma_path: Path, store: Path):
    cfg = config.validate(
        {
            "allowed_keys": [KEY],
            "jwt_private_key": {"symmetric": JWT_SECRET},
            "models": {"gemma": {"model_path": str(gemma_path), "context_size": 1024, "slots": 2}},
            "memories": {"notes": {"store": {"file": {"path": str(store)}}, "dimensions": 640,
                                   "embedding_model": "gemma", "chunk_max_tokens": 48}},
            "tasks": {
                "story": {"model": "gemma", "max_tokens": 400, "seed": 7},
                "chat": {"model": "gemma", "prelude": "A conversation between a user and a helpful assistant.\n",
                         "prefix": "User: ", "postfix": "\nAssistant:", "stop_sequences": ["User:", "\nUser"], "max_tokens": 60},
                "verdict": {"model": "gemma", "prefix": "Question: ", "postfix": "\nAnswer:", "max_tokens": 24,
                            "biaser": {"json_schema": VERDICT}},
            },
        },
        env={},
    )
    engine = Engine(gemma_path, context_size=1024, slots=2, threads=2, flush_interval=0.05, name="gemma")
    client = EngineClient(engine)
    memory = Memory("notes", cfg.memories["notes"], store=EdgeStore("notes", store, 640), embed=client.embed,
                    count=lambda text: len(engine.tokenize(text)))
    app = create_app(TaskRunner(cfg.tasks, cfg.models, {"gemma": client}, MemoryService({"notes": memory})), cfg)
    return app, engine, memory


@contextlib.contextmanager
def serving(app):
    """The app on a free loopback port, in a thread of its own; yields its base URL."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        threading.Event().wait(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
