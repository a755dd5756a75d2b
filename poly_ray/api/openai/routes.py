"""OpenAI-compatible routes: models, completions, chat completions, embeddings.

``model`` names a task (its prelude, prefix/postfix, stops and limits apply) or
a bare model. Errors on these routes use OpenAI's shape, so OpenAI client
libraries raise their usual exceptions.
"""

from __future__ import annotations

import asyncio
import base64
import json
import struct
import time
import uuid
from collections.abc import AsyncGenerator
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse

from poly_ray.api.family import OPENAI
from poly_ray.api.limits import StreamLimits
from poly_ray.api.openapi import GENERATES, SSE, WITH_BODY, doc
from poly_ray.api.parsing import overrides_off_loop, parse_params
from poly_ray.api.services import generation, services
from poly_ray.api.streaming import Framer, respond
from poly_ray.api.vectors import admitted, shorten
from poly_ray.generation import Chunk, Done, Event, Reasoning, TokenLogprob, ToolCall, ToolCallDelta, gather_calls
from poly_ray.tasks.turn import TurnRequest, chain_key

from .protocol import (
    ChatCompletionRequest,
    ChatCompletionResponse,
    CompletionRequest,
    CompletionResponse,
    EmbeddingRequest,
    EmbeddingResponse,
    ModelPage,
    logprob_content,
)

router = OPENAI.router()


@router.get("/v1/models", openapi_extra=doc(ok=ModelPage))
async def list_models(request: Request):
    svc = services(request)
    who = svc.access.principal(request)
    created = int(time.time())
    names = [t for t in await svc.backend.tasks() if who.allows("task", t)]
    names += [m for m in await svc.backend.models() if who.allows("model", m)]
    # One answer for both SDKs that list models here: OpenAI's fields and Anthropic's
    # (type, display_name, created_at, and the page's has_more / first_id / last_id).
    since = datetime.fromtimestamp(created, UTC).isoformat().replace("+00:00", "Z")
    return {
        "object": "list",
        "data": [{"id": n, "object": "model", "created": created, "owned_by": "poly-ray",
                  "type": "model", "display_name": n, "created_at": since} for n in names],
        "has_more": False,
        "first_id": names[0] if names else None,
        "last_id": names[-1] if names else None,
    }


@router.post("/v1/completions", openapi_extra=doc(
    body=CompletionRequest, ok=CompletionResponse, streams=SSE, errors=GENERATES))
async def completions(request: Request):
    svc, who, body = await generation(request, CompletionRequest)
    # A text completion cannot show a tool call: a task's tools stay out of it.
    overrides = replace(await overrides_off_loop(request.app, body), tool_choice="none",
                        session=chain_key(who.owner, "pck", body.prompt_cache_key))
    events = svc.backend.stream(TurnRequest(body.model, body.text(), overrides=overrides, owner=who.owner))
    shape = _CompletionShape(body.model, body.logprobs is not None)
    return await _respond(body, events, svc.limits, who.credential, shape)


@router.post("/v1/chat/completions", openapi_extra=doc(
    body=ChatCompletionRequest, ok=ChatCompletionResponse, streams=SSE, errors=GENERATES))
async def chat_completions(request: Request):
    svc, who, body = await generation(request, ChatCompletionRequest)
    overrides = replace(await overrides_off_loop(request.app, body),
                        session=chain_key(who.owner, "pck", body.prompt_cache_key))
    events = svc.backend.stream(TurnRequest(body.model, messages=tuple(body.conversation()), overrides=overrides,
                                        owner=who.owner))
    return await _respond(body, events, svc.limits, who.credential, _ChatShape(body.model, body.logprobs))


@router.post("/v1/embeddings", openapi_extra=doc(
    body=EmbeddingRequest, ok=EmbeddingResponse, errors=WITH_BODY))
