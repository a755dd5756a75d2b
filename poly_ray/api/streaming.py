"""Streamed generations: the response that always cleans up after itself, and
the SSE body of Poly's ``/live`` with keep-alives while the model is quiet."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Any

from fastapi.responses import StreamingResponse

from poly_ray.errors import PolyError
from poly_ray.generation import Chunk, Done, Event, ToolCallDelta

from . import sse

log = logging.getLogger(__name__)

KEEP_ALIVE_S = 10.0


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


async def sse_body(first: Event, events: AsyncGenerator[Event, None], on_close) -> AsyncIterator[bytes]:
    """Frame events as SSE, with keep-alive comments while the model is quiet.

    A separate task pulls from ``events``; when the client goes away this body is
    cancelled, and cancelling that task closes the stream down to the model.
    """
    queue: asyncio.Queue = asyncio.Queue()
    pump = asyncio.create_task(_pump(events, queue))
    ev: Any = first
    call: dict | None = None  # a task's tool call being written; sent whole
    try:
        while True:
            try:
                ev = await asyncio.wait_for(queue.get(), KEEP_ALIVE_S)
            except TimeoutError:
                yield sse.KEEP_ALIVE
                continue
            if isinstance(ev, Chunk) and ev.text:
                yield sse.event(ev.text)
            elif isinstance(ev, ToolCallDelta):
                if ev.id and call:
                    yield _tool_call_event(call)
                if ev.id:
                    call = {"id": ev.id, "name": ev.name, "arguments": ev.arguments}
                else:
                    call["arguments"] += ev.arguments
            elif isinstance(ev, Done):
                if call and ev.finish_reason != "length":
                    yield _tool_call_event(call)
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


def _tool_call_event(call: dict) -> bytes:
    return sse.json_event("tool_call", {**call, "arguments": json.loads(call["arguments"])})


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
