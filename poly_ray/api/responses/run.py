"""One response's generation and its life in the store: answered whole, streamed
as events, or run in the background (``background: true``) while the client
polls it and may cancel it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass, field

from poly_ray.api import sse, streaming
from poly_ray.api.backend import StateBackend
from poly_ray.api.family import OPENAI
from poly_ray.api.openai.protocol import logprob_content
from poly_ray.errors import NotFound, PolyError
from poly_ray.generation import Chunk, Done, Reasoning, ToolCallDelta, gather_calls
from poly_ray.state.kinds import INPUT, ITEM, RESPONSE
from poly_ray.state.store import UNFINISHED, new_id

from . import protocol
from .events import EventStream

GONE = PolyError("the client went away before the response was complete")

log = logging.getLogger(__name__)


def input_id(rid: str) -> str:
    return "in_" + rid.removeprefix("resp_")


async def append(state, owner: str, cid: str, items: list[dict], *, fresh: bool = True) -> list[dict]:
    """Store items under a conversation, in order. A client's item gets a fresh id:
    one sent again (an earlier output as input) is a new entry, never a clash."""
    prefixes = {"function_call": "fc", "function_call_output": "fco"}
    return [await state.create(owner, ITEM, dict(item, id=new_id(prefixes.get(item["type"], "msg"))) if fresh
                               else item, parent=cid) for item in items]


@dataclass(frozen=True)
class Earlier:
    """What a response continues: the earlier items (its prompt's start), the routing key of
    its chain (its first response, or the conversation) and its conversation's id."""

    items: list[dict] = field(default_factory=list)
    chain: str | None = None
    conversation: str | None = None
    previous: str | None = None  # the response continued, which the stored input refers to
    outputs: int = 0  # how many of its output items it had then


class Record:
    """One response's life in the store (or only in memory with ``store: false``):
    queued or in_progress first, so a server that stops mid-generation leaves it
    to the restart sweep (failed), never stuck; then completed, incomplete or
    failed, unless it was cancelled meanwhile (a cancelled one is never overwritten)."""

    def __init__(self, state, owner: str, rid: str, model: str, fields: dict, status: str = "in_progress",
                 logprobs: bool = False):
        self.state, self.owner, self.rid, self.fields = state, owner, rid, fields
        self.logprobs = logprobs  # the request included the output's log-probabilities
        self.response = protocol.response_object(rid, model, status=status, output=[], **fields)
        # (state, conversation id, input items) to append to when done
        self.conversation: tuple[StateBackend, str, list[dict]] | None = None

    async def begin(self, items: list[dict], earlier: Earlier, chain: str) -> None:
        """``chain``: the first response of its chain (or its conversation), which routes its turns.
        The input refers to the previous response instead of copying its chain (N6: a copy per
        turn stored O(n^2) items); a conversation's items, which change, are kept as they were."""
        if self.state is None:
            return
        await self.state.create(self.owner, RESPONSE, self.response)
        stored: dict = {"id": input_id(self.rid), "items": items, "chain": chain}
        if earlier.previous is not None:
            stored.update(previous=earlier.previous, outputs=earlier.outputs)
        elif earlier.items:
            stored["history"] = earlier.items
        try:
            await self.state.create(self.owner, INPUT, stored, parent=self.rid, ref=earlier.previous)
        except PolyError:  # the previous response deleted meanwhile, a quota: no response without input
            with contextlib.suppress(NotFound):
                await self.state.delete(self.owner, RESPONSE, self.rid)
            raise

    async def save(self, changes: dict) -> dict:
        if self.state is None:
            self.response = dict(self.response, **changes)
        else:
            try:
                self.response = await self.state.update(self.owner, RESPONSE, self.rid, changes, only_if=UNFINISHED)
            except NotFound:  # deleted meanwhile: nothing is left to write the result into
                self.response = dict(self.response, **changes)
        return self.response

    async def finish(self, output: list[dict], done: Done) -> dict:
        if self.response["status"] == "cancelled":
            return self.response
        output = [protocol.cut_short(item) for item in output]
        usage = protocol.usage(done.prompt_tokens, done.completion_tokens, int(done.timings.get("cached_tokens") or 0),
                               done.reasoning_tokens)
        incomplete = done.finish_reason == "length"
        changes = {"status": "incomplete" if incomplete else "completed",
                   "incomplete_details": {"reason": "max_output_tokens"} if incomplete else None,
                   "output": output, "usage": usage}
        final = await self.save(changes)
        if self.conversation is not None and final["status"] != "cancelled":
            state, cid, items = self.conversation
            await append(state, self.owner, cid, items)
            await append(state, self.owner, cid, output, fresh=False)  # the ids the response shows
        return final

    async def fail(self, err: PolyError) -> dict:
        return await self.save({"status": "failed", "error": {"code": err.code, "message": err.message}})


@contextlib.asynccontextmanager
async def failing(record: Record):
    """A refusal, or the client going away, ends the stored response ``failed``: a
    non-streamed response whose client left stayed ``in_progress`` for ever."""
    try:
        yield
    except PolyError as err:
        await record.fail(err)
        raise
    except asyncio.CancelledError:
        keep(record.fail(GONE))  # this task is being cancelled: the write runs as its own
        raise


async def answer(events, logprobs: bool = False) -> tuple[list[dict], Done]:
    """A whole answer's output items (text and function calls) and its end; ``logprobs``: the
    request included them."""
    text, entries, calls, done = await gather_calls(events)
    return protocol.output_items(text, calls, logprob_content(entries) if logprobs else None, done.reasoning), done


_ending: set = set()  # tasks that must outlive their request, kept until done
WATCH_S = 1.0  # how often background work looks for a cancel made on another ingress replica


async def watch(task: asyncio.Task, cancelled, every: float | None = None) -> None:
    """Cancel ``task`` once ``cancelled()`` (a store read) says so: a cancel that
    reached another ingress replica stops this one's generation too."""
    while not task.done():
        await asyncio.sleep(every or WATCH_S)
        try:
            if not task.done() and await cancelled():
                task.cancel()
        except NotFound:  # deleted meanwhile: as good as cancelled
            task.cancel()
            return
        except Exception as err:  # the store unreachable a moment: look again later
            log.info("could not read a background job's status: %s", err)


def keep(coro) -> asyncio.Task:
    """Run ``coro`` as a task that outlives its request (the loop keeps only weak references)."""
    task = asyncio.get_running_loop().create_task(coro)
    _ending.add(task)
    task.add_done_callback(_ending.discard)
    return task


class Framer(streaming.Framer):
    """A response's numbered events (``response.created`` … ``response.completed``),
    the stored response kept in step: completed, incomplete or failed with the
    stream, and failed when the client goes away before the end."""

    family = OPENAI

    def __init__(self, record: Record):
        self.record, self.shape = record, EventStream(record.response, record.logprobs)

    def opening(self) -> list[bytes]:
        return [_frame(e) for e in self.shape.start()]

    def event(self, ev) -> list[bytes]:
        if isinstance(ev, Chunk) and ev.text:
            return [_frame(e) for e in self.shape.delta(ev.text, ev.logprobs)]
        if isinstance(ev, Reasoning) and ev.text:
            return [_frame(e) for e in self.shape.reasoning(ev.text)]
        if isinstance(ev, ToolCallDelta):
            return [_frame(e) for e in self.shape.call(ev)]
        return []

    async def done(self, done: Done) -> list[bytes]:
        closing = self.shape.end()
        final = await self.record.finish(self.shape.items, done)
        return [*map(_frame, closing), _frame(self.shape.finish(final))]

    async def error(self, err: PolyError) -> list[bytes]:
        return [_frame(self.shape.finish(await self.record.fail(err)))]

    def gone(self) -> None:  # the stored response must not stay in_progress
        keep(self.record.fail(GONE))


def _frame(event: dict) -> bytes:
    return sse.json_event(event["type"], event)


class Background:
    """Responses running in this ingress replica's background, by id, so that a
    cancel reaches the generation (one on another replica is marked cancelled in
    the store, and its late result is dropped there)."""

    def __init__(self):
        self.running: dict[str, asyncio.Task] = {}

    def start(self, record: Record, start: Callable[[], Awaitable[tuple[AsyncGenerator, Callable[[], None]]]]) -> None:
        """``start()``: the stream once the model has accepted the prompt, and the release of its place."""
        async def run():
            try:
                await record.save({"status": "in_progress"})
                if record.response["status"] != "in_progress":
                    return  # cancelled while queued
                stream, release = await start()
                try:
                    output, done = await answer(stream, record.logprobs)
                finally:
                    release()
                    await stream.aclose()
                await record.finish(output, done)
            except asyncio.CancelledError:
                pass  # the cancel route has marked it cancelled
            except Exception as err:
                if not isinstance(err, PolyError):
                    log.exception("a background response failed")
                    err = PolyError("internal server error")
                await record.fail(err)
            finally:
                self.running.pop(record.rid, None)

        task = self.running[record.rid] = keep(run())

        async def cancelled() -> bool:
            return (await record.state.get(record.owner, RESPONSE, record.rid))["status"] == "cancelled"

        keep(watch(task, cancelled))

    def cancel(self, rid: str) -> None:
        task = self.running.pop(rid, None)
        if task is not None:
            task.cancel()
