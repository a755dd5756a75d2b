"""Durable ingestion jobs: a 202 job outlives the memory service (real Qdrant Edge
shards, real Gemma embeddings, the job store's SQLite file and bytes on disk).

A restart here is what a process that stops does to the service: its tasks are
cancelled, its stores closed, and a new service opens the same folders.
"""

import asyncio

import pytest
from test_memory import memory_config

from poly_ray.errors import TooMany
from poly_ray.memory.jobs import JobStore
from poly_ray.memory.memory import Memory, Upload
from poly_ray.memory.service import MemoryService
from poly_ray.memory.vectorstore import EdgeStore

pytestmark = pytest.mark.model
TEXT = b"The lighthouse keeper feeds the gulls at dawn. " * 20


@pytest.fixture(scope="module")
def embedder(gemma_path):
    from poly_ray.engine.embedder import Embedder

    e = Embedder(gemma_path, context_size=512, threads=2, own_pooling=False, name="gemma")
    yield e
    e.close()


class Server:
    """One run of the memory service over folders that outlive it."""

    def __init__(self, embedder, root, *, hold: asyncio.Event | None = None, memories=("docs",), max_jobs=16):
        async def embed(texts):
            if hold is not None:
                await hold.wait()
            return await asyncio.to_thread(embedder.embed, texts)

        self.memories = {
            name: Memory(name, memory_config(), store=EdgeStore(name, root / name, 640), embed=embed,
                         count=lambda t: len(embedder.tokenize(t)))
            for name in memories
        }
        self.service = MemoryService(self.memories, JobStore(root / "jobs"), max_jobs=max_jobs)

    async def stop(self):
        """What a process that ends does: its work cancelled mid-way, its files let go."""
        for task in list(self.service._tasks):
            task.cancel()
        await asyncio.gather(*self.service._tasks, return_exceptions=True)
        self.service.close()


async def finished(service, memory, job):
    for _ in range(300):
        state = await service.job(memory, job)
        if state["state"] != "running":
            return state
        await asyncio.sleep(0.05)
    raise AssertionError(state)


async def test_a_job_accepted_then_interrupted_is_resumed_after_a_restart(embedder, tmp_path):
    first = Server(embedder, tmp_path, hold=asyncio.Event())  # embedding never ends in the first run
    started = await first.service.ingest("docs", [Upload(TEXT, "text/plain", "keeper.txt")], wait=False)
    job = started["job"]
    await asyncio.sleep(0.2)
    await first.stop()
    assert (tmp_path / "jobs" / job).is_dir()  # its bytes are kept until it is done

    second = Server(embedder, tmp_path)
    assert await second.service.resume() == [job]
    state = await finished(second.service, "docs", job)
    assert state["state"] == "done" and state["attempts"] == 2, state
    [doc] = state["result"]["documents"]
    assert doc["stored"] and doc["source"] == "keeper.txt"
    assert (await second.service.info("docs"))["chunks"] == doc["chunks"]
    assert not (tmp_path / "jobs" / job).exists()
    await second.stop()

    third = Server(embedder, tmp_path)  # a finished job's record outlives the next restart too
    assert await third.service.resume() == []
    assert (await third.service.job("docs", job))["state"] == "done"
    await third.stop()


async def test_a_job_that_cannot_resume_fails_with_its_reason(embedder, tmp_path):
    import shutil

    first = Server(embedder, tmp_path, hold=asyncio.Event(), memories=("docs", "notes"))
    lost = (await first.service.ingest("docs", [Upload(TEXT, "text/plain")], wait=False))["job"]
    gone = (await first.service.ingest("notes", [Upload(TEXT, "text/plain")], wait=False))["job"]
    await first.stop()
    shutil.rmtree(tmp_path / "jobs" / lost)  # its documents' bytes went missing

    second = Server(embedder, tmp_path, memories=("docs",))  # "notes" left the config
    assert await second.service.resume() == []
    lost_state, gone_state = await second.service.job("docs", lost), await second.service.job("notes", gone)
    assert lost_state["state"] == "failed" and "could not be read back" in lost_state["error"]["message"]
    assert gone_state["state"] == "failed" and "memory 'notes' is no longer configured" in gone_state["error"]["message"]
    assert (await second.service.info("docs"))["chunks"] == 0
    await second.stop()


async def test_a_job_in_a_crash_loop_ends_failed(embedder, tmp_path):
    job = None
    for _ in range(3):  # each run is interrupted
        server = Server(embedder, tmp_path, hold=asyncio.Event())
        if job is None:
            job = (await server.service.ingest("docs", [Upload(TEXT, "text/plain")], wait=False))["job"]
        else:
            assert await server.service.resume() == [job]
        await asyncio.sleep(0.1)
        await server.stop()
    server = Server(embedder, tmp_path)
    assert await server.service.resume() == []
    state = await server.service.job("docs", job)
    assert state["state"] == "failed" and "each of this job's 3 runs" in state["error"]["message"]
    await server.stop()


async def test_background_jobs_are_bounded(embedder, tmp_path):
    hold = asyncio.Event()
    server = Server(embedder, tmp_path, hold=hold, max_jobs=1)
    first = await server.service.ingest("docs", [Upload(TEXT, "text/plain")], wait=False)
    with pytest.raises(TooMany, match="max_background_jobs") as refused:
        await server.service.ingest("docs", [Upload(b"Another note.", "text/plain")], wait=False)
    assert refused.value.status == 429 and refused.value.headers["Retry-After"]
    hold.set()
    assert (await finished(server.service, "docs", first["job"]))["state"] == "done"
    again = await server.service.ingest("docs", [Upload(b"Another note.", "text/plain")], wait=False)
    assert (await finished(server.service, "docs", again["job"]))["state"] == "done"
    await server.stop()
