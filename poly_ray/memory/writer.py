"""One memory's writer: every change to its store, one at a time, in order.

Writes run on one thread of their own, in the order they were asked for, so a
write that has started holds the store until it is really done: an upload whose
client went away cannot leave a write running after the next one began (a
lock released by a cancelled coroutine can). Embedding happens before, outside
the writer, so one upload's embedding never makes the others wait.

Uploads are transactions by id. Each point carries the id of the upload that
wrote it (payload key ``upload``); the writer remembers, per document, which
uploads in flight report it stored. Rolling back an upload removes only the
documents it wrote, by its id, and not one that another upload in flight also
reports: that one is handed over to it instead. A commit makes an upload's
documents permanent, including those it found written by another upload still
in flight.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections import defaultdict

from .vectorstore import StoredPoint, VectorStore


class Writer:
    def __init__(self, store: VectorStore, name: str = "memory"):
        self._store = store
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=f"writer-{name}")
        # Touched on the writer's thread only: no lock needed.
        self._claims: dict[str, set[str]] = defaultdict(set)  # document -> uploads in flight reporting it
        self._owner: dict[str, str] = {}  # document -> the upload in flight whose points it holds

    async def run(self, fn, *args):
        """``fn(*args)`` on the writer's thread. Cancelled before it starts, it never runs;
        once started, it runs to its end whatever happens to the caller."""
        return await asyncio.wrap_future(self._pool.submit(fn, *args))

    async def run_surely(self, fn, *args):
        """Like ``run``, but it runs even if the caller is cancelled while it waits its turn."""
        return await asyncio.shield(asyncio.wrap_future(self._pool.submit(fn, *args)))

    # What runs on the writer's thread.

    def claim(self, upload: str, document: str, chunks: int) -> bool:
        """Whether the document is stored whole already; if so, the upload reports it too."""
        if self._store.count(document) != chunks:
            return False
        self._claims[document].add(upload)
        if document not in self._owner and self._store.count(document, upload=upload) == chunks:
            self._owner[document] = upload  # written by this upload before a restart: still its own
        return True

    def put(self, upload: str, document: str, points: list[StoredPoint]) -> bool:
        """Store a document's points for an upload; False when it was there already."""
        if self.claim(upload, document, len(points)):
            return False
        points = [StoredPoint(p.id, p.dense, p.sparse, {**p.payload, "upload": upload}) for p in points]
        try:
            self._store.delete_document(document)  # a half-stored earlier attempt
            self._store.upsert(points)
        except BaseException:
            self._store.delete_document(document)
            raise
        self._claims[document].add(upload)
        self._owner[document] = upload
        return True

    def commit(self, upload: str) -> None:
        for document in [d for d, uploads in self._claims.items() if upload in uploads]:
            self._release(upload, document)
            owner = self._owner.get(document)
            if owner is not None and owner != upload:
                # Written by an upload still in flight: this one reported it stored, so it stays.
                self._store.retag(document, upload)
            self._owner.pop(document, None)

    def rollback(self, upload: str) -> None:
        for document in [d for d, uploads in self._claims.items() if upload in uploads]:
            self._release(upload, document)
            if self._owner.get(document) != upload:
                continue
            heirs = self._claims.get(document)
            if heirs:
                heir = min(heirs)  # another upload in flight reports it: it is its own now
                self._store.retag(document, heir)
                self._owner[document] = heir
            else:
                self._store.delete_document(document, upload=upload)
                del self._owner[document]

    def delete(self, document: str, owner: str | None = None) -> int:
        """Delete a document ``owner`` may see (one without an owner, or its own stored prompt)."""
        chunks = self._store.visible(document, owner)
        if chunks:
            self._store.delete_document(document)
        self._claims.pop(document, None)
        self._owner.pop(document, None)
        return chunks

    def clear(self) -> int:
        chunks = self._store.count()
        self._store.clear()
        self._claims.clear()
        self._owner.clear()
        return chunks

    def in_flight(self) -> dict[str, set[str]]:
        """Documents and the uploads in flight that report them (for tests and logs)."""
        return {d: set(u) for d, u in self._claims.items()}

    def _release(self, upload: str, document: str) -> None:
        uploads = self._claims[document]
        uploads.discard(upload)
        if not uploads:
            del self._claims[document]

    def close(self) -> None:
        """Wait for the writes asked for; later ones are refused."""
        self._pool.shutdown(wait=True)
