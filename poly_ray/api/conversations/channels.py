"""A conversation per (user, channel), as the Go ``llm`` package's ``Memory.Get(user,
channel)`` keeps them: ``POST /v1/conversations/by_channel`` with ``{"user", "channel"}``
finds that pair's conversation, or starts it. Like every conversation it is the
credential's own: another key's same pair is another conversation, and another key
never sees this one.

The pair's conversation has an id derived from the credential and the pair, so finding
it is one read and two callers starting it at once make one (the second insert fails and
reads the first's). Its last update is the time of its newest item, read when asked, so
nothing that appends items (responses, items.create) has to remember to touch it.
"""

from __future__ import annotations

import hashlib

from pydantic import BaseModel, ConfigDict, Field

from poly_ray.errors import BadRequest, NotFound
from poly_ray.state.kinds import CONVERSATION, ITEM

from . import protocol


class ChannelKey(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user: str = Field(min_length=1, max_length=protocol.MAX_VALUE_CHARS)
    channel: str = Field(min_length=1, max_length=protocol.MAX_VALUE_CHARS)


def channel_id(owner: str, key: ChannelKey) -> str:
    # Length-prefixed parts, so ("a|b", "c") and ("a", "b|c") are two pairs.
    parts = [owner, key.user, key.channel]
    digest = hashlib.sha256("".join(f"{len(p)}:{p}" for p in parts).encode()).hexdigest()
    return f"conv_ch_{digest[:40]}"


async def find_or_start(state, owner: str, key: ChannelKey) -> dict:
    """The pair's conversation (started now if it had none), with its pair, the time it
    started and the time of its last update (Unix seconds)."""
    cid = channel_id(owner, key)
    started = False
    try:
        conversation = await state.get(owner, CONVERSATION, cid)
    except NotFound:
        body = protocol.conversation_object({"user": key.user, "channel": key.channel}, cid=cid)
        try:
            conversation, started = await state.create(owner, CONVERSATION, body), True
        except BadRequest:  # started by another request meanwhile: the same id exists now
            conversation = await state.get(owner, CONVERSATION, cid)
    newest = (await state.list(owner, ITEM, parent=cid, limit=1, order="desc"))["data"]
    last = max([conversation["created_at"], *(item.get("created_at", 0) for item in newest)])
    return {**conversation, "user": key.user, "channel": key.channel, "started_at": conversation["created_at"],
            "last_update_at": last, "started": started}
