"""API families: how each writes an error, as a body and inside a stream, and
which routes are its own.

A route belongs to the family of the router it is declared on
(``OPENAI.router()``): the exception handler asks the matched route, so a new
family is one ``Family`` value and its router, never a list of paths to keep in
step. Only a request no route matches (an unknown path) is placed by prefix.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, ClassVar, Literal

from fastapi import APIRouter, FastAPI
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel
from starlette.routing import Match
from starlette.types import Scope

from poly_ray.errors import PolyError

from . import sse
from .openapi import ref

# Error bodies, one shape per family (the OpenAPI document names them).


class PolyErrorDetail(BaseModel):
    code: str
    message: str


class PolyErrorBody(BaseModel):
    error: PolyErrorDetail


class OpenAIErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str


class OpenAIErrorBody(BaseModel):
    error: OpenAIErrorDetail


class OllamaErrorBody(BaseModel):
    error: str


class AnthropicErrorDetail(BaseModel):
    type: str
    message: str


class AnthropicErrorBody(BaseModel):
    type: Literal["error"]
    error: AnthropicErrorDetail


class Family:
    """One API family. ``body(status, code, message, param)`` is its error body (``param``: the
    request field it is about, or None); ``stream_error(err)`` the frame that ends one of its
    streams with an error."""

    def __init__(self, name: str, *, error_model: type[BaseModel], body: Callable[[int, str, str, str | None], dict],
                 stream_error: Callable[[PolyError], bytes], prefixes: tuple[str, ...] = ()):
        self.name, self.error_model, self.body = name, error_model, body
        self.stream_error, self.prefixes = stream_error, prefixes
        self.route_class = type(f"{name.title()}Route", (FamilyRoute,), {"family": self})

    def __repr__(self) -> str:
        return f"Family({self.name!r})"

    def router(self) -> APIRouter:
        """A router whose routes answer errors in this family's shape."""
        return APIRouter(route_class=self.route_class)

    def response(self, status: int, code: str, message: str, headers: dict | None = None,
                 param: str | None = None) -> JSONResponse:
        return JSONResponse(self.body(status, code, message, param), status_code=status, headers=headers)


class FamilyRoute(APIRoute):
    """A route that knows its family; its documented error statuses get the family's error body."""

    family: ClassVar[Family]

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any):
        for status, answer in ((kwargs.get("openapi_extra") or {}).get("responses") or {}).items():
            if int(status) >= 400 and "content" not in answer:
                answer["content"] = {"application/json": {"schema": ref(self.family.error_model)}}
        super().__init__(path, endpoint, **kwargs)


def _poly_body(status: int, code: str, message: str, param: str | None = None) -> dict:
    return {"error": {"code": code, "message": message}}


_OPENAI_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                 404: "not_found_error", 429: "rate_limit_error"}


def _openai_body(status: int, code: str, message: str, param: str | None = None) -> dict:
    kind = _OPENAI_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


# Anthropic's error types by status (its SDK picks the exception class by status; the type is for people).
_ANTHROPIC_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                    404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error", 500: "api_error",
                    503: "overloaded_error", 529: "overloaded_error"}


def _anthropic_body(status: int, code: str, message: str, param: str | None = None) -> dict:
    kind = _ANTHROPIC_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    return {"type": "error", "error": {"type": kind, "message": message}}


def _compact(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


POLY = Family("poly", error_model=PolyErrorBody, body=_poly_body,
              stream_error=lambda err: sse.json_event("error", err.to_body()["error"]))
# The SDKs raise on a `data:` whose object has "error" (as vLLM and llama-server send it).
OPENAI = Family("openai", error_model=OpenAIErrorBody, body=_openai_body,
                stream_error=lambda err: b"data: " + _compact(_openai_body(err.status, err.code, err.message, err.param))
                + b"\n\n",
                prefixes=("/v1/models", "/v1/completions", "/v1/chat/completions", "/v1/embeddings",
                          "/v1/responses", "/v1/conversations", "/v1/assistants", "/v1/threads"))
# Ollama's clients read {"error": "..."} as a line of the NDJSON stream too.
OLLAMA = Family("ollama", error_model=OllamaErrorBody, body=lambda status, code, message, param: {"error": message},
                stream_error=lambda err: _compact({"error": err.message}) + b"\n", prefixes=("/api/",))

# The SDK raises on an `event: error` frame whose data is the error body.
ANTHROPIC = Family("anthropic", error_model=AnthropicErrorBody, body=_anthropic_body,
                   stream_error=lambda err: sse.json_event("error", _anthropic_body(err.status, err.code, err.message)),
                   prefixes=("/v1/messages",))

FAMILIES = (POLY, OPENAI, OLLAMA, ANTHROPIC)


def attach(app: FastAPI, router: APIRouter) -> None:
    """Serve ``router``'s routes on ``app``, known by their family also to requests
    that middleware answers before routing."""
    app.include_router(router)
    if not hasattr(app.state, "family_routes"):
        app.state.family_routes = []
    app.state.family_routes += [r for r in router.routes if isinstance(r, FamilyRoute)]


def family_of(scope: Scope) -> Family:
    """The family of the route that matched, or that would match (middleware answers
    before routing), else the one whose prefix the path has; Poly's by default."""
    route = scope.get("route")
    if route is None and "app" in scope:
        routes = getattr(scope["app"].state, "family_routes", ())
        route = next((r for r in routes if r.matches(scope)[0] is not Match.NONE), None)
    if isinstance(route, FamilyRoute):
        return route.family
    path = scope.get("path", "")
    return next((f for f in FAMILIES if f.prefixes and path.startswith(f.prefixes)), POLY)
