"""A conversation per (user, channel), the Go llm package's Memory.Get(user, channel),
through the real ``openai`` package against the ASGI app and a real state store: found
or started, with its start and last-update times, owned by the credential."""

import asyncio
import time

import openai
import pytest
from test_responses_routes import client, server  # noqa: F401 (the fixture)


async def by_channel(oai, **body) -> dict:
    return await oai.post("/conversations/by_channel", body=body, cast_to=object)


async def test_the_pair_finds_its_conversation_or_starts_it(server):  # noqa: F811
    app, _ = server
    oai = client(app)
    first = await by_channel(oai, user="ada", channel="#general")
    assert first["started"] and first["object"] == "conversation" and first["id"].startswith("conv_")
    assert (first["user"], first["channel"]) == ("ada", "#general")
    assert first["started_at"] == first["created_at"] == first["last_update_at"]
    assert first["metadata"] == {"user": "ada", "channel": "#general"}
    # Its messages go through the Conversations and Responses APIs like any conversation's;
    # a second later (times are whole seconds), its last update is its newest item's time.
    while int(time.time()) <= first["started_at"]:
        await asyncio.sleep(0.05)
    await oai.conversations.items.create(first["id"], items=[{"type": "message", "role": "user", "content": "Hi!"}])
    r = await oai.responses.create(model="chat", input="Still there?", conversation=first["id"])
    again = await by_channel(oai, user="ada", channel="#general")
    assert again["id"] == first["id"] and not again["started"] and again["started_at"] == first["started_at"]
    newest = await oai.get(f"/conversations/{first['id']}/items/{r.output[0].id}", cast_to=object)
    assert again["last_update_at"] == newest["created_at"] > again["started_at"]
    # Another channel, another user, a pair that joins to the same text: each its own.
    ids = {first["id"]}
    for user, channel in (("ada", "#random"), ("bob", "#general"), ("ada|#", "general"), ("ada", "|#general")):
        ids.add((await by_channel(oai, user=user, channel=channel))["id"])
    assert len(ids) == 5


async def test_another_key_has_its_own_and_never_sees_this_one(server):  # noqa: F811
    app, _ = server
    mine, theirs = client(app, "key-1"), client(app, "key-2")
    conv = await by_channel(mine, user="ada", channel="dm")
    other = await by_channel(theirs, user="ada", channel="dm")
    assert other["id"] != conv["id"] and other["started"]
    with pytest.raises(openai.NotFoundError):
        await theirs.conversations.retrieve(conv["id"])
    with pytest.raises(openai.NotFoundError):
        await theirs.conversations.items.list(conv["id"])


@pytest.mark.parametrize(("body", "field"), [
    ({"channel": "x"}, "user"), ({"user": "", "channel": "x"}, "user"), ({"user": "a", "channel": 5}, "channel"),
    ({"user": "a", "channel": "x" * 513}, "channel"), ({"user": "a", "channel": "x", "topic": "t"}, "topic"),
])
async def test_bad_input_is_a_400_naming_the_field(server, body, field):  # noqa: F811
    app, _ = server
    with pytest.raises(openai.BadRequestError, match=field):
        await by_channel(client(app), **body)
