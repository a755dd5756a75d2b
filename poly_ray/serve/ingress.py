"""Ingress: the HTTP app of poly_ray.api, over a handle to the orchestrator."""

from __future__ import annotations

from ..api import create_app
from ..config import Config
from .handles import MemoryHandle, call, stream


class OrchestratorBackend:
    """``api.Backend`` through a DeploymentHandle to the TaskOrchestrator."""

    def __init__(self, handle, memory=None):
        self._handle = handle
        self._streaming = handle.options(stream=True)
        self.memories = MemoryHandle(memory) if memory is not None else None
        self._tasks: dict | None = None
        self._models: dict | None = None

    def stream(self, task, prompt, overrides):
        return stream(self._streaming.stream.remote(task, prompt, overrides))

    def stream_target(self, target, prompt, messages, overrides):
        return stream(self._streaming.stream_target.remote(target, prompt, messages, overrides))

    def stream_turn(self, task, context, prompt, overrides, history=None):
        return stream(self._streaming.stream_turn.remote(task, context, prompt, overrides, history))

    async def complete(self, task, prompt, overrides):
        return await call(self._handle.complete.remote(task, prompt, overrides))

    async def embed(self, model, texts):
        return await call(self._handle.embed.remote(model, texts))

    async def tokenize(self, model, text):
        return await call(self._handle.tokenize.remote(model, text))

    # The lists come from the config and never change while the graph runs.
    async def tasks(self):
        if self._tasks is None:
            self._tasks = await call(self._handle.tasks.remote())
        return self._tasks

    async def models(self):
        if self._models is None:
            self._models = await call(self._handle.models.remote())
        return self._models


class Ingress:
    def __init__(self, orchestrator, config: dict, memory=None):
        self._backend = OrchestratorBackend(orchestrator, memory)
        self._config = Config.model_validate(config)

    def __serve_build_asgi_app__(self):
        return create_app(self._backend, self._config)
