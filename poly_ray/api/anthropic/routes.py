"""Anthropic's Messages API: ``POST /v1/messages`` (plain or streamed) and
``POST /v1/messages/count_tokens``.

A message runs through the chat path of the OpenAI chat route (``backend.stream``
of a ``TurnRequest`` whose turns are the messages), tools included: Anthropic's
``tools`` and ``tool_choice`` become the chat path's, so every call is enforced by
grammar. Errors are in Anthropic's shape, so its SDK raises its usual exceptions.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import replace
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse

from poly_ray import tools
from poly_ray.api.auth import check_target
from poly_ray.api.family import ANTHROPIC
from poly_ray.api.openapi import GENERATES, SSE, WITH_BODY, doc
from poly_ray.api.parsing import overrides_off_loop, parse_params
from poly_ray.api.services import services
from poly_ray.api.sse import json_event
from poly_ray.api.streaming import Framer, respond
from poly_ray.config import Config
from poly_ray.generation import Chunk, Done, Reasoning, Started, ToolCallDelta, gather_calls
from poly_ray.tasks.turn import TurnRequest, chain_key

from .protocol import CountTokensRequest, MessageResponse, MessagesRequest, TokenCount, tool_input

router = ANTHROPIC.router()


@router.post("/v1/messages", openapi_extra=doc(body=MessagesRequest, ok=MessageResponse, streams=SSE,
                                                errors=GENERATES))
async def create_message(request: Request):
    s = services(request)
    who = s.access.principal(request)
    body = await parse_params(request, MessagesRequest)
    turns = tuple(body.conversation())
    await check_target(s.backend, who, body.model, "model")
    overrides = await overrides_off_loop(request.app, body)
    if (breakpoint := body.cache_breakpoint()) is not None:
        # The conversation's KV cells are kept under its breakpoint (restored on any replica,
        # after a restart too), and its turns go to the replica that holds them.
        key = chain_key(who.owner, "anthropic", breakpoint)
        overrides = replace(overrides, cache_key=key, session=key)
    events = s.backend.stream(TurnRequest(body.model, messages=turns, overrides=overrides, owner=who.owner))
    started, release = await s.limits.accepted(events, who.credential)
    shape = _Message(body, started.prompt_tokens if isinstance(started, Started) else 0,
                     caching=breakpoint is not None and _snapshots(s.config, body.model))
    if body.stream:
        return respond(events, _Framer(shape), release)
    try:
        text, _, calls, done = await gather_calls(events)
    finally:
        release()
    content: list[dict[str, Any]] = [_thinking(done.reasoning)] if done.reasoning else []
    content += [{"type": "text", "text": text}] if text or not calls else []
    content += [{"type": "tool_use", "id": c.id, "name": c.name, "input": tool_input(c.arguments)} for c in calls]
    return JSONResponse(dict(shape.head(), content=content, **shape.end(done)))


@router.post("/v1/messages/count_tokens", openapi_extra=doc(body=CountTokensRequest, ok=TokenCount,
                                                             errors=WITH_BODY))
async def count_tokens(request: Request):
    """The tokens of the conversation's text and the tools' instructions, by the model's
    tokenizer (the chat template's few marker tokens are not counted)."""
    s = services(request)
    who = s.access.principal(request)
    body = await parse_params(request, CountTokensRequest)
    turns = body.conversation()
    await check_target(s.backend, who, body.model, "model")
    o = await overrides_off_loop(request.app, body)  # the tools, their schemas converted
    if o.tools and o.tool_choice != "none":
        plan = await asyncio.to_thread(tools.plan, list(o.tools), o.tool_choice, o.parallel_tool_calls,
                                       request.app.state.schema_caps)
        turns = tools.with_instructions(plan, turns)
    tasks = await s.backend.tasks()
    model = tasks[body.model].model if body.model in tasks else body.model
    tokens = await s.backend.tokenize(model, "\n".join(text for _, text in turns))
    return {"input_tokens": len(tokens)}


def _snapshots(config: Config, name: str) -> bool:
    """Whether the model that ``name`` runs keeps KV snapshots (kv_snapshot_bytes above 0)."""
    model = config.model_of(name)
    return model is not None and model.kv_snapshot_bytes > 0


class _Message:
    """What a message's answer says besides its content. ``caching``: the prompt is saved
    under its cache breakpoint, so what was not read from the cache was written to it."""

    def __init__(self, body: MessagesRequest, input_tokens: int, caching: bool = False):
        self.id, self.model, self.input_tokens = f"msg_{uuid.uuid4().hex}", body.model, input_tokens
        self.stops = set(body.stop_sequences or ())
        self.caching = caching

    def head(self) -> dict:
        return {"id": self.id, "type": "message", "role": "assistant", "model": self.model, "content": [],
                "stop_reason": None, "stop_sequence": None}

    def usage(self, done: Done | None = None) -> dict:
        cached = int(done.timings.get("cached_tokens") or 0) if done else 0
        prompt = done.prompt_tokens if done else self.input_tokens
        # Anthropic counts the prompt's tokens read from the cache, and those written to it,
        # apart from the others.
        written = prompt - cached if self.caching and done else 0
        return {"input_tokens": prompt - cached - written, "output_tokens": done.completion_tokens if done else 0,
                "cache_read_input_tokens": cached, "cache_creation_input_tokens": written}

    def end(self, done: Done) -> dict:
        stop = done.stop_sequence if done.stop_sequence in self.stops else None
        reason = {"tool_calls": "tool_use", "length": "max_tokens"}.get(done.finish_reason, "end_turn")
        return {"stop_reason": "stop_sequence" if stop else reason, "stop_sequence": stop, "usage": self.usage(done)}


class _Framer(Framer):
    """Anthropic's event sequence: message_start; for each content block its start, its
    deltas (text_delta, input_json_delta) and its stop; message_delta with the stop
    reason and usage; message_stop. ``ping`` while the model is quiet."""

    family = ANTHROPIC
    keep_alive = json_event("ping", {"type": "ping"})

    def __init__(self, shape: _Message):
        self.shape = shape
        self.index = -1  # the open block's
        self.open: str | None = None  # its type

    def opening(self) -> list[bytes]:
        return [_event("message_start", message=dict(self.shape.head(), usage=self.shape.usage()))]

    def event(self, ev) -> list[bytes]:
        if isinstance(ev, Reasoning) and ev.text:
            out = [] if self.open == "thinking" else self._start(_thinking(""))
            return out + [_event("content_block_delta", index=self.index,
                                 delta={"type": "thinking_delta", "thinking": ev.text})]
        if isinstance(ev, Chunk) and ev.text:
            out = [] if self.open == "text" else self._start({"type": "text", "text": ""})
            return out + [_event("content_block_delta", index=self.index,
                                 delta={"type": "text_delta", "text": ev.text})]
        if isinstance(ev, ToolCallDelta):
            out = self._start({"type": "tool_use", "id": ev.id, "name": ev.name, "input": {}}) if ev.id else []
            if ev.arguments and self.open == "tool_use":
                out.append(_event("content_block_delta", index=self.index,
                                  delta={"type": "input_json_delta", "partial_json": ev.arguments}))
            return out
        return []

    async def done(self, done: Done) -> list[bytes]:
        end = self.shape.end(done)
        usage = end.pop("usage")
        return [*self._stop(), _event("message_delta", delta=end, usage=usage), _event("message_stop")]

    def _start(self, block: dict) -> list[bytes]:
        out = self._stop()
        self.index, self.open = self.index + 1, block["type"]
        return out + [_event("content_block_start", index=self.index, content_block=block)]

    def _stop(self) -> list[bytes]:
        if self.open is None:
            return []
        self.open = None
        return [_event("content_block_stop", index=self.index)]


def _thinking(text: str) -> dict:
    # No signature: the thinking is the model's own, and comes back only to be dropped.
    return {"type": "thinking", "thinking": text, "signature": ""}


def _event(kind: str, **fields) -> bytes:
    return json_event(kind, {"type": kind, **fields})

