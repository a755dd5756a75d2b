"""Ingestion jobs that outlive the process: a small SQLite file and the uploaded bytes.

Under ``state_path(cfg, "jobs")``: ``jobs.sqlite3`` holds one row per job (its
state, counts, result or error, and where its documents' bytes are), and each
job still to do keeps its documents in a folder of its own until it ends. A
job's row is written in one transaction after its bytes are on disk, so after
a crash a job is either there whole or was never accepted. On start, the jobs
left running are resumed from their bytes, or end ``failed`` with the reason.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from .memory import Upload

MAX_FINISHED_JOBS = 1000  # results kept for GET .../jobs/{id}; the oldest go first
MAX_ATTEMPTS = 3  # a job whose runs the server never outlived (a crash loop) then fails


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
    attempts: int = 1  # runs begun: more than 1 when resumed after a restart

    def view(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v is not None}


class JobStore:
    """Blocking calls (SQLite, files): the service runs them on threads."""

    def __init__(self, folder: Path):
        self._folder = Path(folder).expanduser()
        self._folder.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self._folder / "jobs.sqlite3", check_same_thread=False, isolation_level=None)
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS jobs (id TEXT PRIMARY KEY, memory TEXT NOT NULL, state TEXT NOT NULL,"
                " started REAL NOT NULL, job TEXT NOT NULL, uploads TEXT NOT NULL)"
            )

    def add(self, job: Job, uploads: list[Upload]) -> None:
        """Keep the documents' bytes, then record the job: accepted once this returns."""
        folder = self._folder / job.id
        folder.mkdir()
        meta = []
        for i, u in enumerate(uploads):
            path = folder / str(i)
            with open(path, "wb") as f:
                f.write(u.data)
                f.flush()
                os.fsync(f.fileno())
            meta.append({"file": str(i), "content_type": u.content_type, "filename": u.filename})
        with self._lock:
            self._db.execute(
                "INSERT INTO jobs VALUES (?, ?, ?, ?, ?, ?)",
                (job.id, job.memory, job.state, job.started, json.dumps(job.view()), json.dumps(meta)),
            )

    def save(self, job: Job) -> None:
        """A job's new state; a job that ended lets go of its documents' bytes."""
        with self._lock:
            self._db.execute("UPDATE jobs SET state = ?, job = ? WHERE id = ?", (job.state, json.dumps(job.view()), job.id))
            if job.state != "running":
                self._forget_oldest()
        if job.state != "running":
            shutil.rmtree(self._folder / job.id, ignore_errors=True)

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            row = self._db.execute("SELECT job FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return _job(row[0]) if row else None

    def unfinished(self) -> list[tuple[Job, list[Upload] | None]]:
        """The jobs left running by an earlier process, each with its documents
        (None where they cannot be read back)."""
        with self._lock:
            rows = self._db.execute("SELECT job, uploads FROM jobs WHERE state = 'running' ORDER BY started").fetchall()
        found = []
        for job_text, uploads_text in rows:
            job = _job(job_text)
            try:
                uploads = [
                    Upload((self._folder / job.id / m["file"]).read_bytes(), m["content_type"], m["filename"])
                    for m in json.loads(uploads_text)
                ]
            except OSError:
                uploads = None
            found.append((job, uploads))
        return found

    def _forget_oldest(self) -> None:
        self._db.execute(
            "DELETE FROM jobs WHERE state != 'running' AND id NOT IN"
            " (SELECT id FROM jobs WHERE state != 'running' ORDER BY started DESC LIMIT ?)",
            (MAX_FINISHED_JOBS,),
        )

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _job(text: str) -> Job:
    known = Job.__dataclass_fields__
    return Job(**{k: v for k, v in json.loads(text).items() if k in known})
