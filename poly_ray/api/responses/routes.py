"""The Responses API: create (plain or streamed), retrieve, delete, input_items.

A response runs through the chat path the OpenAI chat route uses
(``backend.stream`` of a ``TurnRequest`` with the turns as messages), so a chained response's prompt is
the previous turns' text followed by the new input: the replica's cached
prefix is reused, and ``usage.input_tokens_details.cached_tokens`` says how much.

Each stored response is owned by the request's credential; another
credential's id reads as a missing one (404).
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import replace
from typing import Annotated, Any, Literal

from fastapi import Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from poly_ray.api.backend import require_state
from poly_ray.api.family import OPENAI
from poly_ray.api.fields import MAX_MESSAGES, Body, ListQuery, Metadata, Tokens, page
from poly_ray.api.openapi import AUTHORIZED, GENERATES, SSE, doc
from poly_ray.api.parsing import overrides_off_loop, parse_params
from poly_ray.api.services import Services, generation, services, stateful
from poly_ray.api.streaming import respond
from poly_ray.errors import BadRequest, PromptTooLong
from poly_ray.grammars import DEFAULT_CAPS, Caps
from poly_ray.state.kinds import CONVERSATION, INPUT, ITEM, RESPONSE
from poly_ray.state.store import UNFINISHED, new_id
from poly_ray.tasks.turn import TurnRequest, chain_key

from . import protocol, run
from .run import Earlier, Record, input_id

# include's one value with a meaning here; the others name outputs of OpenAI's built-in tools, of
# reasoning items and of image inputs, none of which a response here has: nothing to include.
LOGPROBS = "message.output_text.logprobs"


class PromptCacheOptions(BaseModel):
    """Hints about OpenAI's cache breakpoints (the prefix cache here keeps what it can by itself),
    but ``prewarm`` asks for no output at all."""

    prewarm: bool = False
    mode: str | None = None
    ttl: str | None = None
    comparison_response_id: str | None = None


class ResponseCreate(Body):
    """What the official client and the Agents SDK send (ResponseCreateParams): fields with
    a meaning here are honoured, pure hints accepted and ignored (docs/api/responses.md says
    which), and what would change the answer but cannot be done is refused naming the field."""

    model: str
    input: str | Annotated[list[Any], Field(max_length=MAX_MESSAGES)]
    instructions: str | None = None
    previous_response_id: str | None = None
    conversation: str | dict[str, Any] | None = None
    store: bool | None = None  # None: stored, as OpenAI does
    stream: bool = False
    max_output_tokens: Tokens | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    metadata: Metadata | None = None
    user: str | None = None
    prompt_cache_key: str | None = Field(None, max_length=256)  # as on chat: a routing key
    background: bool | None = None
    # flat function tools, checked by the chat path's rules (each problem named by its field)
    tools: list[Any] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    text: dict[str, Any] | None = None  # text.format: text, json_object or json_schema (grammar-enforced)
    include: list[str] | None = Field(None, max_length=64)
    top_logprobs: int | None = Field(None, ge=0, le=20)
    # auto: a prompt past the context loses its oldest turns; disabled (the default): a 400.
    truncation: Literal["auto", "disabled"] | None = None
    # A reasoning model's thinking: reasoning.effort (config.reasoning.EFFORT_BUDGETS; summary is a hint).
    reasoning: dict[str, Any] | None = None
    # Hints, accepted and ignored: the tier, abuse tracking, OpenAI's cache retention and access programs, built-in tools' call cap
    # (there are none), stream obfuscation (never added), image and background-window options.
    service_tier: str | None = None
    safety_identifier: str | None = Field(None, max_length=256)
    prompt_cache_retention: str | None = None
    prompt_cache_options: PromptCacheOptions | None = None
    access_programs: dict[str, Any] | None = None
    max_tool_calls: int | None = Field(None, ge=0)
    stream_options: dict[str, Any] | None = None
    image: dict[str, Any] | None = None
    background_options: dict[str, Any] | None = None
    # Would change the answer and cannot be done here: refused when set.
    prompt: dict[str, Any] | None = None  # a prompt template stored at OpenAI
    moderation: dict[str, Any] | None = None
    context_management: list[dict[str, Any]] | None = None  # compaction by a summary

    @property
    def stored(self) -> bool:
        return self.store is not False

    def refused(self) -> None:
        """BadRequest naming the first field set that would change the answer and cannot be done."""
        if self.prompt is not None:
            raise BadRequest("prompt: stored prompt templates are not supported; send the text as "
                             "instructions and input")
        if self.moderation is not None:
            raise BadRequest("moderation: no moderation model runs here")
        if self.context_management:
            raise BadRequest("context_management: compaction is not supported (truncation: 'auto' "
                             "drops the oldest turns instead)")
        if self.prompt_cache_options is not None and self.prompt_cache_options.prewarm:
            raise BadRequest("prompt_cache_options.prewarm: a response without output is not supported")

    @property
    def logprobs(self) -> int | None:
        """How many alternatives per token the output's logprobs show (None: no logprobs)."""
        if LOGPROBS in (self.include or ()) or self.top_logprobs is not None:
            return self.top_logprobs or 0
        return None

    def overrides(self, caps: Caps = DEFAULT_CAPS) -> dict:
        """The chat path's overrides; CPU-bound with tools or a schema (off the loop)."""
        self.refused()
        o: dict[str, Any] = {"max_tokens": self.max_output_tokens, "temperature": self.temperature, "top_p": self.top_p,
             "parallel_tool_calls": self.parallel_tool_calls, "logprobs": self.logprobs}
        if self.tools:
            protocol.flat_tools(self.tools)  # refused here naming the flat path, before anything is stored
            o["tools"] = protocol.chat_tools(self.tools)
        if self.tool_choice is not None:
            o["tool_choice"] = protocol.chat_tool_choice(self.tool_choice, self.tools)
        if (grammar := protocol.format_grammar(self.text, caps)) is not None:
            o["grammar"] = grammar
        if self.reasoning and self.reasoning.get("effort") is not None:
            o.update(reasoning_effort=self.reasoning["effort"], reasoning_field="reasoning.effort")
        return {k: v for k, v in o.items() if v is not None}

    def echoed(self) -> dict:
        """The request's fields the response object shows."""
        fmt = self.text.get("format") if self.text else None
        return {"tools": self.tools or [], "tool_choice": self.tool_choice or "auto",
                "parallel_tool_calls": self.parallel_tool_calls is not False, "background": bool(self.background),
                "text": {"format": fmt or {"type": "text"}}, "truncation": self.truncation or "disabled",
                "top_logprobs": self.top_logprobs, "prompt_cache_key": self.prompt_cache_key,
                "safety_identifier": self.safety_identifier, "reasoning": self.reasoning,
                "max_tool_calls": self.max_tool_calls, "service_tier": "default"}


