"""The one stream driver: every streamed answer of every family goes through ``respond``.

A family says only how its frames are written (a ``Framer``); the driver owns
what must be the same everywhere:

- keep-alive frames while the model is quiet (formats that have one: SSE comments),
- the end: exactly one of ``done`` or ``error`` is written, and a stream that
  ends without ``Done`` is an error in the family's own shape, never a silent end
  or a success marker,
- an unexpected exception is logged and written as an internal error, never a
  dropped connection,
- a client that goes away cancels the model stream and gives back its place.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi.responses import StreamingResponse

from poly_ray.errors import ModelError, PolyError
from poly_ray.generation import Done

from . import sse
from .family import POLY, Family

log = logging.getLogger(__name__)

KEEP_ALIVE_S = 10.0
# Proxies (nginx) must pass each frame on at once; nothing of a stream is cacheable.
HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
_END = object()


class Framer:
    """How one stream is written. The driver calls ``opening`` once, ``event`` for
    each item before the end, then ``done`` (on ``Done``) or ``error`` (on a failure),
    or ``exhausted`` when the source ended without ``Done``; then ``closing``. It
    calls ``gone`` instead when the client went away before the end was written."""

    family: Family = POLY
    media_type = "text/event-stream"
    keep_alive: bytes | None = sse.KEEP_ALIVE  # None: the format has no frame that says nothing

    def opening(self) -> list[bytes]:
        return []

    def event(self, ev: Any) -> list[bytes]:
        return []

    async def done(self, done: Done) -> list[bytes]:
        return []

    async def error(self, err: PolyError) -> list[bytes]:
        return [self.family.stream_error(err)]

    async def exhausted(self) -> list[bytes]:
        return await self.error(ModelError("the stream ended before it was done"))

    def closing(self) -> list[bytes]:
        return []

    def gone(self) -> None:
        pass


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


def respond(events: AsyncIterator, framer: Framer, release: Callable[[], None] = lambda: None) -> GenerationStream:
    """The streamed response of ``events`` (after its first, accepted event), written by ``framer``."""
    return GenerationStream(frames(events, framer, release), events=events, release=release,
                            media_type=framer.media_type, headers=HEADERS)


async def frames(events: AsyncIterator, framer: Framer, on_close: Callable[[], None]) -> AsyncIterator[bytes]:
    """The bytes of the stream. One ``anext`` is pending at a time, so a slow client
    slows the model (no queue grows) and a keep-alive never cancels a read."""
    pending: asyncio.Future | None = None
    ended = False
    try:
        for frame in framer.opening():
            yield frame
        while not ended:
            pending = pending or asyncio.ensure_future(anext(events, _END))
            ready, _ = await asyncio.wait({pending}, timeout=KEEP_ALIVE_S if framer.keep_alive else None)
            if not ready:  # only a framer with a keep-alive frame waits with a timeout
                if framer.keep_alive is not None:
                    yield framer.keep_alive
                continue
            read, pending = pending, None
            try:
                ev = read.result()
                if ev is _END:
                    out, ended = await framer.exhausted(), True
                elif isinstance(ev, Done):
                    out, ended = await framer.done(ev), True
                else:
                    out = framer.event(ev)
            except Exception as err:
                out, ended = await framer.error(_as_poly(err)), True
            for frame in out:
                yield frame
        for frame in framer.closing():
            yield frame
    finally:
        if pending is not None:
            pending.cancel()
        on_close()
        if not ended:
            framer.gone()


def _as_poly(err: Exception) -> PolyError:
    if isinstance(err, PolyError):
        return err
    log.error("a stream failed", exc_info=err)
    return PolyError("internal server error")
