"""TaskOrchestrator: runs tasks against the model deployments."""

from __future__ import annotations

from poly_ray.config import ModelConfig, TaskConfig
from poly_ray.config.schema import SchemaLimits
from poly_ray.tasks.runner import TaskRunner

from .handles import MemoryHandle, ModelHandle
from .ops import RayMetrics, route_logs_to_serve


class TaskOrchestrator:
    def __init__(self, tasks: dict, models: dict, handles: dict, memory=None, *, log_prompts: bool,
                 schema_limits: dict):
        """``schema_limits``: the config's, which the tasks' biasers and tools are held to
        here as in the ingress (a TaskConfig carries no caps of its own)."""
        route_logs_to_serve()
        self._runner = TaskRunner(
            {name: TaskConfig.model_validate(t) for name, t in tasks.items()},
            {name: ModelConfig.model_validate(m) for name, m in models.items()},
            {name: ModelHandle(h, name) for name, h in handles.items()},
            MemoryHandle(memory) if memory is not None else None,
            sinks=(RayMetrics(),),
            log_prompts=log_prompts,
            caps=SchemaLimits.model_validate(schema_limits).caps(),
        )

    async def stream(self, task: str, prompt: str, overrides: dict):
        async for event in self._runner.stream(task, prompt, overrides):
            yield event

    async def stream_target(self, target: str, prompt, messages, overrides: dict):
        async for event in self._runner.stream_target(target, prompt, messages, overrides):
            yield event

    async def stream_turn(self, task: str, context, prompt: str, overrides: dict, history=None):
        async for event in self._runner.stream_turn(task, context, prompt, overrides, history):
            yield event

    async def complete(self, task: str, prompt: str, overrides: dict) -> dict:
        return await self._runner.complete(task, prompt, overrides)

    async def embed(self, model: str, texts: list[str]) -> list[list[float]]:
        return await self._runner.embed(model, texts)

    async def tokenize(self, model: str, text: str) -> list[dict]:
        return await self._runner.tokenize(model, text)

    async def tasks(self) -> dict:
        return await self._runner.tasks()

    async def models(self) -> dict:
        return await self._runner.models()

    async def stats(self) -> dict:
        return await self._runner.stats()

    async def ready(self) -> dict[str, bool]:
        return await self._runner.ready()