def _conversation_id(value) -> str:
    cid = value.get("id") if isinstance(value, dict) else value
    if not isinstance(cid, str):
        raise BadRequest("conversation: a conversation id, or an object with its id")
    return cid


router = OPENAI.router()


async def _earlier(svc: Services, owner: str, body: ResponseCreate) -> Earlier:
    if body.previous_response_id is not None:
        if body.conversation is not None:
            raise BadRequest("conversation: not together with previous_response_id")
        # one call however long the chain: the store walks it (state/chains.py), bounded like an input
        chain = await require_state(svc.backend).chain(owner, body.previous_response_id, MAX_MESSAGES)
        previous = chain.previous
        if previous["status"] == "failed":  # its input may be what failed: never carried on
            raise BadRequest(f"previous_response_id: response '{previous['id']}' failed; continue from one that "
                             "completed", param="previous_response_id")
        return Earlier(chain.items, chain.root, previous=previous["id"], outputs=len(previous.get("output") or ()))
    if body.conversation is not None:
        cid = _conversation_id(body.conversation)
        state = require_state(svc.backend)
        await state.get(owner, CONVERSATION, cid)
        return Earlier(await state.all(owner, ITEM, parent=cid), cid, cid)
    return Earlier()


@router.post("/v1/responses", openapi_extra=doc(body=ResponseCreate, streams=SSE, errors=GENERATES))
async def create(request: Request):
    svc, who, body = await generation(request, ResponseCreate)
    owner = who.owner
    if body.background and (body.stream or not body.stored):
        raise BadRequest("background: needs store = true and stream = false (poll the response instead)")
    _fits(svc, body)
    overrides = await overrides_off_loop(request.app, body)
    items = protocol.input_items(body.input)
    earlier = await _earlier(svc, owner, body)
    cid = earlier.conversation
    turns = protocol.to_turns(earlier.items + items)
    if body.instructions:  # not carried over from the previous response, as OpenAI does
        turns = [("system", body.instructions), *turns]
    rid = new_id("resp")
    chain = earlier.chain or rid
    # The chain's turns go to the model replica that holds its prefix (a prompt_cache_key
    # names another chain).
    overrides = replace(overrides, session=chain_key(owner, "pck", body.prompt_cache_key)
                        or chain_key(owner, "chain", chain))
    fields = {"instructions": body.instructions, "previous_response_id": body.previous_response_id,
              "store": body.stored, "max_output_tokens": body.max_output_tokens,
              "temperature": body.temperature, "top_p": body.top_p, "metadata": body.metadata or {},
              "user": body.user, "conversation": {"id": cid} if cid else None, **body.echoed()}
    record = Record(require_state(svc.backend) if body.stored else None, owner, rid, body.model, fields,
                    status="queued" if body.background else "in_progress", logprobs=body.logprobs is not None)
    if cid is not None:  # the turn joins the conversation once it is done
        record.conversation = (require_state(svc.backend), cid, items)
    await record.begin(items, earlier, chain)
    turn = TurnRequest(body.model, messages=tuple(turns), overrides=overrides, owner=owner)

    def start() -> Awaitable[tuple[AsyncGenerator, Callable[[], None]]]:
        return _start(svc, who.credential, turn, truncate=body.truncation == "auto",
                      kept=1 if body.instructions else 0)

    if body.background:
        svc.background.start(record, start)
        return JSONResponse(record.response)
    async with run.failing(record):
        events, release = await start()
    if not body.stream:
        try:
            async with run.failing(record):
                output, done = await run.answer(events, record.logprobs)
        finally:
            release()
        return JSONResponse(await record.finish(output, done))
    return respond(events, run.Framer(record), release)


