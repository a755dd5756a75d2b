"""OpenAI-compatible routes: models, completions, chat completions, embeddings.

``model`` names a task (its prelude, prefix/postfix, stops and limits apply) or
a bare model. Errors on these routes use OpenAI's shape, so OpenAI client
libraries raise their usual exceptions.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import struct
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from poly_ray.api.auth import Access, check_target
from poly_ray.api.limits import StreamLimits
from poly_ray.api.openapi import GENERATES, SSE, WITH_BODY, doc
from poly_ray.api.parsing import overrides_off_loop, parse_params
from poly_ray.api.streaming import GenerationStream
from poly_ray.api.vectors import shorten
from poly_ray.errors import PolyError
from poly_ray.generation import Chunk, Done, Event, TokenLogprob, ToolCall, ToolCallDelta, gather_calls

from .protocol import (
    ChatCompletionRequest,
    ChatCompletionResponse,
    CompletionRequest,
    CompletionResponse,
    EmbeddingRequest,
    EmbeddingResponse,
    ModelPage,
)

PATHS = ("/v1/models", "/v1/completions", "/v1/chat/completions", "/v1/embeddings", "/v1/responses",
         "/v1/conversations", "/v1/assistants", "/v1/threads")

_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error", 404: "not_found_error",
          429: "rate_limit_error"}

log = logging.getLogger(__name__)


def is_openai_path(path: str) -> bool:
    return path.startswith(PATHS)


def error_body(status: int, code: str, message: str) -> dict:
    kind = _TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def register(app: FastAPI, backend, access: Access, slots: StreamLimits) -> None:
    @app.get("/v1/models", openapi_extra=doc(family="openai", ok=ModelPage))
    async def list_models(request: Request):
        who = access.principal(request)
        created = int(time.time())
        names = [t for t in await backend.tasks() if who.allows("task", t)]
        names += [m for m in await backend.models() if who.allows("model", m)]
        return {
            "object": "list",
            "data": [{"id": n, "object": "model", "created": created, "owned_by": "poly-ray"} for n in names],
        }

    @app.post("/v1/completions", openapi_extra=doc(
        family="openai", body=CompletionRequest, ok=CompletionResponse, streams=SSE, errors=GENERATES))
    async def completions(request: Request):
        who = access.principal(request)
        body = await parse_params(request, CompletionRequest)
        await check_target(backend, who, body.model)
        events = backend.stream_target(body.model, body.text(), None, await overrides_off_loop(request.app, body))
        shape = _CompletionShape(body.model, body.logprobs is not None)
        return await _respond(body, events, slots, who.credential, shape)

    @app.post("/v1/chat/completions", openapi_extra=doc(
        family="openai", body=ChatCompletionRequest, ok=ChatCompletionResponse, streams=SSE, errors=GENERATES))
    async def chat_completions(request: Request):
        who = access.principal(request)
        body = await parse_params(request, ChatCompletionRequest)
        await check_target(backend, who, body.model)
        events = backend.stream_target(body.model, None, body.conversation(), await overrides_off_loop(request.app, body))
        return await _respond(body, events, slots, who.credential, _ChatShape(body.model, body.logprobs))

    @app.post("/v1/embeddings", openapi_extra=doc(
        family="openai", body=EmbeddingRequest, ok=EmbeddingResponse, errors=WITH_BODY))
    async def embeddings(request: Request):
        access.principal(request)  # 401 before looking at the body
        body = await parse_params(request, EmbeddingRequest)
        await access.authorize(request, "model", body.model)
        texts = [body.input] if isinstance(body.input, str) else body.input
        vectors, tokens = await asyncio.gather(
            backend.embed(body.model, texts), asyncio.gather(*(backend.tokenize(body.model, t) for t in texts))
        )
        if body.dimensions is not None:
            vectors = [shorten(v, body.dimensions, body.model) for v in vectors]
        if body.encoding_format == "base64":  # little-endian float32, as OpenAI sends it
            vectors = [base64.b64encode(struct.pack(f"<{len(v)}f", *v)).decode() for v in vectors]
        return {
            "object": "list",
            "model": body.model,
            "data": [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)],
            "usage": {"prompt_tokens": (n := sum(map(len, tokens))), "total_tokens": n},
        }


class _CompletionShape:
    object, chunk_object = "text_completion", "text_completion"

    def __init__(self, model: str, logprobs: bool):
        self.model, self.id, self.created = model, f"cmpl-{uuid.uuid4().hex}", int(time.time())
        self.logprobs = logprobs
        self._offset = 0

    def head(self, choices: list, **extra) -> dict:
        return {"id": self.id, "object": self.object, "created": self.created, "model": self.model,
                "choices": choices, **extra}

    def choice(self, text: str, finish: str | None, logprobs: list[TokenLogprob], calls: list[ToolCall]) -> dict:
        return {"index": 0, "text": text, "logprobs": self.format_logprobs(logprobs), "finish_reason": finish}

    def delta(self, text: str | None, finish: str | None, first: bool, logprobs: list[TokenLogprob]) -> dict:
        return self.choice(text or "", finish, logprobs, [])

    def format_logprobs(self, entries: list[TokenLogprob]) -> dict | None:
        if not self.logprobs:
            return None
        offsets = []
        for e in entries:
            offsets.append(self._offset)
            self._offset += len(e.token)
        return {
            "tokens": [e.token for e in entries],
            "token_logprobs": [e.logprob for e in entries],
            "top_logprobs": [dict(e.top) for e in entries],
            "text_offset": offsets,
        }


class _ChatShape(_CompletionShape):
    object, chunk_object = "chat.completion", "chat.completion.chunk"

    def __init__(self, model: str, logprobs: bool):
        super().__init__(model, logprobs)
        self.id = f"chatcmpl-{uuid.uuid4().hex}"

    def choice(self, text: str, finish: str | None, logprobs: list[TokenLogprob], calls: list[ToolCall]) -> dict:
        message = {"role": "assistant", "content": text}
        if calls:  # OpenAI's shape: no content beside the calls
            message = {"role": "assistant", "content": text or None, "tool_calls": [
                {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                for c in calls]}
        return {"index": 0, "message": message, "logprobs": self.format_logprobs(logprobs), "finish_reason": finish}

    def call_delta(self, d: ToolCallDelta) -> dict:
        """The first delta of a call has its id, type and name; the rest, argument fragments."""
        call = {"index": d.index, "function": {"arguments": d.arguments}}
        if d.id:
            call.update(id=d.id, type="function", function={"name": d.name, "arguments": d.arguments})
        return {"index": 0, "delta": {"tool_calls": [call]}, "logprobs": None, "finish_reason": None}

    def delta(self, text: str | None, finish: str | None, first: bool, logprobs: list[TokenLogprob]) -> dict:
        delta = {"role": "assistant", "content": ""} if first else ({"content": text} if text is not None else {})
        return {"index": 0, "delta": delta, "logprobs": None if first else self.format_logprobs(logprobs),
                "finish_reason": finish}

    def format_logprobs(self, entries: list[TokenLogprob]) -> dict | None:
        if not self.logprobs:
            return None

        def entry(token: str, logprob: float) -> dict:
            return {"token": token, "logprob": logprob, "bytes": list(token.encode())}

        return {"content": [{**entry(e.token, e.logprob), "top_logprobs": [entry(t, lp) for t, lp in e.top]}
                            for e in entries]}


async def _respond(body, events: AsyncGenerator[Event, None], slots: StreamLimits, credential: str, shape: _CompletionShape):
    _, release = await slots.accepted(events, credential)
    if not body.stream:
        try:
            text, logprobs, calls, done = await gather_calls(events)
        finally:
            release()
        return JSONResponse(shape.head([shape.choice(text, _finish(done), logprobs, calls)], usage=done.usage))
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    return GenerationStream(
        _stream(events, shape, include_usage, release),
        events=events,
        release=release,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _stream(events, shape: _CompletionShape, include_usage: bool, on_close) -> AsyncIterator[bytes]:
    def data(obj) -> bytes:
        return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"

    try:
        chunk = dict(shape.head([shape.delta(None, None, True, [])]), object=shape.chunk_object)
        if shape.chunk_object == "chat.completion.chunk":
            yield data(chunk)
        async for ev in events:
            if isinstance(ev, Chunk) and (ev.text or ev.logprobs):
                yield data(dict(chunk, choices=[shape.delta(ev.text, None, False, list(ev.logprobs))]))
            elif isinstance(ev, ToolCallDelta) and isinstance(shape, _ChatShape):
                yield data(dict(chunk, choices=[shape.call_delta(ev)]))
            elif isinstance(ev, Done):
                yield data(dict(chunk, choices=[shape.delta(None, _finish(ev), False, [])]))
                if include_usage:
                    yield data(dict(chunk, choices=[], usage=ev.usage))
                break
    except PolyError as e:
        yield data(error_body(e.status, e.code, e.message))
    except Exception:
        log.exception("a completion stream failed")
        yield data(error_body(500, "internal_error", "internal server error"))
    finally:
        on_close()
        await events.aclose()
    yield b"data: [DONE]\n\n"


def _finish(done: Done) -> str:
    return done.finish_reason if done.finish_reason in ("length", "tool_calls") else "stop"
