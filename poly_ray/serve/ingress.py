"""Ingress: the HTTP app of poly_ray.api, over a handle to the orchestrator."""

from __future__ import annotations

import asyncio
import logging

from ray.exceptions import TaskCancelledError

from poly_ray.api import create_app
from poly_ray.config import Config
from poly_ray.tasks.runner import READY_TIMEOUT_S

from .handles import MemoryHandle, StateHandle, call, stream
from .ops import route_logs_to_serve

log = logging.getLogger(__name__)
ORCHESTRATOR = "the task orchestrator"


class OrchestratorBackend:
    """``api.Backend`` through a DeploymentHandle to the TaskOrchestrator."""

    def __init__(self, handle, memory=None, state=None):
        self._handle = handle
        self._streaming = handle.options(stream=True)
        self.memories = MemoryHandle(memory) if memory is not None else None
        self.state = StateHandle(state) if state is not None else None
        self._tasks: dict | None = None
        self._models: dict | None = None

    def stream(self, task, prompt, overrides):
        return stream(self._streaming.stream.remote(task, prompt, overrides), ORCHESTRATOR)

    def stream_target(self, target, prompt, messages, overrides):
        return stream(self._streaming.stream_target.remote(target, prompt, messages, overrides), ORCHESTRATOR)

    def stream_turn(self, task, context, prompt, overrides, history=None):
        return stream(self._streaming.stream_turn.remote(task, context, prompt, overrides, history), ORCHESTRATOR)

    async def complete(self, task, prompt, overrides):
        return await call(self._handle.complete.remote(task, prompt, overrides), ORCHESTRATOR)

    async def embed(self, model, texts):
        return await call(self._handle.embed.remote(model, texts), ORCHESTRATOR)

    async def tokenize(self, model, text):
        return await call(self._handle.tokenize.remote(model, text), ORCHESTRATOR)

    # The lists come from the config and never change while the graph runs.
    async def tasks(self):
        if self._tasks is None:
            self._tasks = await call(self._handle.tasks.remote(), ORCHESTRATOR)
        return self._tasks

    async def models(self):
        if self._models is None:
            self._models = await call(self._handle.models.remote(), ORCHESTRATOR)
        return self._models

    async def stats(self):
        return await call(self._handle.stats.remote(), ORCHESTRATOR)

    async def ready(self):
        # The orchestrator checks each model within READY_TIMEOUT_S; past twice
        # that, the orchestrator itself is not there yet.
        try:
            return await asyncio.wait_for(call(self._handle.ready.remote(), ORCHESTRATOR), 2 * READY_TIMEOUT_S)
        except Exception as e:
            log.info("readiness: %s", e or type(e).__name__)
            return {"orchestrator": False}


class Ingress:
    def __init__(self, orchestrator, config: dict, memory=None, state=None):
        route_logs_to_serve()
        self._backend = OrchestratorBackend(orchestrator, memory, state)
        self._config = Config.model_validate(config)

    def __serve_build_asgi_app__(self):
        app = create_app(self._backend, self._config)
        app.add_middleware(_CancelledIsDisconnect)
        return app


class _CancelledIsDisconnect:
    """When a client goes away, Serve cancels its request, and the app's ``receive``
    then raises TaskCancelledError where Starlette waits for a disconnect message:
    every abandoned stream was logged as an unhandled error."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        async def receive_or_disconnect():
            try:
                return await receive()
            except TaskCancelledError:
                return {"type": f"{scope['type']}.disconnect", "code": 1006}

        await self.app(scope, receive_or_disconnect, send)