# No token of any vocabulary here is longer: an input with more characters than this many per
# token of context cannot fit, and is refused before anything is stored or tokenized.
MAX_CHARS_PER_TOKEN = 32


def _fits(svc: Services, body: ResponseCreate) -> None:
    context = svc.config.context_of(body.model)
    if context is None:
        return
    chars = len(body.input) if isinstance(body.input, str) else len(json.dumps(body.input))
    if chars > context * MAX_CHARS_PER_TOKEN:
        raise PromptTooLong(f"input: {chars} characters cannot fit the context of '{body.model}' ({context} tokens)",
                            param="input")


async def _start(svc: Services, credential: str | None, turn: TurnRequest, *, truncate: bool,
                 kept: int) -> tuple[AsyncGenerator, Callable[[], None]]:
    """The turn's stream once the model has accepted its prompt, and the release of its place.
    With truncation 'auto' a prompt too long for the context loses its oldest turns (1, 2, 4 ...
    of them, past the ``kept`` first: the instructions) until it fits; the newest turn stays."""
    messages = turn.messages or ()
    dropped = 0
    while True:
        events = svc.backend.stream(replace(turn, messages=messages[:kept] + messages[kept + dropped:]))
        try:
            _, release = await svc.limits.accepted(events, credential)
            return events, release
        except BaseException as err:
            await events.aclose()
            droppable = len(messages) - kept - 1
            if not (truncate and isinstance(err, PromptTooLong)) or dropped >= droppable:
                raise
            dropped = min(2 * dropped or 1, droppable)


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
    # its input goes with it (a child); kept hidden while a later response continues it
    await state.delete(who.owner, RESPONSE, rid)
    return {"id": rid, "object": "response.deleted", "deleted": True}


@router.get("/v1/responses/{rid}/input_items", openapi_extra=doc(query=ListQuery, errors=AUTHORIZED))
async def input_items(request: Request, rid: str):
    state, who = stateful(request)
    owner = who.owner
    query = await parse_params(request, ListQuery)
    await state.get(owner, RESPONSE, rid)
    stored = await state.get(owner, INPUT, input_id(rid))
    return page(stored["items"], query)
