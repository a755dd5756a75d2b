"""Pieces the HTTP routers share: who is calling, the concurrency bound, request parsing."""

from __future__ import annotations

import json
from typing import Any

from fastapi import Request
from pydantic import BaseModel, ValidationError

from .auth import Authenticator, Principal, token_from
from .errors import BadRequest, Busy, NotFound, PayloadTooLarge


class Access:
    """Authentication and authorization of requests against the graph's names."""

    def __init__(self, auth: Authenticator, backend):
        self._auth = auth
        self._backend = backend

    def principal(self, request: Request) -> Principal:
        return self._auth.authenticate(
            token_from(request.headers.get("authorization"), request.query_params.get("api_key"))
        )

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
    """The server-wide bound on concurrent generations (``max_concurrent``)."""

    def __init__(self, limit: int):
        self.limit, self.used = limit, 0

    def acquire(self) -> None:
        if self.used >= self.limit:
            raise Busy(f"the server is at its limit of {self.limit} concurrent generations", retry_after=1)
        self.used += 1

    def release(self) -> None:
        self.used -= 1

    async def accepted(self, events):
        """Take a place and wait until the model accepts the prompt (its first event),
        so that a refusal (too long, busy) is an HTTP status and not an event in a
        200 stream. The caller releases the place when the stream ends."""
        self.acquire()
        try:
            return await anext(events)
        except BaseException:
            self.release()
            raise

    async def __aenter__(self):
        self.acquire()

    async def __aexit__(self, *exc):
        self.release()


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
        raw = await read_body(request)
        try:
            data = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise BadRequest(f"the request body is not valid JSON: {e}") from None
        if not isinstance(data, dict):
            raise BadRequest("the request body must be a JSON object")
    try:
        return model.model_validate(data, strict=False)
    except ValidationError as e:
        raise BadRequest(describe(e.errors())) from None


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
