"""The HTTP app: middleware, the one exception handler, and every API family's
routes registered on one FastAPI app over a ``Backend``.

No Ray import: the ingress deployment hands in a backend that talks to the
orchestrator through handles; unit tests hand in an in-process one. Errors are
shaped in one place (``error_response``): ``{"error": {"code", "message"}}`` on
Poly's routes, each client family's own shape on its routes (``family.py``).
"""

from __future__ import annotations

import logging
from urllib.parse import unquote_to_bytes

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from poly_ray.config import Config
from poly_ray.errors import BadRequest, PolyError

from . import playground
from .anthropic import routes as anthropic_routes
from .assistants import routes as assistants_routes
from .assistants.runs import Runs
from .auth import Access, Authenticator, log_refusal, loggable, token_from
from .backend import Backend
from .browser_guard import BrowserGuard
from .conversations import routes as conversations_routes
from .family import attach, family_of
from .limits import StreamLimits
from .memory import routes as memory_routes
from .ollama import routes as ollama_routes
from .openai import routes as openai_routes
from .openapi import document
from .parsing import describe, first_field
from .poly import chat_ws
from .poly import routes as poly_routes
from .poly.readiness import ReadyCache
from .responses import routes as responses_routes
from .responses import run as responses_run
from .services import Services
from .simple import routes as simple_routes
from .vectors import EmbeddingPlaces

log = logging.getLogger(__name__)

# Every family's routes; each router's family shapes its errors (family.py).
ROUTERS = (poly_routes.router, openai_routes.router, responses_routes.router, conversations_routes.router,
           assistants_routes.router, anthropic_routes.router, ollama_routes.router, simple_routes.router,
           chat_ws.router, memory_routes.router, playground.router)

def error_response(request: Request, status: int, code: str, message: str, headers=None,
                   param: str | None = None) -> JSONResponse:
    """One place that shapes errors: in the family of the route the request is for."""
    return family_of(request.scope).response(status, code, message, headers, param)


def create_app(backend: Backend, config: Config, listen_host: str | None = None,
               limits: StreamLimits | None = None) -> FastAPI:
    """``listen_host``: where the server really listens (Serve's http_options), when
    that is not the config's bind_address (``serve run`` and Serve configs decide it).
    ``limits``: shared with other ingress replicas (serve/coordinator.py); by default
    this process's own."""
    app = FastAPI(title="poly-ray", version="0.1.0")
    host = listen_host or config.host
    app.state.max_request_bytes = config.max_request_bytes
    app.state.max_upload_bytes = config.max_upload_bytes
    app.state.schema_caps = config.schema_limits.caps()
    app.state.config = config  # the bounds the routes check (config/bounds.py)
    if config.public and host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("public = true on %s: anyone who reaches the port may generate, and read and change memories",
                    host)
    if config.allowed_origins:
        app.add_middleware(
            _CORS,
            allow_origins=config.allowed_origins,
            allow_methods=["GET", "POST", "PUT", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "X-Filename", "X-Api-Key", "Anthropic-Version",
                           "Anthropic-Beta"],
        )
    app.add_middleware(_RefuseInvalidUTF8)
    app.add_middleware(BrowserGuard, bind_host=host, allowed_hosts=config.allowed_hosts,
                       allowed_origins=config.allowed_origins, error=error_response)
    limits = limits or StreamLimits.local(config.max_concurrent, config.max_streams_per_credential)
    authenticator = Authenticator.from_config(config)
    access = Access(authenticator, backend, config.trusted_proxies)
    runs = Runs(backend, limits, config.schema_limits.caps(), max_memories=config.max_file_search_memories,
                max_query_chars=config.max_recall_chars)
    app.state.services = Services(backend, access, limits, config, readiness=ReadyCache(backend),
                                  background=responses_run.Background(), runs=runs,
                                  embedding=EmbeddingPlaces(config.max_embeddings_per_credential))
    if not config.public:
        app.add_middleware(_DocsNeedCredentials, auth=authenticator)
    app.add_middleware(_NoSniff)  # outermost: every answer, refusals included

    @app.exception_handler(PolyError)
    async def _poly_error(request: Request, err: PolyError):
        log_refusal(err, request.method, request.url.path)
        return error_response(request, err.status, err.code, err.message, err.headers, err.param)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, err: StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(err.status_code, "http_error")
        return error_response(request, err.status_code, code, str(err.detail), err.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, err: RequestValidationError):
        return error_response(request, 400, BadRequest.code, describe(err.errors()), param=first_field(err.errors()))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, err: Exception):
        log.exception("unhandled error on %s", loggable(request.url.path))
        return error_response(request, 500, "internal_error", "internal server error")

    for router in ROUTERS:
        attach(app, router)
    playground.mount(app)

    def openapi() -> dict:
        if app.openapi_schema is None:
            app.openapi_schema = document(app, list(config.tasks), list(config.models), list(config.memories))
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented way to finish the schema
    return app


class _CORS(CORSMiddleware):
    """Starlette's CORS, with a refused preflight answered in the route's JSON error shape."""

    def preflight_response(self, request_headers):
        response = super().preflight_response(request_headers)
        if response.status_code == 200:
            return response
        # The path is not passed here; the shape is Poly's (browsers do not show it anyway).
        message = f"{bytes(response.body).decode()} (allowed_origins: {', '.join(self.allow_origins)})"
        body = {"error": {"code": "cors_refused", "message": message}}
        headers = {k: v for k, v in response.headers.items() if k.lower() != "content-length"}
        return JSONResponse(body, status_code=response.status_code, headers=headers)


class _DocsNeedCredentials:
    """On a server that is not public, /openapi.json and /docs (which name every task,
    model and memory) answer only callers with valid credentials."""

    PATHS = ("/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc")

    def __init__(self, app, auth: Authenticator):
        self.app, self.auth = app, auth

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["path"] in self.PATHS:
            request = Request(scope)
            try:
                self.auth.authenticate(token_from(request.headers.get("authorization"),
                                                  request.query_params.get("api_key")))
            except PolyError as err:
                log_refusal(err, request.method, request.url.path)
                await error_response(request, err.status, err.code, err.message, err.headers, err.param)(scope, receive, send)
                return
        await self.app(scope, receive, send)


class _NoSniff:
    """``X-Content-Type-Options: nosniff`` on every HTTP answer: a browser never reads an
    answer (model text in JSON or plain text) as HTML or script because it looks like one."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def sending(message):
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                if not any(k.lower() == b"x-content-type-options" for k, _ in headers):
                    headers.append((b"x-content-type-options", b"nosniff"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, sending)


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
