"""The Responses API: create (plain or streamed), retrieve, delete, input_items.

A response runs through the chat path the OpenAI chat route uses
(``backend.stream_target`` with the turns), so a chained response's prompt is
the previous turns' text followed by the new input: the replica's cached
prefix is reused, and ``usage.input_tokens_details.cached_tokens`` says how much.

Each stored response is owned by the request's credential; another
credential's id reads as a missing one (404).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from poly_ray.api.auth import Access, Principal, owner_of
from poly_ray.api.limits import StreamLimits
from poly_ray.api.openapi import AUTHORIZED, GENERATES, SSE, doc
from poly_ray.api.parsing import parse_params
from poly_ray.api.streaming import GenerationStream
from poly_ray.errors import BadRequest, Busy, NotFound, PolyError
from poly_ray.generation import Chunk, Done
from poly_ray.state.store import new_id

from . import protocol

RESPONSE, INPUT = "response", "response_input"
CONVERSATION, ITEM = "conversation", "item"


class ResponseCreate(BaseModel):
    # Unsupported fields (tools, text.format...) are refused naming the field, never ignored.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    model: str
    input: str | list[Any]
    instructions: str | None = None
    previous_response_id: str | None = None
    conversation: str | dict[str, Any] | None = None
    store: bool = True
    stream: bool = False
    max_output_tokens: int | None = Field(None, ge=1, le=1 << 20)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    metadata: dict[str, str] | None = None
    user: str | None = None

    def overrides(self) -> dict:
        o = {"max_tokens": self.max_output_tokens, "temperature": self.temperature, "top_p": self.top_p}
        return {k: v for k, v in o.items() if v is not None}


class ItemsQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    limit: int = Field(20, ge=1, le=100)
    after: str | None = None
    order: str = Field("desc", pattern="^(asc|desc)$")
    include: list[str] | None = None


def _input_id(rid: str) -> str:
    return "in_" + rid.removeprefix("resp_")


def state_of(backend):
    state = getattr(backend, "state", None)
    if state is None:
        raise Busy("the state store is not available on this server (no state deployment)")
    return state


async def append(state, owner: str, cid: str, items: list[dict], *, fresh: bool = True) -> list[dict]:
    """Store items under a conversation, in order. A client's item gets a fresh id:
    one sent again (an earlier output as input) is a new entry, never a clash."""
    prefixes = {"function_call": "fc", "function_call_output": "fco"}
    return [await state.create(owner, ITEM, dict(item, id=new_id(prefixes.get(item["type"], "msg"))) if fresh
                               else item, parent=cid) for item in items]


def _conversation_id(value) -> str:
    cid = value.get("id") if isinstance(value, dict) else value
    if not isinstance(cid, str):
        raise BadRequest("conversation: a conversation id, or an object with its id")
    return cid


def page(items: list[dict], limit: int, after: str | None, order: str) -> dict:
    """A list body over items held in one object (a response's input)."""
    ordered = items if order == "asc" else items[::-1]
    if after is not None:
        ids = [i["id"] for i in ordered]
        if after not in ids:
            raise NotFound(f"No item found with id '{after}'.")
        ordered = ordered[ids.index(after) + 1:]
    data = ordered[:limit]
    return {"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None, "has_more": len(ordered) > limit}


def register(app: FastAPI, backend, access: Access, slots: StreamLimits) -> None:
    def store_of():
        return state_of(backend)

    async def target(who: Principal, name: str) -> None:
        if name in await backend.tasks():
            who.check("task", name)
        elif name in await backend.models():
            who.check("model", name)
        else:
            raise NotFound(f"model '{name}' does not exist (neither a task nor a model)")

    @app.post("/v1/responses", openapi_extra=doc(family="openai", body=ResponseCreate, streams=SSE, errors=GENERATES))
    async def create(request: Request):
        who = access.principal(request)
        body = await parse_params(request, ResponseCreate)
        owner = owner_of(who)
        await target(who, body.model)
        items = protocol.input_items(body.input)
        history: list[dict] = []
        if body.previous_response_id is not None:
            state = store_of()
            previous = await state.get(owner, RESPONSE, body.previous_response_id)
            stored = await state.get(owner, INPUT, _input_id(previous["id"]))
            history = stored["history"] + stored["items"] + previous["output"]
        cid = None
        if body.conversation is not None:
            if body.previous_response_id is not None:
                raise BadRequest("conversation: not together with previous_response_id")
            cid = _conversation_id(body.conversation)
            state = store_of()
            await state.get(owner, CONVERSATION, cid)
            history = await state.all(owner, ITEM, parent=cid)
        turns = protocol.to_turns(history + items)
        if body.instructions:  # not carried over from the previous response, as OpenAI does
            turns = [("system", body.instructions), *turns]
        rid = new_id("resp")
        fields = {"instructions": body.instructions, "previous_response_id": body.previous_response_id,
                  "store": body.store, "max_output_tokens": body.max_output_tokens,
                  "temperature": body.temperature, "top_p": body.top_p, "metadata": body.metadata or {},
                  "user": body.user, "conversation": {"id": cid} if cid else None}
        record = Record(store_of() if body.store else None, owner, rid, body.model, fields)
        if cid is not None:  # the turn joins the conversation once it is done
            record.conversation = (store_of(), cid, items)
        await record.begin(items, history)
        events = backend.stream_target(body.model, None, turns, body.overrides())
        try:
            _, release = await slots.accepted(events, who.credential)
        except PolyError as err:
            await record.fail(err)
            raise
        if not body.stream:
            try:
                text, done = await _gather(events)
            except PolyError as err:
                await record.fail(err)
                raise
            finally:
                release()
            return JSONResponse(await record.finish(text, done))
        return GenerationStream(_stream(events, record, release), events=events, release=release,
                                media_type="text/event-stream",
                                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @app.get("/v1/responses/{rid}", openapi_extra=doc(family="openai", errors=AUTHORIZED))
    async def retrieve(request: Request, rid: str):
        owner = owner_of(access.principal(request))
        return await store_of().get(owner, RESPONSE, rid)

    @app.delete("/v1/responses/{rid}", openapi_extra=doc(family="openai", errors=AUTHORIZED))
    async def delete(request: Request, rid: str):
        owner = owner_of(access.principal(request))
        await store_of().delete(owner, RESPONSE, rid)  # its input goes with it (a child)
        return {"id": rid, "object": "response.deleted", "deleted": True}

    @app.get("/v1/responses/{rid}/input_items", openapi_extra=doc(family="openai", query=ItemsQuery, errors=AUTHORIZED))
    async def input_items(request: Request, rid: str):
        owner = owner_of(access.principal(request))
        query = await parse_params(request, ItemsQuery)
        state = store_of()
        await state.get(owner, RESPONSE, rid)
        stored = await state.get(owner, INPUT, _input_id(rid))
        return page(stored["items"], query.limit, query.after, query.order)


class Record:
    """One response's life in the store (or only in memory with ``store: false``):
    in_progress first, so a server that stops mid-generation leaves it to the
    restart sweep (failed), never stuck; then completed, incomplete or failed."""

    def __init__(self, state, owner: str, rid: str, model: str, fields: dict):
        self.state, self.owner, self.rid, self.fields = state, owner, rid, fields
        self.response = protocol.response_object(rid, model, status="in_progress", output=[], **fields)
        self.conversation = None  # (state, conversation id, input items) to append to when done

    async def begin(self, items: list[dict], history: list[dict]) -> None:
        if self.state is None:
            return
        await self.state.create(self.owner, RESPONSE, self.response)
        await self.state.create(self.owner, INPUT, {"id": _input_id(self.rid), "items": items, "history": history},
                                parent=self.rid)

    async def _save(self, changes: dict) -> dict:
        self.response = dict(self.response, **changes)
        if self.state is not None:
            self.response = await self.state.update(self.owner, RESPONSE, self.rid, changes)
        return self.response

    async def finish(self, text: str, done: Done, item_id: str | None = None) -> dict:
        usage = protocol.usage(done.prompt_tokens, done.completion_tokens, int(done.timings.get("cached_tokens") or 0))
        incomplete = done.finish_reason == "length"
        output = [protocol.output_message(text, item_id=item_id)]
        if self.conversation is not None:
            state, cid, items = self.conversation
            await append(state, self.owner, cid, items)
            await append(state, self.owner, cid, output, fresh=False)  # the ids the response shows
        return await self._save({
            "status": "incomplete" if incomplete else "completed",
            "incomplete_details": {"reason": "max_output_tokens"} if incomplete else None,
            "output": output, "usage": usage,
        })

    async def fail(self, err: PolyError) -> dict:
        return await self._save({"status": "failed", "error": {"code": err.code, "message": err.message}})


async def _gather(events) -> tuple[str, Done]:
    text = []
    async for ev in events:
        if isinstance(ev, Chunk):
            text.append(ev.text)
        elif isinstance(ev, Done):
            return "".join(text), ev
    raise PolyError("the generation ended without finishing")


GONE = PolyError("the client went away before the response was complete")
_ending: set = set()  # the tasks that mark abandoned responses failed, kept until done


async def _stream(events, record: Record, on_close) -> AsyncIterator[bytes]:
    def frame(event: dict) -> bytes:
        return f"event: {event['type']}\ndata: {json.dumps(event, separators=(',', ':'))}\n\n".encode()

    shape = protocol.EventStream(record.response)
    final = None
    try:
        for event in shape.start():
            yield frame(event)
        async for ev in events:
            if isinstance(ev, Chunk) and ev.text:
                yield frame(shape.delta(ev.text))
            elif isinstance(ev, Done):
                final = await record.finish("".join(shape.text), ev, item_id=shape.item["id"])
                break
        if final is None:
            raise PolyError("the generation ended without finishing")
    except Exception as err:
        if not isinstance(err, PolyError):
            err = PolyError("internal server error")
        final = await record.fail(err)
    finally:
        on_close()
        if final is None:  # the client went away (cancelled): the stored response must not stay in_progress
            _ending.add(task := asyncio.get_running_loop().create_task(record.fail(GONE)))
            task.add_done_callback(_ending.discard)
        await events.aclose()
    for event in shape.finish(final):
        yield frame(event)
