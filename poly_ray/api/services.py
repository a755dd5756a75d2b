"""What every route reaches through its request: the collaborators ``create_app``
builds once and puts on ``app.state`` (vLLM's pattern), so the routers are plain
module-level values and a handler names only what it uses."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from starlette.requests import HTTPConnection

from poly_ray.config import Config

from .auth import Access
from .backend import Backend, MemoryBackend
from .limits import StreamLimits

if TYPE_CHECKING:
    from .assistants.runs import Runs
    from .poly.readiness import ReadyCache
    from .responses.run import Background


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

    @property
    def memories(self) -> MemoryBackend | None:
        return self.backend.memories


def services(conn: HTTPConnection) -> Services:
    """The app's services, for a request or a WebSocket."""
    return conn.app.state.services
