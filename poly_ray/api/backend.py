"""What the HTTP layer needs from the graph behind it, in one place.

The ingress deployment hands in ``serve.ingress.GraphBackend`` (handles to the
orchestrator, the models, the memory and state deployments); unit tests an
in-process ``tasks.TaskRunner`` with a ``MemoryService`` and a ``StateService``.
The memory and state deployments serve those same classes, and
``serve.handles.MemoryHandle`` / ``StateHandle`` call them method by method.
"""

from __future__ import annotations

import builtins
from collections.abc import AsyncIterator
from typing import Protocol

from poly_ray.errors import Busy
from poly_ray.generation import Event
from poly_ray.tasks.turn import ModelInfo, TaskInfo, TurnRequest


class MemoryBackend(Protocol):
    """Every configured memory (``memory.service.MemoryService``). ``owner``: the caller's
    ``Principal.owner``; of the stored prompts, a caller sees its own only."""

    async def names(self) -> dict[str, dict]: ...
    async def info(self, name: str) -> dict: ...
    async def ingest(self, name: str, uploads: list, *, wait: bool = True, owner: str | None = None) -> dict: ...
    async def job(self, name: str, job_id: str) -> dict: ...
    async def recall(self, name: str, prompt: str, n: int, mode: str | None = None, *,
                     owner: str | None = None) -> list[dict]: ...
    async def remember(self, name: str, text: str, *, owner: str | None = None) -> dict: ...
    async def documents(self, name: str, *, owner: str | None = None) -> list[dict]: ...
    async def delete(self, name: str, document: str) -> dict: ...
    async def clear(self, name: str) -> dict: ...


class StateBackend(Protocol):
    """The stateful APIs' store (``state.service.StateService``): objects by owner, kind and id."""

    async def create(self, owner: str, kind: str, body: dict, *, parent: str | None = None) -> dict: ...
    async def update(self, owner: str, kind: str, oid: str, changes: dict, *,
                     only_if: tuple | list | None = None) -> dict: ...
    async def delete(self, owner: str, kind: str, oid: str) -> None: ...
    async def get(self, owner: str, kind: str, oid: str) -> dict: ...
    async def parent_of(self, owner: str, kind: str, oid: str) -> str | None: ...
    async def list(self, owner: str, kind: str, *, parent: str | None = None, limit: int = 20,
                   after: str | None = None, before: str | None = None, order: str = "desc") -> dict: ...
    async def all(self, owner: str, kind: str, *, parent: str) -> builtins.list[dict]: ...  # list: the method above


class Backend(Protocol):
    """Generation and what the models answer.

    ``stream`` yields ``Started``, then ``Chunk`` and ``ToolCallDelta`` events, then
    ``Done``; a refusal (a ``PolyError``: too long, busy, unknown target) is raised
    before ``Started``, a failure after it ends the stream with its ``PolyError``.
    """

    def stream(self, req: TurnRequest) -> AsyncIterator[Event]: ...
    async def complete(self, req: TurnRequest) -> dict: ...
    async def embed(self, model: str, texts: list[str]) -> list[list[float]]: ...
    async def tokenize(self, model: str, text: str) -> list[dict]: ...
    async def tasks(self) -> dict[str, TaskInfo]: ...
    async def models(self) -> dict[str, ModelInfo]: ...
    async def stats(self) -> dict: ...
    async def ready(self) -> dict[str, bool]: ...

    # None: no memory is configured (the memory routes answer 404) / no state store
    # (the stateful routes answer 503).
    memories: MemoryBackend | None
    state: StateBackend | None


def require_state(backend: Backend) -> StateBackend:
    """The backend's state store, or 503: the stateful routes need it."""
    if backend.state is None:
        raise Busy("the state store is not available on this server (no state deployment)")
    return backend.state
