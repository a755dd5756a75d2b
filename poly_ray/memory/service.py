"""Every configured memory behind one object, with background ingestion jobs.

What the memory deployment serves and what the HTTP routes call; plain
Python, so it is tested without Ray. A background job (``wait=False``, a 202)
is durable when the service has a ``JobStore``: recorded with its documents'
bytes before it is accepted, resumed when the service starts again, or ended
``failed`` with the reason; its id is never forgotten while the store keeps it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import itertools
import logging
import time
import uuid
from collections import Counter

from poly_ray.errors import BadRequest, NotFound, PolyError, TooMany

from .jobs import MAX_ATTEMPTS, MAX_FINISHED_JOBS, Job, JobStore
from .memory import Memory, Prepared, Upload
from .vectorstore import Mode

log = logging.getLogger(__name__)


# What a job that failed on a bug says to its poller: the exception (paths, internals) goes
# to the log only, as for a 500.
_INTERNAL = {"code": "ingest_failed", "message": "internal server error (the server's log has the details)",
             "status": 500}


# Documents are read on threads of their own. On the default executor (6 threads on 2
# cores), an upload of 100 PDFs, each waiting up to 60 s for one of the 2 extraction
# processes, held every thread, and recall's search queued behind them (N8).
_READING = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="poly-read")


def bounds(cfg) -> dict:
    """A ``Config``'s bounds on uploads and jobs, as MemoryService's keyword arguments."""
    return {"max_jobs": cfg.max_background_jobs, "per_credential": cfg.max_uploads_per_credential,
            "per_memory": cfg.max_uploads_per_memory}


class MemoryService:
    """Its methods are all async: the HTTP layer calls this object, or a handle to
    the memory deployment that holds it, the same way. Bounds (429 beyond):
    ``max_jobs`` background jobs not yet finished, uploads in flight (synchronous
    ones and jobs) ``per_credential`` and ``per_memory``."""

    def __init__(
        self, memories: dict[str, Memory], jobs: JobStore | None = None, *,
        max_jobs: int = 16, per_credential: int = 2, per_memory: int = 4,
    ):
        self._memories = memories
        self._per_credential, self._per_memory = per_credential, per_memory
        self._uploads: Counter[str] = Counter()  # uploads in flight, by "memory:NAME" and "owner:CREDENTIAL"
        self._jobs: dict[str, Job] = {}  # running jobs; without a store, finished ones too
        self._store = jobs
        self._max_jobs = max_jobs
        self._tasks: set[asyncio.Task] = set()
        self.resumed: asyncio.Task | None = None
        if jobs is not None:
            with contextlib.suppress(RuntimeError):  # no loop yet: the owner awaits resume()
                asyncio.get_running_loop()
                self.resumed = self._start(self.resume())

    def get(self, name: str) -> Memory:
        try:
            return self._memories[name]
        except KeyError:
            raise NotFound(f"memory '{name}' does not exist") from None

    async def names(self) -> dict[str, dict]:
        return {name: {"embedding_model": m.cfg.embedding_model} for name, m in self._memories.items()}

    async def info(self, name: str) -> dict:
        return await self.get(name).info()

    async def ingest(self, name: str, uploads: list[Upload], *, wait: bool = True, owner: str | None = None) -> dict:
        """Store documents. Every file is read and chunked first, so a bad one fails
        the request before anything is stored. ``wait=False``: a job to poll.
        ``owner``: the caller's credential, whose uploads in flight are bounded."""
        if not uploads:
            raise BadRequest("no document in the request")
        memory = self.get(name)
        if not wait and sum(j.state == "running" for j in self._jobs.values()) >= self._max_jobs:
            raise TooMany(f"{self._max_jobs} ingestion jobs are running (max_background_jobs); retry later", retry_after=5)
        release, handed_over = self._admit(name, owner), False
        try:
            prepared = await self._prepare(memory, uploads)
            job = Job(f"job-{uuid.uuid4().hex[:16]}", name, len(uploads), chunks_total=sum(len(p.chunks) for p in prepared))
            if wait:
                return await self._run(memory, job, prepared)
            if self._store is not None:
                await asyncio.to_thread(self._store.add, job, uploads)
            self._remember(job)
            self._start(self._background(memory, job, prepared)).add_done_callback(lambda _: release())
            handed_over = True  # the job lets go of its place when it ends
            return {"job": job.id, "state": job.state, "chunks_total": job.chunks_total}
        finally:
            if not handed_over:
                release()

    def _admit(self, name: str, owner: str | None):
        """Count an upload in flight against its memory and its caller; its release."""
        keys = [f"memory:{name}"] + ([f"owner:{owner}"] if owner else [])
        if self._uploads[keys[0]] >= self._per_memory:
            raise TooMany(f"memory '{name}' has {self._per_memory} uploads in flight (max_uploads_per_memory);"
                          " retry when one is done", retry_after=2)
        if owner and self._uploads[keys[1]] >= self._per_credential:
            raise TooMany(f"these credentials have {self._per_credential} uploads in flight"
                          " (max_uploads_per_credential); retry when one is done", retry_after=2)
        self._uploads.update(keys)
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self._uploads.subtract(keys)
                self._uploads += Counter()  # drop the zeros

        return release

    async def resume(self) -> list[str]:
        """Take up the jobs an earlier process left running; the ids resumed."""
        store = self._store
        if store is None:
            return []
        resumed = []
        for job, uploads in await asyncio.to_thread(store.unfinished):
            if job.memory not in self._memories:
                why = f"memory '{job.memory}' is no longer configured"
            elif uploads is None:
                why = "the server restarted and this job's documents could not be read back"
            elif job.attempts >= MAX_ATTEMPTS:
                why = f"the server stopped during each of this job's {job.attempts} runs"
            else:
                job.attempts, job.chunks_done = job.attempts + 1, 0
                log.info("ingestion job %s into memory '%s': resumed (run %d)", job.id, job.memory, job.attempts)
                self._remember(job)
                await asyncio.to_thread(store.save, job)
                self._start(self._background(self._memories[job.memory], job, [], uploads=uploads))
                resumed.append(job.id)
                continue
            log.warning("ingestion job %s: failed on restart: %s", job.id, why)
            job.state, job.finished = "failed", time.time()
            job.error = {"code": "interrupted", "message": why, "status": 500}
            await asyncio.to_thread(store.save, job)
        return resumed

    async def _prepare(self, memory: Memory, uploads: list[Upload]) -> list[Prepared]:
        loop = asyncio.get_running_loop()
        return list(await asyncio.gather(*(loop.run_in_executor(_READING, memory.prepare, u) for u in uploads)))

    async def _background(self, memory: Memory, job: Job, prepared: list[Prepared], *,
                          uploads: list[Upload] | None = None) -> None:
        """A background job: its failure is in its record, not an unretrieved exception.
        Cancelled (the process stopping), it stays running in the store, to be resumed."""
        with contextlib.suppress(Exception):
            if uploads:  # resumed: its documents are read again
                try:
                    prepared = await self._prepare(memory, uploads)
                except Exception as e:
                    if not isinstance(e, PolyError):
                        log.exception("reading documents for memory '%s' failed", job.memory)
                    job.state, job.finished = "failed", time.time()
                    job.error = _error(e) if isinstance(e, PolyError) else _INTERNAL
                    raise
                job.chunks_total = sum(len(p.chunks) for p in prepared)
            await self._run(memory, job, prepared)
        if self._store is not None and job.state != "running":
            await asyncio.to_thread(self._store.save, job)
            self._jobs.pop(job.id, None)  # the store answers for it now

    async def _run(self, memory: Memory, job: Job, prepared: list[Prepared]) -> dict:
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
            job.state, job.error, job.finished = "failed", _error(e), time.time()
            raise
        except Exception:
            log.exception("ingestion into memory '%s' failed", job.memory)
            job.state, job.finished = "failed", time.time()
            job.error = _INTERNAL
            raise
        job.state, job.chunks_done, job.finished = "done", job.chunks_total, time.time()
        job.result = {"documents": results}
        return job.result

    async def job(self, name: str, job_id: str) -> dict:
        job = self._jobs.get(job_id)
        if job is None and self._store is not None:
            job = await asyncio.to_thread(self._store.get, job_id)
        if job is None or job.memory != name:
            raise NotFound(f"memory '{name}' has no job '{job_id}'")
        return job.view()

    def _start(self, work) -> asyncio.Task:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _remember(self, job: Job) -> None:
        self._jobs[job.id] = job
        finished = [j for j in self._jobs.values() if j.state != "running"]
        for old in itertools.islice(sorted(finished, key=lambda j: j.started), max(0, len(finished) - MAX_FINISHED_JOBS)):
            del self._jobs[old.id]

    # ``owner``: the caller's credential; of the stored prompts, it sees its own only.
    async def recall(self, name: str, prompt: str, n: int, mode: Mode | None = None, *,
                     owner: str | None = None) -> list[dict]:
        return await self.get(name).recall(prompt, n, mode, owner)

    async def remember(self, name: str, text: str, *, owner: str | None = None) -> dict:
        return await self.get(name).remember(text, owner)

    async def documents(self, name: str, *, owner: str | None = None) -> list[dict]:
        return await self.get(name).documents(owner)

    async def delete(self, name: str, document: str, *, owner: str | None = None) -> dict:
        return await self.get(name).delete(document, owner)

    async def clear(self, name: str) -> dict:
        return await self.get(name).clear()

    def close(self) -> None:
        for m in self._memories.values():
            m.close()
        if self._store is not None:
            self._store.close()


def _error(e: PolyError) -> dict:
    return {"code": e.code, "message": e.message, "status": e.status}
