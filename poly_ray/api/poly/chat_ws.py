"""WebSocket chat: ``GET /v1/task/{task}/chat``.

Two protocols on one route:

- Poly's (the default): the client sends a text frame per user turn; the server
  answers a text frame per chunk of generated text, then an empty text frame
  at the end of the turn.
- JSON (subprotocol ``poly.json``, or ``?protocol=json``): the client sends a
  turn as text or as ``{"prompt": ..., "max_tokens": ...}``; the server sends
  ``{"type": "token", "text"}`` (a reasoning model's thinking before it as
  ``{"type": "reasoning", "text"}``), then ``{"type": "done", "finish_reason",
  "usage", "timings"}``, or ``{"type": "error", "code", "message"}``. The
  client may send ``{"type": "stop"}`` during a turn: generation stops at once,
  the turn ends with ``{"type": "done", "finish_reason": "cancelled"}`` and the
  stopped answer is not part of the conversation; the session goes on.

The session keeps the tokens the model has seen, so each turn continues the
conversation (the prelude once, then prefix + prompt + postfix per turn) and
the model replica reuses the cells it already holds for it. A turn that no
longer fits the context ends with ``context_full``, unless the task says
``context_overflow = "drop_oldest"``: then the prelude stays and the oldest
turns go (``dropped_turns`` in the JSON protocol's done message). Errors are told, never a
silent close: as an error message (JSON), or as a close code 4000 + HTTP status
with the message as the reason (Poly's protocol has no error frame).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from dataclasses import replace

from fastapi import WebSocket, WebSocketDisconnect
from pydantic import ValidationError

from poly_ray.api.auth import log_refusal
from poly_ray.api.family import POLY
from poly_ray.api.limits import StreamLimits
from poly_ray.api.parsing import describe, loads_json, overrides_off_loop
from poly_ray.api.services import services
from poly_ray.errors import BadRequest, PayloadTooLarge, PolyError, PromptTooLong
from poly_ray.generation import Chunk, Done, Reasoning
from poly_ray.tasks.turn import NO_OVERRIDES, Overrides, TurnRequest

from .protocol import CompletionParams

log = logging.getLogger(__name__)

JSON_SUBPROTOCOL = "poly.json"
MAX_WAITING_TURNS = 4


router = POLY.router()


@router.websocket("/v1/task/{task}/chat")
async def chat(websocket: WebSocket, task: str):
    svc = services(websocket)
    offered = websocket.scope.get("subprotocols") or []
    json_mode = JSON_SUBPROTOCOL in offered or websocket.query_params.get("protocol") == "json"
    await websocket.accept(subprotocol=JSON_SUBPROTOCOL if JSON_SUBPROTOCOL in offered else None)
    session = _Session(websocket, svc.backend, task, json_mode)
    try:
        who = await svc.access.authorize(websocket, "task", task)
        # The open session counts against its credential's streams until it closes.
        release = await svc.limits.take(who.credential, generation=False)
        session.owner = who.owner
    except PolyError as e:
        log_refusal(e, "WEBSOCKET", websocket.url.path)
        await session.refuse(e)
        return
    try:
        await session.run(svc.limits)
    finally:
        release()


class _Session:
    def __init__(self, websocket: WebSocket, backend, task: str, json_mode: bool):
        self.ws, self.backend, self.task, self.json_mode = websocket, backend, task, json_mode
        self.context: tuple[int, ...] = ()  # what the model saw so far (nothing: a new session)
        self.history: list[tuple[str, str]] = []  # each turn's prompt and answer, to drop the oldest
        self.id = uuid.uuid4().hex  # keeps the session's turns on one model replica
        self.stop = asyncio.Event()  # the client asked to stop the running turn
        self.running = False
        self.owner: str | None = None  # the caller's (Principal.owner), once authorized

    async def refuse(self, err: PolyError) -> None:
        """Say why, then close: used before the session starts."""
        if self.json_mode:
            await self.ws.send_json({"type": "error", "code": err.code, "message": err.message})
        await self.ws.close(code=4000 + err.status, reason=err.message[:120])

    async def run(self, slots: StreamLimits) -> None:
        # A client that sends faster than turns are answered waits (TCP backpressure)
        # instead of filling the server's memory.
        turns: asyncio.Queue = asyncio.Queue(maxsize=MAX_WAITING_TURNS)
        reader = asyncio.create_task(self._read(turns))
        try:
            while (frame := await self._next(turns)) is not None:
                self.running = True  # set before any await, so that a stop right after the turn counts
                try:
                    prompt, overrides = await self._parse(frame)
                    async with slots.held(None):  # counted per credential by the session
                        await self._turn(prompt, overrides, reader)
                except PolyError as e:
                    if not await self._error(e):
                        return
                finally:
                    self.running = False
                    self.stop.clear()
                if reader.done():
                    return
        except WebSocketDisconnect:
            pass
        except Exception:
            log.exception("chat session on task %s failed", self.task)
            await self._error(PolyError("internal server error"), close=True)
        finally:
            reader.cancel()

    async def _next(self, turns: asyncio.Queue):
        """The next turn; a session without one for ws_idle_timeout_s is closed (4408)."""
        idle = self.ws.app.state.config.ws_idle_timeout_s
        try:
            return await asyncio.wait_for(turns.get(), idle)
        except TimeoutError:
            message = f"closed after {idle:g} s without a message (ws_idle_timeout_s)"
            if self.json_mode:
                await self.ws.send_json({"type": "error", "code": "idle_timeout", "message": message})
            await self.ws.close(code=4408, reason=message)
            return None

    async def _read(self, turns: asyncio.Queue) -> None:
        limit = self.ws.app.state.max_request_bytes
        try:
            while True:
                message = await self.ws.receive()
                if message["type"] == "websocket.disconnect":
                    break
                text = message.get("text")
                if text is not None and len(text.encode()) > limit:
                    text = PayloadTooLarge(f"the message is over the limit (max_request_bytes) of {limit} bytes")
                elif text is None and message.get("bytes") is not None:
                    text = BadRequest("binary frames are not accepted; send text")
                if isinstance(text, str) and self.json_mode and _is_stop(text):
                    # Not queued: it is for the turn running (or about to run); with none, it is late.
                    if self.running or not turns.empty():
                        self.stop.set()
                elif text is not None:
                    await turns.put(text)
        finally:
            # The end of input; when the queue is full, the session sees reader.done() instead.
            with contextlib.suppress(asyncio.QueueFull):
                turns.put_nowait(None)

    async def _parse(self, frame) -> tuple[str, Overrides]:
        if isinstance(frame, PolyError):
            raise frame
        if self.json_mode and frame.lstrip().startswith("{"):
            try:
                params = CompletionParams.model_validate(loads_json(frame, "the message"))
            except ValidationError as e:
                raise BadRequest(describe(e.errors())) from None
            return params.prompt, await overrides_off_loop(self.ws.app, params)
        return frame, NO_OVERRIDES

    async def _turn(self, prompt: str, overrides: Overrides, reader: asyncio.Task) -> None:
        events, first, dropped = await self._start(prompt, overrides)
        answer: list[str] = []
        stopped = asyncio.ensure_future(self.stop.wait())
        try:
            ev = first
            while True:
                if reader.done():  # the client went away: stop generating
                    return
                if isinstance(ev, Chunk) and ev.text:
                    answer.append(ev.text)
                    await self._send_text(ev.text)
                elif isinstance(ev, Reasoning) and ev.text and self.json_mode:  # Poly's frames carry only the answer
                    await self.ws.send_json({"type": "reasoning", "text": ev.text})
                elif isinstance(ev, Done):
                    self.context = ev.context or ()
                    if await self._drops_oldest():  # only then are the turns' texts needed
                        self.history = [*self.history[dropped:], (prompt, "".join(answer))]
                    if self.json_mode:
                        await self.ws.send_json({"type": "done", **ev.to_dict(), **({"dropped_turns": dropped} if dropped else {})})
                    else:
                        await self.ws.send_text("")
                    return
                # The next event, unless the client stops the turn or goes away first.
                step = asyncio.ensure_future(anext(events))
                await asyncio.wait({step, stopped, reader}, return_when=asyncio.FIRST_COMPLETED)
                if not step.done():
                    step.cancel()
                    await asyncio.wait({step})  # unwound, so that the stream can be closed
                    if not reader.done():  # stopped: the conversation stays as it was before this turn
                        await self.ws.send_json({"type": "done", "finish_reason": "cancelled"})
                    return
                try:
                    ev = step.result()
                except StopAsyncIteration:
                    return
        finally:
            stopped.cancel()
            await events.aclose()

    async def _start(self, prompt: str, overrides: Overrides):
        """The turn's events and first event. When the session no longer fits the
        context and the task says so, the oldest turns are dropped (the prelude stays)
        until it fits; else ContextFull goes to the client."""
        overrides = replace(overrides, session=self.id)
        dropped = 0
        while True:
            if dropped:  # written out anew from the prelude and the turns kept
                turn = TurnRequest(self.task, prompt, history=tuple(self.history[dropped:]), overrides=overrides,
                                   owner=self.owner)
            else:
                turn = TurnRequest(self.task, prompt, context=self.context, overrides=overrides, owner=self.owner)
            events = self.backend.stream(turn)
            try:
                return events, await anext(events), dropped
            except PromptTooLong:
                await events.aclose()
                if dropped >= len(self.history) or not await self._drops_oldest():
                    raise
                dropped += 1

    async def _drops_oldest(self) -> bool:
        return (await self.backend.tasks())[self.task].context_overflow == "drop_oldest"

    async def _send_text(self, text: str) -> None:
        if self.json_mode:
            await self.ws.send_json({"type": "token", "text": text})
        else:
            await self.ws.send_text(text)

    async def _error(self, err: PolyError, close: bool = False) -> bool:
        """Tell the client; True if the session goes on."""
        if self.json_mode:
            await self.ws.send_json({"type": "error", "code": err.code, "message": err.message})
            if not close:
                return True
        await self.ws.close(code=4000 + err.status, reason=err.message[:120])
        return False


def _is_stop(text: str) -> bool:
    if '"stop"' not in text:
        return False
    try:
        message = json.loads(text)
    except (ValueError, RecursionError):  # not a stop; the message's own parse answers it
        return False
    return isinstance(message, dict) and message.get("type") == "stop"
