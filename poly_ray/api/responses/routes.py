"""The Responses API: create (plain or streamed), retrieve, delete, input_items.

A response runs through the chat path the OpenAI chat route uses
(``backend.stream`` of a ``TurnRequest`` with the turns as messages), so a chained response's prompt is
the previous turns' text followed by the new input: the replica's cached
prefix is reused, and ``usage.input_tokens_details.cached_tokens`` says how much.

Each stored response is owned by the request's credential; another
credential's id reads as a missing one (404).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse
from pydantic import Field

from poly_ray.api.backend import require_state
from poly_ray.api.family import OPENAI
from poly_ray.api.fields import Body, ListQuery, Metadata, Tokens, page
from poly_ray.api.openapi import AUTHORIZED, GENERATES, SSE, doc
from poly_ray.api.parsing import overrides_off_loop, parse_params
from poly_ray.api.services import Services, generation, services, stateful
from poly_ray.api.streaming import respond
from poly_ray.errors import BadRequest
from poly_ray.grammars import DEFAULT_CAPS, Caps
from poly_ray.state.kinds import CONVERSATION, INPUT, ITEM, RESPONSE
from poly_ray.state.store import UNFINISHED, new_id
from poly_ray.tasks.turn import TurnRequest, chain_key

from . import protocol, run
from .run import Record, input_id


class ResponseCreate(Body):
    # Unsupported fields are refused naming the field, never ignored (Body).
    model: str
    input: str | list[Any]
    instructions: str | None = None
    previous_response_id: str | None = None
    conversation: str | dict[str, Any] | None = None
    store: bool = True
    stream: bool = False
    max_output_tokens: Tokens | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    metadata: Metadata | None = None
    user: str | None = None
    prompt_cache_key: str | None = Field(None, max_length=256)  # as on chat: a routing key
    background: bool = False
    # flat function tools, checked by the chat path's rules (each problem named by its field)
    tools: list[Any] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    text: dict[str, Any] | None = None  # text.format: text, json_object or json_schema (grammar-enforced)

    def overrides(self, caps: Caps = DEFAULT_CAPS) -> dict:
        """The chat path's overrides; CPU-bound with tools or a schema (off the loop)."""
        o: dict[str, Any] = {"max_tokens": self.max_output_tokens, "temperature": self.temperature, "top_p": self.top_p,
             "parallel_tool_calls": self.parallel_tool_calls}
        if self.tools:
            protocol.flat_tools(self.tools)  # refused here naming the flat path, before anything is stored
            o["tools"] = protocol.chat_tools(self.tools)
        if self.tool_choice is not None:
            o["tool_choice"] = protocol.chat_tool_choice(self.tool_choice, self.tools)
        if (grammar := protocol.format_grammar(self.text, caps)) is not None:
            o["grammar"] = grammar
        return {k: v for k, v in o.items() if v is not None}

    def echoed(self) -> dict:
        """The request's fields the response object shows."""
        return {"tools": self.tools or [], "tool_choice": self.tool_choice or "auto",
                "parallel_tool_calls": self.parallel_tool_calls is not False, "background": self.background,
                "text": self.text if self.text and self.text.get("format") else {"format": {"type": "text"}}}


def _conversation_id(value) -> str:
    cid = value.get("id") if isinstance(value, dict) else value
    if not isinstance(cid, str):
        raise BadRequest("conversation: a conversation id, or an object with its id")
    return cid


router = OPENAI.router()


async def _earlier(svc: Services, owner: str, body: ResponseCreate) -> tuple[list[dict], str | None, str | None]:
    """What the response continues: the earlier items (of its previous response's chain, or
    of its conversation), the chain's routing key (its first response, or the conversation)
    and the conversation's id."""
    if body.previous_response_id is not None:
        if body.conversation is not None:
            raise BadRequest("conversation: not together with previous_response_id")
        state = require_state(svc.backend)
        previous = await state.get(owner, RESPONSE, body.previous_response_id)
        stored = await state.get(owner, INPUT, input_id(previous["id"]))
        return stored["history"] + stored["items"] + previous["output"], stored.get("chain") or previous["id"], None
    if body.conversation is not None:
        cid = _conversation_id(body.conversation)
        state = require_state(svc.backend)
        await state.get(owner, CONVERSATION, cid)
        return await state.all(owner, ITEM, parent=cid), cid, cid
    return [], None, None


