"""What the HTTP layer needs from the graph behind it: the ingress deployment
hands in handles to the orchestrator, unit tests an in-process ``TaskRunner``."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any, Protocol

from poly_ray.generation import Event


class Backend(Protocol):
    """What the HTTP layer needs from the graph behind it."""

    def stream(self, task: str, prompt: str, overrides: dict) -> AsyncGenerator[Event, None]: ...
    def stream_target(
        self, target: str, prompt: str | None, messages: list[tuple[str, str]] | None, overrides: dict
    ) -> AsyncGenerator[Event, None]: ...
    def stream_turn(
        self,
        task: str,
        context: tuple[int, ...] | None,
        prompt: str,
        overrides: dict,
        history: list[tuple[str, str]] | None = None,
    ) -> AsyncGenerator[Event, None]: ...
    async def complete(self, task: str, prompt: str, overrides: dict) -> dict: ...
    async def embed(self, model: str, texts: list[str]) -> list[list[float]]: ...
    async def tokenize(self, model: str, text: str) -> list[dict]: ...
    async def tasks(self) -> dict[str, dict]: ...
    async def models(self) -> dict[str, dict]: ...
    async def stats(self) -> dict: ...
    async def ready(self) -> dict[str, bool]: ...

    # With memories configured: an object with the async methods of memory.service.MemoryService.
    memories: Any
    # The stateful APIs' store: an object with the async methods of state.service.StateService
    # (the state deployment's handle, or a StateService in-process); None: those routes answer 503.
    state: Any
