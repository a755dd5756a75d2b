"""What every route reaches through its request: the collaborators ``create_app``
builds once and puts on ``app.state`` (vLLM's pattern), so the routers are plain
module-level values and a handler names only what it uses."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from pydantic import BaseModel
from starlette.requests import HTTPConnection, Request

from poly_ray.config import Config

from .auth import Access, Principal, check_target
from .backend import Backend, MemoryBackend, StateBackend, require_state
from .limits import StreamLimits
from .parsing import parse_params
from .vectors import EmbeddingPlaces, admitted

if TYPE_CHECKING:
    from .assistants.runs import Runs
    from .poly.readiness import ReadyCache
    from .responses.run import Background


B = TypeVar("B", bound=BaseModel)


@dataclass(frozen=True)
class Services:
    backend: Backend
    access: Access
    limits: StreamLimits
    config: Config
    # What this ingress replica keeps between requests: /ready's shared answer, and the
    # Responses and Assistants runs going on in its background.
    readiness: ReadyCache
    background: Background
    runs: Runs
    embedding: EmbeddingPlaces

    async def embed(self, who: Principal, model: str, texts: list[str]) -> list[list[float]]:
        """The texts' vectors, within the request caps and the caller's embedding places."""
        with self.embedding.place(who.credential):
            return await self.backend.embed(model, admitted(self.config, model, texts))

    @property
    def memories(self) -> MemoryBackend | None:
        return self.backend.memories


def services(conn: HTTPConnection) -> Services:
    """The app's services, for a request or a WebSocket."""
    return conn.app.state.services


def stateful(request: HTTPConnection) -> tuple[StateBackend, Principal]:
    """What a stateful route (Responses, Conversations, Assistants) starts with: the
    store (503 without one) and the caller, whose ``owner`` its objects are (401 first)."""
    svc = services(request)
    who = svc.access.principal(request)
    return require_state(svc.backend), who


async def generation(request: Request, body_model: type[B]) -> tuple[Services, Principal, B]:
    """What an OpenAI-style generation route starts with: the caller (401 first), the body,
    and its ``model``: a task or a model the caller may use (else 404 or 403)."""
    svc = services(request)
    who = svc.access.principal(request)
    body = await parse_params(request, body_model)
    await check_target(svc.backend, who, body.model)
    return svc, who, body

