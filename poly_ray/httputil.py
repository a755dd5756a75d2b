"""Pieces the HTTP routers share: who is calling, the concurrency bound, request parsing."""

from __future__ import annotations

import contextlib
import json
from collections import Counter
from collections.abc import Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

from fastapi import Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ValidationError

from .auth import Authenticator, Principal, token_from
from .errors import BadRequest, Busy, NotFound, PayloadTooLarge, TooManyStreams


class Access:
    """Authentication and authorization of requests against the graph's names."""

    def __init__(self, auth: Authenticator, backend):
        self._auth = auth
        self._backend = backend

    def principal(self, request: Request) -> Principal:
        """The caller; an anonymous one is counted against per-credential limits by its address."""
        who = self._auth.authenticate(
            token_from(request.headers.get("authorization"), request.query_params.get("api_key"))
        )
        if who.credential is None:
            host = request.client.host if request.client else "unknown"
            who = replace(who, credential=f"anonymous@{host}")
        return who

    async def names(self, kind: str) -> dict:
        if kind == "memory":
            memories = getattr(self._backend, "memories", None)
            return await memories.names() if memories is not None else {}
        return await (self._backend.tasks() if kind == "task" else self._backend.models())

    async def authorize(self, request: Request, kind: str, name: str) -> Principal:
        """The caller, who may use the existing task or model ``name`` (else 401/404/403)."""
        who = self.principal(request)
        if name not in await self.names(kind):
            raise NotFound(f"{kind} '{name}' does not exist")
        who.check(kind, name)
        return who


class Slots:
    """Bounds on generations in flight through one ingress replica: ``max_concurrent``
    in all (503), ``max_streams_per_credential`` per caller (429)."""

    def __init__(self, limit: int, per_credential: int):
        self.limit, self.used = limit, 0
        self.per_credential = per_credential
        self.by_credential: Counter[str] = Counter()

    def take(self, credential: str | None, *, generation: bool = True) -> Callable[[], None]:
        """A place for a generation (unless ``generation`` is false: a WebSocket session
        holds a place of its credential while open), counted against ``credential``
        unless it is None. Returns the place's release, which may be called again."""
        if credential is not None and self.by_credential[credential] >= self.per_credential:
            raise TooManyStreams(
                f"these credentials have {self.by_credential[credential]} streams open;"
                f" the limit (max_streams_per_credential) is {self.per_credential}"
            )
        if generation and self.used >= self.limit:
            raise Busy(f"the server is at its limit of {self.limit} concurrent generations (max_concurrent)", retry_after=1)
        self.used += generation
        if credential is not None:
            self.by_credential[credential] += 1
        released = False

        def release() -> None:
            nonlocal released
            if released:
                return
            released = True
            self.used -= generation
            if credential is not None:
                self.by_credential[credential] -= 1
                if not self.by_credential[credential]:
                    del self.by_credential[credential]

        return release

    async def accepted(self, events, credential: str | None) -> tuple[Any, Callable[[], None]]:
        """Take a place and wait until the model accepts the prompt (its first event),
        so that a refusal (too long, busy) is an HTTP status and not an event in a
        200 stream. Returns the first event and the release, which the caller calls
        when the stream ends."""
        release = self.take(credential)
        try:
            return await anext(events), release
        except BaseException:
            release()
            raise

    @asynccontextmanager
    async def held(self, credential: str | None):
        release = self.take(credential)
        try:
            yield
        finally:
            release()


class GenerationStream(StreamingResponse):
    """A streamed generation that gives back its place and stops its model stream
    however the response ends: also when the client is gone before the body starts,
    when the body's own ``finally`` never runs."""

    def __init__(self, content, *, events, release: Callable[[], None], **kwargs):
        super().__init__(content, **kwargs)
        self._events, self._release = events, release

    async def __call__(self, scope, receive, send):
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._release()
            with contextlib.suppress(RuntimeError):  # the body is still closing it
                await self._events.aclose()


async def parse_params(request: Request, model: type[BaseModel]) -> Any:
    """A request's parameters: the JSON body of a POST, or the query string of a GET."""
    if request.method == "GET":
        data: dict[str, Any] = {}
        for key, value in request.query_params.multi_items():
            if key == "api_key":
                continue
            if key == "stop":
                data.setdefault("stop", []).append(value)
            else:
                data[key] = value
    else:
        data = loads_json(await read_body(request), "the request body")
        if not isinstance(data, dict):
            raise BadRequest("the request body must be a JSON object")
    try:
        return model.model_validate(data, strict=False)
    except ValidationError as e:
        raise BadRequest(describe(e.errors())) from None


def loads_json(raw: str | bytes, what: str) -> Any:
    """Strict JSON: UTF-8, and no NaN or Infinity (Python's json accepts them; JSON does not)."""

    def refuse(constant: str):
        raise BadRequest(f"{what} is not valid JSON: {constant} is not a JSON value")

    try:
        return json.loads(raw.decode() if isinstance(raw, bytes) else raw, parse_constant=refuse)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BadRequest(f"{what} is not valid JSON: {e}") from None


async def read_body(request: Request, limit_key: str = "max_request_bytes") -> bytes:
    """The body, refused with 413 as soon as it passes the server's limit (never read whole first)."""
    limit = getattr(request.app.state, limit_key)
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"the request body is {declared} bytes; the limit ({limit_key}) is {limit}")
    parts, size = [], 0
    async for part in request.stream():
        size += len(part)
        if size > limit:
            raise PayloadTooLarge(f"the request body is over the limit ({limit_key}) of {limit} bytes")
        parts.append(part)
    return b"".join(parts)


def describe(errors: list[dict]) -> str:
    parts = []
    for err in errors:
        loc = ".".join(str(p) for p in err["loc"] if p not in ("body", "query", "path"))
        msg = "unknown field" if err["type"] == "extra_forbidden" else err["msg"]
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(parts)