async def embeddings(request: Request):
    svc = services(request)
    svc.access.principal(request)  # 401 before looking at the body
    body = await parse_params(request, EmbeddingRequest)
    who = await svc.access.authorize(request, "model", body.model)
    # Checked before the usage count crosses Ray too (svc.embed checks it for the vectors).
    texts = admitted(svc.config, body.model, [body.input] if isinstance(body.input, str) else body.input)
    # Usage in one call for all the texts, beside the embedding (one call per text made
    # an 8 MiB body millions of calls).
    vectors, n = await asyncio.gather(svc.embed(who, body.model, texts), svc.backend.count_tokens(body.model, texts))
    if body.dimensions is not None:
        vectors = [shorten(v, body.dimensions, body.model) for v in vectors]
    sent: list[list[float]] | list[str] = vectors
    if body.encoding_format == "base64":  # little-endian float32, as OpenAI sends it
        sent = [base64.b64encode(struct.pack(f"<{len(v)}f", *v)).decode() for v in vectors]
    return {
        "object": "list",
        "model": body.model,
        "data": [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(sent)],
        "usage": {"prompt_tokens": n, "total_tokens": n},
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

    def choice(self, text: str, finish: str | None, logprobs: list[TokenLogprob], calls: list[ToolCall],
               reasoning: str = "") -> dict:
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

    def choice(self, text: str, finish: str | None, logprobs: list[TokenLogprob], calls: list[ToolCall],
               reasoning: str = "") -> dict:
        message: dict[str, Any] = {"role": "assistant", "content": text}
        if calls:  # OpenAI's shape: no content beside the calls
            message = {"role": "assistant", "content": text or None, "tool_calls": [
                {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                for c in calls]}
        if reasoning:  # the llama-server / vLLM / DeepSeek field
            message["reasoning_content"] = reasoning
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
        return {"content": logprob_content(entries)} if self.logprobs else None


async def _respond(body, events: AsyncGenerator[Event, None], slots: StreamLimits, credential: str | None,
                   shape: _CompletionShape):
    _, release = await slots.accepted(events, credential)
    if not body.stream:
        try:
            text, logprobs, calls, done = await gather_calls(events)
        finally:
            release()
        return JSONResponse(shape.head([shape.choice(text, _finish(done), logprobs, calls, done.reasoning)],
                                       usage=_usage(done)))
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    return respond(events, _Framer(shape, include_usage), release)


class _Framer(Framer):
    """OpenAI's chunks as ``data:`` lines: the role first (chat), text and tool-call
    deltas, the finish reason, the usage when asked, then ``[DONE]``."""

    family = OPENAI

    def __init__(self, shape: _CompletionShape, include_usage: bool):
        self.shape, self.include_usage = shape, include_usage
        self.chunk = dict(shape.head([shape.delta(None, None, True, [])]), object=shape.chunk_object)

    def opening(self) -> list[bytes]:
        return [_data(self.chunk)] if isinstance(self.shape, _ChatShape) else []

    def event(self, ev) -> list[bytes]:
        if isinstance(ev, Chunk) and (ev.text or ev.logprobs):
            return [_data(dict(self.chunk, choices=[self.shape.delta(ev.text, None, False, list(ev.logprobs))]))]
        if isinstance(ev, ToolCallDelta) and isinstance(self.shape, _ChatShape):
            return [_data(dict(self.chunk, choices=[self.shape.call_delta(ev)]))]
        if isinstance(ev, Reasoning) and ev.text and isinstance(self.shape, _ChatShape):
            delta = {"index": 0, "delta": {"reasoning_content": ev.text}, "logprobs": None, "finish_reason": None}
            return [_data(dict(self.chunk, choices=[delta]))]
        return []

    async def done(self, done: Done) -> list[bytes]:
        out = [_data(dict(self.chunk, choices=[self.shape.delta(None, _finish(done), False, [])]))]
        if self.include_usage:
            out.append(_data(dict(self.chunk, choices=[], usage=_usage(done))))
        return out

    def closing(self) -> list[bytes]:
        return [b"data: [DONE]\n\n"]


def _data(obj) -> bytes:
    return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"


def _usage(done: Done) -> dict:
    """OpenAI's usage, with the prompt's tokens the replica's prefix cache served (agent frameworks read them)."""
    return {**done.usage, "prompt_tokens_details": {"cached_tokens": int(done.timings.get("cached_tokens") or 0)}}


def _finish(done: Done) -> str:
    return done.finish_reason if done.finish_reason in ("length", "tool_calls") else "stop"
