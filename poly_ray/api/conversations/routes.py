"""The Conversations API: conversations (create, retrieve, update, delete) and
their items (list, add, retrieve, delete), in the state store, owned by the
request's credential. A response created with ``conversation`` reads the items
as its context and appends its input and output (responses/routes.py)."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from pydantic import BaseModel, ConfigDict, Field

from poly_ray.api.backend import require_state
from poly_ray.api.family import OPENAI
from poly_ray.api.fields import ListQuery
from poly_ray.api.openapi import AUTHORIZED, WITH_BODY, doc
from poly_ray.api.parsing import parse_params
from poly_ray.api.responses.run import append
from poly_ray.api.services import services, stateful
from poly_ray.errors import NotFound
from poly_ray.state.kinds import CONVERSATION, ITEM

from . import channels, protocol


class ConversationCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    items: list[Any] | None = None
    metadata: dict[str, Any] | None = None
    safety_identifier: str | None = None  # accepted, not used


class ConversationUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    metadata: dict[str, Any] | None = Field(...)


class ItemsCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    items: list[Any]


def _list(items: list[dict]) -> dict:
    return {"object": "list", "data": items, "first_id": items[0]["id"] if items else None,
            "last_id": items[-1]["id"] if items else None, "has_more": False}


router = OPENAI.router()


async def item_of(request: Request, cid: str, iid: str) -> tuple[Any, str, dict]:
    state, who = stateful(request)
    owner = who.owner
    await state.get(owner, CONVERSATION, cid)
    item = await state.get(owner, ITEM, iid)
    if await state.parent_of(owner, ITEM, iid) != cid:
        raise NotFound(f"No item found with id '{iid}'.")
    return state, owner, item


@router.post("/v1/conversations", openapi_extra=doc(body=ConversationCreate, errors=WITH_BODY))
async def create(request: Request):
    svc = services(request)
    owner = svc.access.principal(request).owner
    body = await parse_params(request, ConversationCreate)
    meta = protocol.metadata(body.metadata)
    items = protocol.new_items(body.items)
    state = require_state(svc.backend)
    conversation = await state.create(owner, CONVERSATION, protocol.conversation_object(meta))
    await append(state, owner, conversation["id"], items)
    return conversation


# Before the /{cid} routes: "by_channel" is not an id.
@router.post("/v1/conversations/by_channel", openapi_extra=doc(body=channels.ChannelKey, errors=WITH_BODY))
async def by_channel(request: Request):
    """The conversation of a (user, channel) pair, started if it has none (channels.py)."""
    state, who = stateful(request)
    body = await parse_params(request, channels.ChannelKey)
    return await channels.find_or_start(state, who.owner, body)


@router.get("/v1/conversations/{cid}", openapi_extra=doc(errors=AUTHORIZED))
async def retrieve(request: Request, cid: str):
    state, who = stateful(request)
    return await state.get(who.owner, CONVERSATION, cid)


@router.post("/v1/conversations/{cid}", openapi_extra=doc(body=ConversationUpdate, errors=WITH_BODY))
async def update(request: Request, cid: str):
    state, who = stateful(request)
    body = await parse_params(request, ConversationUpdate)
    return await state.update(who.owner, CONVERSATION, cid, {"metadata": protocol.metadata(body.metadata)})


@router.delete("/v1/conversations/{cid}", openapi_extra=doc(errors=AUTHORIZED))
async def delete(request: Request, cid: str):
    state, who = stateful(request)
    await state.delete(who.owner, CONVERSATION, cid)  # items with it
    return protocol.deleted(cid)


@router.get("/v1/conversations/{cid}/items", openapi_extra=doc(query=ListQuery, errors=AUTHORIZED))
async def list_items(request: Request, cid: str):
    state, who = stateful(request)
    owner = who.owner
    query = await parse_params(request, ListQuery)
    await state.get(owner, CONVERSATION, cid)
    return await state.list(owner, ITEM, parent=cid, **query.page())


@router.post("/v1/conversations/{cid}/items", openapi_extra=doc(body=ItemsCreate, errors=WITH_BODY))
async def add_items(request: Request, cid: str):
    svc = services(request)
    owner = svc.access.principal(request).owner
    body = await parse_params(request, ItemsCreate)
    items = protocol.new_items(body.items)
    state = require_state(svc.backend)
    await state.get(owner, CONVERSATION, cid)
    return _list(await append(state, owner, cid, items))


@router.get("/v1/conversations/{cid}/items/{iid}", openapi_extra=doc(errors=AUTHORIZED))
async def retrieve_item(request: Request, cid: str, iid: str):
    _, _, item = await item_of(request, cid, iid)
    return item


@router.delete("/v1/conversations/{cid}/items/{iid}", openapi_extra=doc(errors=AUTHORIZED))
async def delete_item(request: Request, cid: str, iid: str):
    state, owner, _ = await item_of(request, cid, iid)
    await state.delete(owner, ITEM, iid)
    return await state.get(owner, CONVERSATION, cid)  # OpenAI answers with the conversation
