"""Every configured memory behind one object, with background ingestion jobs.

What the memory deployment serves and what the HTTP routes call; plain
Python, so it is tested without Ray. Jobs live in this process: a restart
forgets running jobs (their documents are then not stored, never half-stored).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
import uuid
from dataclasses import dataclass, field

from poly_ray.errors import BadRequest, NotFound, PolyError

from .memory import Memory, Upload

log = logging.getLogger(__name__)
MAX_FINISHED_JOBS = 1000  # results kept for GET .../jobs/{id}; the oldest go first


@dataclass
class Job:
    id: str
    memory: str
    files: int
    state: str = "running"  # running | done | failed
    chunks_done: int = 0
    chunks_total: int = 0
    result: dict | None = None
    error: dict | None = None
    started: float = field(default_factory=time.time)
    finished: float | None = None

    def view(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v is not None}


class MemoryService:
    """Its methods are all async: the HTTP layer calls this object, or a handle to
    the memory deployment that holds it, the same way."""

    def __init__(self, memories: dict[str, Memory]):
        self._memories = memories
        self._jobs: dict[str, Job] = {}
        self._tasks: set[asyncio.Task] = set()

    def get(self, name: str) -> Memory:
        try:
            return self._memories[name]
        except KeyError:
            raise NotFound(f"memory '{name}' does not exist") from None

    async def names(self) -> dict[str, dict]:
        return {name: {"embedding_model": m.cfg.embedding_model} for name, m in self._memories.items()}

    async def info(self, name: str) -> dict:
        return await self.get(name).info()

    async def ingest(self, name: str, uploads: list[Upload], *, wait: bool = True) -> dict:
        """Store documents. Every file is read and chunked first, so a bad one fails
        the request before anything is stored. ``wait=False``: a job to poll."""
        if not uploads:
            raise BadRequest("no document in the request")
        memory = self.get(name)
        prepared = await asyncio.gather(*(asyncio.to_thread(memory.prepare, u) for u in uploads))
        job = Job(f"job-{uuid.uuid4().hex[:16]}", name, len(uploads), chunks_total=sum(len(p.chunks) for p in prepared))
        run = self._run(memory, job, prepared)
        if wait:
            return await run
        self._remember(job)
        task = asyncio.create_task(_recorded(run))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return {"job": job.id, "state": job.state, "chunks_total": job.chunks_total}

    async def _run(self, memory: Memory, job: Job, prepared) -> dict:
        done_before = 0

        def progress(done: int, _total: int) -> None:
            job.chunks_done = done_before + done

        results = []
        try:
            # An upload is stored whole or not at all: on a failure, or a client gone,
            # what it stored is taken back by its id (never what another upload stored).
            async with memory.upload(job.id) as upload:
                for p in prepared:
                    results.append(await memory.store(p, progress, upload))
                    done_before += len(p.chunks)
        except PolyError as e:
            job.state, job.error = "failed", {"code": e.code, "message": e.message, "status": e.status}
            raise
        except asyncio.CancelledError:
            job.state, job.error = "failed", {"code": "cancelled", "message": "the upload was cancelled", "status": 499}
            raise
        except Exception as e:
            log.exception("ingestion into memory '%s' failed", job.memory)
            job.state, job.error = "failed", {"code": "ingest_failed", "message": str(e), "status": 500}
            raise
        finally:
            job.finished = time.time()
        job.state, job.chunks_done = "done", job.chunks_total
        job.result = {"documents": results}
        return job.result

    async def job(self, name: str, job_id: str) -> dict:
        job = self._jobs.get(job_id)
        if job is None or job.memory != name:
            raise NotFound(f"memory '{name}' has no job '{job_id}'")
        return job.view()

    def _remember(self, job: Job) -> None:
        self._jobs[job.id] = job
        finished = [j for j in self._jobs.values() if j.state != "running"]
        for old in itertools.islice(sorted(finished, key=lambda j: j.started), max(0, len(finished) - MAX_FINISHED_JOBS)):
            del self._jobs[old.id]

    async def recall(self, name: str, prompt: str, n: int, mode: str | None = None) -> list[dict]:
        return await self.get(name).recall(prompt, n, mode)

    async def remember(self, name: str, text: str) -> dict:
        return await self.get(name).remember(text)

    async def documents(self, name: str) -> list[dict]:
        return await self.get(name).documents()

    async def delete(self, name: str, document: str) -> dict:
        return await self.get(name).delete(document)

    async def clear(self, name: str) -> dict:
        return await self.get(name).clear()

    def close(self) -> None:
        for m in self._memories.values():
            m.close()


async def _recorded(run) -> None:
    """A background job: its failure is in the job's record, not an unretrieved exception."""
    with contextlib.suppress(Exception):
        await run
