"""Ingress: the HTTP app of poly_ray.api, over handles to the orchestrator and the models.

A generation whose task needs no memory (recall or stored prompts) runs its
task here, on a TaskRunner of the ingress's own that calls the model
deployment directly: prompt assembly, tools and the bias-prompt flow are a
few microseconds of Python, while one more hop costs every streamed message
a pickling and a Ray call in a process that competes with the model's decode
threads for the CPU. Tasks with a memory go through the orchestrator, which
owns the recall and storing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator
from typing import Any

from ray.exceptions import TaskCancelledError

from poly_ray.api import create_app
from poly_ray.api.limits import StreamLimits
from poly_ray.config import Config
from poly_ray.generation import Event
from poly_ray.tasks.runner import READY_TIMEOUT_S, TaskRunner
from poly_ray.tasks.turn import ModelInfo, TaskInfo, TurnRequest

from .coordinator import COORDINATOR, Reporter, SharedLedger, merge_tallies
from .handles import MemoryHandle, ModelHandle, StateHandle, call, stream
from .ops import RayMetrics, route_logs_to_serve

log = logging.getLogger(__name__)
ORCHESTRATOR = "the task orchestrator"


class GraphBackend:
    """``api.Backend`` through DeploymentHandles: to the models directly for tasks
    without a memory, to the TaskOrchestrator for the others."""

    def __init__(self, handle, coordinator, memory=None, state=None, config: Config | None = None,
                 models: dict | None = None):
        """``coordinator``: where every replica's figures are (/v1/stats); this replica's
        own task counts are reported there and added live."""
        self._handle = handle
        self._coordinator = coordinator
        self._reporter: Reporter | None = None
        self._streaming = handle.options(stream=True)
        # The config's memories: a name outside them is 404 without waiting for the deployment.
        configured = {n: {"embedding_model": m.embedding_model} for n, m in config.memories.items()} if config else None
        self.memories = MemoryHandle(memory, configured) if memory is not None else None
        self.state = StateHandle(state) if state is not None else None
        self._tasks: dict[str, TaskInfo] | None = None
        self._models: dict[str, ModelInfo] | None = None
        self._direct: TaskRunner | None = None
        self._with_memory: set[str] = set()
        if config is not None and models:
            self._direct = TaskRunner(
                config.tasks, config.models, {name: ModelHandle(h, name, config.models[name].cache_affinity)
                                                  for name, h in models.items()},
                sinks=(RayMetrics(),), log_prompts=config.log_prompts, caps=config.schema_limits.caps(),
            )
            self._with_memory = {name for name, t in config.tasks.items() if t.memorization is not None}
            self._reporter = Reporter(coordinator, "tasks", "runner", self._direct.tally.snapshot)

    def _runs_here(self, req: TurnRequest) -> TaskRunner | None:
        """The ingress's own runner where it runs ``req`` (a task without memory), else None."""
        return self._direct if req.target not in self._with_memory else None

    def stream(self, req: TurnRequest) -> AsyncGenerator[Event, None]:
        if (direct := self._runs_here(req)) is not None:
            return direct.stream(req)
        return stream(self._streaming.stream.remote(req), ORCHESTRATOR)

    async def complete(self, req: TurnRequest) -> dict:
        if (direct := self._runs_here(req)) is not None:
            return await direct.complete(req)
        return await call(self._handle.complete.remote(req), ORCHESTRATOR)

    async def embed(self, model: str, texts: list[str]) -> list[list[float]]:
        return await call(self._handle.embed.remote(model, texts), ORCHESTRATOR)

    async def tokenize(self, model: str, text: str) -> list[dict]:
        return await call(self._handle.tokenize.remote(model, text), ORCHESTRATOR)

    async def count_tokens(self, model: str, texts: list[str]) -> int:
        return await call(self._handle.count_tokens.remote(model, texts), ORCHESTRATOR)

    # The lists come from the config and never change while the graph runs.
    async def tasks(self) -> dict[str, TaskInfo]:
        if self._tasks is None:
            self._tasks = await call(self._handle.tasks.remote(), ORCHESTRATOR)
        return self._tasks

    async def models(self) -> dict[str, ModelInfo]:
        if self._models is None:
            self._models = await call(self._handle.models.remote(), ORCHESTRATOR)
        return self._models

    async def stats(self) -> dict:
        # Every replica's figures, as reported within REPORT_S; this replica's own counts live.
        exclude = self._reporter.reporter if self._reporter is not None else None
        models, tasks = await asyncio.gather(call(self._coordinator.models.remote(), COORDINATOR),
                                             call(self._coordinator.tasks.remote(exclude), COORDINATOR))
        if self._direct is not None:
            tasks = merge_tallies(tasks, self._direct.tally.snapshot())
        return {"tasks": tasks, "models": {name: models.get(name) for name in (await self.models())}}

    async def ready(self) -> dict[str, bool]:
        # The orchestrator checks each model within READY_TIMEOUT_S; past twice
        # that, the orchestrator itself is not there yet.
        try:
            return await asyncio.wait_for(call(self._handle.ready.remote(), ORCHESTRATOR), 2 * READY_TIMEOUT_S)
        except Exception as e:
            log.info("readiness: %s", e or type(e).__name__)
            return {"orchestrator": False}


def serve_listen_host() -> str | None:
    """The host Serve's proxies listen on (its http_options: `serve run`'s flag or the
    Serve config decide it, not the config's bind_address); None when it cannot be had."""
    import concurrent.futures

    import ray
    from ray.serve._private.constants import SERVE_CONTROLLER_NAME, SERVE_NAMESPACE

    try:
        controller = ray.get_actor(SERVE_CONTROLLER_NAME, namespace=SERVE_NAMESPACE)
        # On a thread: a replica's constructor runs on its event loop, where Ray frowns on ray.get.
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            # Serve's HTTPOptions (ray.get's overloads cannot say which object a call returns).
            http: concurrent.futures.Future[Any] = pool.submit(ray.get, controller.get_http_config.remote(), timeout=30)
            return http.result().host
    except Exception as e:
        log.warning("cannot ask Serve where it listens (%s); using bind_address", e)
        return None


class Ingress:
    def __init__(self, orchestrator, coordinator, config: dict, memory=None, state=None, models: dict | None = None):
        route_logs_to_serve()
        self._config = Config.model_validate(config)
        self._backend = GraphBackend(orchestrator, coordinator, memory, state, self._config, models)
        # Several ingress replicas count the limits in the coordinator's one book.
        self._limits = None
        if self._config.ingress.most > 1:
            self._limits = StreamLimits(SharedLedger(coordinator))
        # The trusted Host check and the public warning follow where the proxies really listen.
        self._listen_host = serve_listen_host()

    def __serve_build_asgi_app__(self):
        app = create_app(self._backend, self._config, listen_host=self._listen_host, limits=self._limits)
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
