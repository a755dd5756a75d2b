"""/v1/conversations and ``conversation`` on /v1/responses through the real
``openai`` package against the ASGI app and a real state store."""

import openai
import pytest
from test_responses_routes import client, server  # noqa: F401 (the fixture)


async def test_create_retrieve_update_delete(server):  # noqa: F811
    app, _ = server
    oai = client(app)
    conv = await oai.conversations.create(metadata={"topic": "demo"},
                                          items=[{"type": "message", "role": "user", "content": "Hello!"}])
    assert conv.id.startswith("conv_") and conv.metadata == {"topic": "demo"}
    assert (await oai.conversations.retrieve(conv.id)).model_dump() == conv.model_dump()
    updated = await oai.conversations.update(conv.id, metadata={"topic": "other"})
    assert updated.metadata == {"topic": "other"}
    items = await oai.conversations.items.list(conv.id)
    assert [(i.type, i.role, i.content[0].text) for i in items.data] == [("message", "user", "Hello!")]
    gone = await oai.conversations.delete(conv.id)
    assert gone.deleted and gone.id == conv.id
    with pytest.raises(openai.NotFoundError):
        await oai.conversations.retrieve(conv.id)
    with pytest.raises(openai.NotFoundError):
        await oai.conversations.items.list(conv.id)


async def test_items_add_list_paginate_retrieve_delete(server):  # noqa: F811
    app, _ = server
    oai = client(app)
    conv = await oai.conversations.create()
    added = await oai.conversations.items.create(conv.id, items=[
        {"type": "message", "role": "user", "content": f"line {n}"} for n in range(3)])
    assert [i.content[0].text for i in added.data] == ["line 0", "line 1", "line 2"]
    first = await oai.conversations.items.list(conv.id, limit=2, order="asc")
    assert [i.content[0].text for i in first.data] == ["line 0", "line 1"] and first.has_more
    rest = await oai.conversations.items.list(conv.id, limit=2, order="asc", after=first.data[-1].id)
    assert [i.content[0].text for i in rest.data] == ["line 2"] and not rest.has_more
    newest = await oai.conversations.items.list(conv.id)
    assert newest.data[0].content[0].text == "line 2"  # desc by default, as OpenAI lists
    one = await oai.conversations.items.retrieve(added.data[1].id, conversation_id=conv.id)
    assert one.content[0].text == "line 1"
    after = await oai.conversations.items.delete(added.data[1].id, conversation_id=conv.id)
    assert after.id == conv.id
    left = await oai.conversations.items.list(conv.id, order="asc")
    assert [i.content[0].text for i in left.data] == ["line 0", "line 2"]


async def test_a_response_in_a_conversation_reads_and_appends_its_items(server):  # noqa: F811
    app, model = server
    oai = client(app)
    conv = await oai.conversations.create(items=[{"type": "message", "role": "user", "content": "My name is Ada."},
                                                 {"type": "message", "role": "assistant", "content": "Hi Ada."}])
    r = await oai.responses.create(model="chat", input="What is my name?", conversation=conv.id)
    assert r.conversation.id == conv.id and r.output_text == "answer 1"
    assert model.requests[-1].text.startswith("My name is Ada.")
    items = await oai.conversations.items.list(conv.id, order="asc")
    assert [i.content[0].text for i in items.data] == ["My name is Ada.", "Hi Ada.", "What is my name?", "answer 1"]
    assert items.data[-1].id == r.output[0].id
    again = await oai.responses.create(model="chat", input="Again?", conversation={"id": conv.id}, stream=True)
    kinds = [event.type async for event in again]
    assert kinds[-1] == "response.completed"
    items = await oai.conversations.items.list(conv.id, order="asc")
    assert [i.content[0].text for i in items.data][-2:] == ["Again?", "answer 2"]
    assert "answer 1" in model.requests[-1].text


async def test_another_key_and_bad_input(server):  # noqa: F811
    app, _ = server
    mine, theirs = client(app, "key-1"), client(app, "key-2")
    conv = await mine.conversations.create(items=[{"type": "message", "role": "user", "content": "private"}])
    item = (await mine.conversations.items.list(conv.id)).data[0]
    for attempt in (theirs.conversations.retrieve(conv.id), theirs.conversations.items.list(conv.id),
                    theirs.conversations.update(conv.id, metadata={}), theirs.conversations.delete(conv.id),
                    theirs.conversations.items.retrieve(item.id, conversation_id=conv.id),
                    theirs.responses.create(model="m", input="x", conversation=conv.id)):
        with pytest.raises(openai.NotFoundError):
            await attempt
    other = await mine.conversations.create()
    with pytest.raises(openai.NotFoundError):  # an item of another conversation
        await mine.conversations.items.retrieve(item.id, conversation_id=other.id)
    with pytest.raises(openai.BadRequestError, match=r"items\[0\]\.role"):
        await mine.conversations.items.create(conv.id, items=[{"type": "message", "role": "robot", "content": "x"}])
    with pytest.raises(openai.BadRequestError, match="metadata"):
        await mine.conversations.create(metadata={f"k{i}": "v" for i in range(17)})
    with pytest.raises(openai.APIStatusError) as err:
        await mine.conversations.items.create(conv.id, items=[{"role": "user", "content": "x"}] * 21)
    assert err.value.status_code == 413
    with pytest.raises(openai.BadRequestError, match="previous_response_id"):
        r = await mine.responses.create(model="m", input="x")
        await mine.responses.create(model="m", input="y", conversation=conv.id, previous_response_id=r.id)