@router.post("/v1/responses", openapi_extra=doc(body=ResponseCreate, streams=SSE, errors=GENERATES))
async def create(request: Request):
    svc, who, body = await generation(request, ResponseCreate)
    owner = who.owner
    if body.background and (body.stream or not body.store):
        raise BadRequest("background: needs store = true and stream = false (poll the response instead)")
    overrides = await overrides_off_loop(request.app, body)
    items = protocol.input_items(body.input)
    history, chain, cid = await _earlier(svc, owner, body)
    turns = protocol.to_turns(history + items)
    if body.instructions:  # not carried over from the previous response, as OpenAI does
        turns = [("system", body.instructions), *turns]
    rid = new_id("resp")
    chain = chain or rid
    # The chain's turns go to the model replica that holds its prefix (a prompt_cache_key
    # names another chain).
    overrides = replace(overrides, session=chain_key(owner, "pck", body.prompt_cache_key)
                        or chain_key(owner, "chain", chain))
    fields = {"instructions": body.instructions, "previous_response_id": body.previous_response_id,
              "store": body.store, "max_output_tokens": body.max_output_tokens,
              "temperature": body.temperature, "top_p": body.top_p, "metadata": body.metadata or {},
              "user": body.user, "conversation": {"id": cid} if cid else None, **body.echoed()}
    record = Record(require_state(svc.backend) if body.store else None, owner, rid, body.model, fields,
                    status="queued" if body.background else "in_progress")
    if cid is not None:  # the turn joins the conversation once it is done
        record.conversation = (require_state(svc.backend), cid, items)
    await record.begin(items, history, chain)
    turn = TurnRequest(body.model, messages=tuple(turns), overrides=overrides, owner=owner)
    if body.background:
        svc.background.start(record, lambda: svc.backend.stream(turn),
                             lambda events: svc.limits.accepted(events, who.credential))
        return JSONResponse(record.response)
    events = svc.backend.stream(turn)
    async with run.failing(record):
        _, release = await svc.limits.accepted(events, who.credential)
    if not body.stream:
        try:
            async with run.failing(record):
                output, done = await run.answer(events)
        finally:
            release()
        return JSONResponse(await record.finish(output, done))
    return respond(events, run.Framer(record), release)


@router.post("/v1/responses/{rid}/cancel", openapi_extra=doc(errors=AUTHORIZED))
async def cancel(request: Request, rid: str):
    """Cancel a background response: queued or in progress, it ends ``cancelled``;
    one already finished is returned as it is."""
    state, who = stateful(request)
    owner = who.owner
    response = await state.get(owner, RESPONSE, rid)
    if not response.get("background"):
        raise BadRequest("only a response created with background = true can be cancelled")
    if response["status"] in UNFINISHED:
        response = await state.update(owner, RESPONSE, rid, {"status": "cancelled"}, only_if=UNFINISHED)
        services(request).background.cancel(rid)
    return response


@router.get("/v1/responses/{rid}", openapi_extra=doc(errors=AUTHORIZED))
async def retrieve(request: Request, rid: str):
    state, who = stateful(request)
    return await state.get(who.owner, RESPONSE, rid)


@router.delete("/v1/responses/{rid}", openapi_extra=doc(errors=AUTHORIZED))
async def delete(request: Request, rid: str):
    state, who = stateful(request)
    await state.delete(who.owner, RESPONSE, rid)  # its input goes with it (a child)
    return {"id": rid, "object": "response.deleted", "deleted": True}


@router.get("/v1/responses/{rid}/input_items", openapi_extra=doc(query=ListQuery, errors=AUTHORIZED))
async def input_items(request: Request, rid: str):
    state, who = stateful(request)
    owner = who.owner
    query = await parse_params(request, ListQuery)
    await state.get(owner, RESPONSE, rid)
    stored = await state.get(owner, INPUT, input_id(rid))
    return page(stored["items"], query)
