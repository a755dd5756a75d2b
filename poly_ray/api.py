"""The HTTP API: Poly's native routes over a ``Backend``, plus the OpenAI,
Ollama, simple and WebSocket routers registered on the same app.

No Ray import: the ingress deployment hands in a backend that talks to the
orchestrator through handles; unit tests hand in an in-process one. Errors are
shaped in one place (``error_response``): ``{"error": {"code", "message"}}`` on
Poly's routes, each client family's own shape on its routes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any, Protocol
from urllib.parse import unquote_to_bytes

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from . import chat_ws, memory_api, ollama_api, openai_api, simple_api, sse
from .auth import Authenticator, log_refusal
from .httputil import Access, GenerationStream, Slots, describe, parse_params
from .config import Config
from .errors import BadRequest, PolyError
from .generation import Chunk, Done, Event
from .openapi import GENERATES, PLAIN, SSE, WITH_BODY, doc, document, ref
from .protocol import (CompletionParams, Completion, Embedding, EmbeddingBody, Embeddings, ModelList, PromptBody,
                       Readiness, Stats, Status, TaskList, Tokenization)

log = logging.getLogger(__name__)

KEEP_ALIVE_S = 10.0


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

    # With memories configured: an object with the async methods of memories.Memories.
    memories: Any


def error_response(request: Request, status: int, code: str, message: str, headers=None) -> JSONResponse:
    """One place that shapes errors: OpenAI's on its routes, Poly's everywhere else."""
    if openai_api.is_openai_path(request.url.path):
        body = openai_api.error_body(status, code, message)
    elif ollama_api.is_ollama_path(request.url.path):
        body = {"error": message}
    else:
        body = {"error": {"code": code, "message": message}}
    return JSONResponse(body, status_code=status, headers=headers)


def create_app(backend: Backend, config: Config) -> FastAPI:
    app = FastAPI(title="poly-ray", version="0.1.0")
    app.state.max_request_bytes = config.max_request_bytes
    app.state.max_upload_bytes = config.max_upload_bytes
    if config.public and config.host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("public = true on %s: anyone who reaches the port may generate, and read and change memories",
                    config.bind_address)
    if config.allowed_origins:
        app.add_middleware(
            _CORS,
            allow_origins=config.allowed_origins,
            allow_methods=["GET", "POST", "PUT", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "X-Filename"],
        )
    app.add_middleware(_RefuseInvalidUTF8)
    slots = Slots(config.max_concurrent, config.max_streams_per_credential)
    access = Access(Authenticator.from_config(config), backend)

    @app.exception_handler(PolyError)
    async def _poly_error(request: Request, err: PolyError):
        log_refusal(err, request.method, request.url.path)
        return error_response(request, err.status, err.code, err.message, err.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, err: StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(err.status_code, "http_error")
        return error_response(request, err.status_code, code, str(err.detail), err.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, err: RequestValidationError):
        return error_response(request, 400, BadRequest.code, describe(err.errors()))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, err: Exception):
        log.exception("unhandled error on %s", request.url.path)
        return error_response(request, 500, "internal_error", "internal server error")

    openai_api.register(app, backend, access, slots)
    ollama_api.register(app, backend, access, slots)
    simple_api.register(app, backend, access, slots, config.default_target)
    chat_ws.register(app, backend, access, slots)
    memory_api.register(app, getattr(backend, "memories", None), access)

    def openapi() -> dict:
        if app.openapi_schema is None:
            app.openapi_schema = document(app, list(config.tasks), list(config.models), list(config.memories))
        return app.openapi_schema

    app.openapi = openapi

    @app.get("/status", openapi_extra=doc(ok=Status, errors=PLAIN))
    async def status():
        return {"status": "ok"}

    @app.get("/ready", openapi_extra=_not_ready(doc(ok=Readiness, errors=PLAIN)))
    async def ready():
        """Readiness (``/status`` is liveness): 503 until every model, and the memories, answer."""
        waiting = [name for name, ok in (await backend.ready()).items() if not ok]
        if waiting:
            return JSONResponse({"ready": False, "waiting": waiting}, status_code=503, headers={"Retry-After": "5"})
        return {"ready": True, "waiting": []}

    @app.get("/v1/stats", openapi_extra=doc(ok=Stats, errors=(400, 401, 503)))
    async def stats(request: Request):
        """Poly's stats: counts per task and each model's engine stats, of what the caller may use."""
        who = access.principal(request)
        stats, tasks = await backend.stats(), await access.names("task")
        return {
            # A model used bare (OpenAI, Ollama, simple APIs) counts under its own name.
            "tasks": {t: s for t, s in stats["tasks"].items() if who.allows("task" if t in tasks else "model", t)},
            "models": {m: s for m, s in stats["models"].items() if who.allows("model", m)},
        }

    @app.get("/v1/task", openapi_extra=doc(ok=TaskList))
    async def list_tasks(request: Request):
        who = access.principal(request)
        return {"tasks": [t for t in await access.names("task") if who.allows("task", t)]}

    @app.get("/v1/model", openapi_extra=doc(ok=ModelList))
    async def list_models(request: Request):
        who = access.principal(request)
        return {"models": [m for m in await access.names("model") if who.allows("model", m)]}

    @app.get("/v1/task/{task}/completion", name="completion_get",
             openapi_extra=doc(query=CompletionParams, ok=Completion, errors=GENERATES))
    @app.post("/v1/task/{task}/completion", openapi_extra=doc(body=CompletionParams, ok=Completion, errors=GENERATES))
    async def completion(task: str, request: Request):
        who = await access.authorize(request, "task", task)
        params = await parse_params(request, CompletionParams)
        async with slots.held(who.credential):
            return await backend.complete(task, params.prompt, params.overrides())

    @app.get("/v1/task/{task}/live", name="live_get", openapi_extra=doc(query=CompletionParams, streams=SSE, errors=GENERATES))
    @app.post("/v1/task/{task}/live", openapi_extra=doc(body=CompletionParams, streams=SSE, errors=GENERATES))
    async def live(task: str, request: Request):
        who = await access.authorize(request, "task", task)
        params = await parse_params(request, CompletionParams)
        events = backend.stream(task, params.prompt, params.overrides())
        first, release = await slots.accepted(events, who.credential)
        return GenerationStream(
            _sse(first, events, release),
            events=events,
            release=release,
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    @app.post("/v1/model/{model}/embedding", openapi_extra=doc(
        body=EmbeddingBody, ok={"anyOf": [ref(Embedding), ref(Embeddings)]}, errors=WITH_BODY))
    async def embedding(model: str, request: Request):
        await access.authorize(request, "model", model)
        body = await parse_params(request, EmbeddingBody)
        texts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
        vectors = await backend.embed(model, texts)
        if isinstance(body.prompt, str):
            return {"embedding": vectors[0]}
        return {"embeddings": vectors}

    @app.post("/v1/model/{model}/tokenization", openapi_extra=doc(body=PromptBody, ok=Tokenization, errors=WITH_BODY))
    async def tokenization(model: str, request: Request):
        await access.authorize(request, "model", model)
        body = await parse_params(request, PromptBody)
        return {"tokens": await backend.tokenize(model, body.prompt)}

    return app


def _not_ready(extra: dict) -> dict:
    extra["responses"]["503"] = {"description": "Not ready: what is still loading",
                                 "content": {"application/json": {"schema": ref(Readiness)}}}
    return extra


async def _sse(first: Event, events: AsyncGenerator[Event, None], on_close) -> AsyncIterator[bytes]:
    """Frame events as SSE, with keep-alive comments while the model is quiet.

    A separate task pulls from ``events``; when the client goes away this body is
    cancelled, and cancelling that task closes the stream down to the model.
    """
    queue: asyncio.Queue = asyncio.Queue()
    pump = asyncio.create_task(_pump(events, queue))
    ev: Any = first
    try:
        while True:
            try:
                ev = await asyncio.wait_for(queue.get(), KEEP_ALIVE_S)
            except TimeoutError:
                yield sse.KEEP_ALIVE
                continue
            if isinstance(ev, Chunk) and ev.text:
                yield sse.event(ev.text)
            elif isinstance(ev, Done):
                yield sse.json_event("done", ev.to_dict())
                return
            elif isinstance(ev, PolyError):
                yield sse.json_event("error", ev.to_body()["error"])
                return
            elif isinstance(ev, BaseException):
                log.error("stream failed: %r", ev)
                yield sse.json_event("error", {"code": "internal_error", "message": "internal server error"})
                return
            elif ev is _END:
                yield sse.json_event("error", {"code": "model_error", "message": "the stream ended before it was done"})
                return
    finally:
        pump.cancel()
        on_close()


_END = object()


async def _pump(events: AsyncGenerator[Event, None], queue: asyncio.Queue) -> None:
    try:
        async for ev in events:
            queue.put_nowait(ev)
        queue.put_nowait(_END)
    except asyncio.CancelledError:
        raise
    except Exception as e:
        queue.put_nowait(e)
    finally:
        await events.aclose()


class _CORS(CORSMiddleware):
    """Starlette's CORS, with a refused preflight answered in the route's JSON error shape."""

    def preflight_response(self, request_headers):
        response = super().preflight_response(request_headers)
        if response.status_code == 200:
            return response
        # The path is not passed here; the shape is Poly's (browsers do not show it anyway).
        message = f"{response.body.decode()} (allowed_origins: {', '.join(self.allow_origins)})"
        body = {"error": {"code": "cors_refused", "message": message}}
        headers = {k: v for k, v in response.headers.items() if k.lower() != "content-length"}
        return JSONResponse(body, status_code=response.status_code, headers=headers)


class _RefuseInvalidUTF8:
    """A path or query string whose percent-escapes are not UTF-8 gets a 400 (Starlette
    would quietly replace the bytes, so a parameter would not be what was sent)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] in ("http", "websocket") and not _utf8(scope):
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1007})  # invalid data
                return
            message = "the path or query string is not valid UTF-8 once percent-decoded"
            await error_response(Request(scope), 400, BadRequest.code, message)(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _utf8(scope) -> bool:
    try:
        unquote_to_bytes(scope.get("raw_path") or b"").decode()
        unquote_to_bytes(scope.get("query_string") or b"").decode()
        return True
    except UnicodeDecodeError:
        return False
