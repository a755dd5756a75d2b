"""A memory: documents in, chunks with vectors stored, the best chunks recalled.

Plain Python over three injected parts: an async ``embed`` (the embedding
model's deployment, called with batches of chunks), a ``count`` of tokens
(the embedding model's own vocabulary, loaded in-process) and a
``VectorStore``. The Ray deployment in ``serve/memory.py`` only wires them.

A document's id is the hash of its bytes, so storing it again changes
nothing. It is stored whole or not at all: every chunk is embedded first,
then all points go in one upsert; if that fails, its points are removed.
An upload (one or more documents) is one transaction of the memory's
``Writer``: committed whole, or rolled back by its id (see writer.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace

from poly_ray.config import MemoryConfig
from poly_ray.config.schema import EMBED_BATCH
from poly_ray.errors import ConfigError, NotFound, Unprocessable

from .chunking import Chunker, Count, DocumentChunk, fit_length
from .extract import Document, extract, media_type
from .vectorstore import OWNER, Mode, Search, Sparse, StoredPoint, VectorStore
from .writer import Writer

Embed = Callable[[list[str]], Awaitable[list[list[float]]]]
Progress = Callable[[int, int], None]  # chunks embedded, chunks in all
SPECIAL_TOKENS = 2  # what the embedding model adds around a text (BERT: [CLS], [SEP]; else BOS)
_IDS = uuid.UUID("8d6f1f7e-4a8b-4a51-9a3c-2f6c1c0b7d10")  # namespace of chunk point ids


@dataclass(frozen=True)
class Upload:
    data: bytes
    content_type: str | None = None
    filename: str | None = None


@dataclass(frozen=True)
class Prepared:
    """A document read and chunked, not yet embedded or stored."""

    document: str  # id: the hash of its bytes
    doc: Document
    source: str | None
    chunks: list[DocumentChunk]
    owner: str | None = None  # a stored prompt's credential


def prompt_id(owner: str | None, text: str) -> str:
    """A stored prompt's document id: the owner's and the text's, by another hash function than
    an upload's (SHA-256 of its bytes), so that no upload can take a prompt's id to learn that
    the prompt was stored (its ``"stored": false``) or to keep it from being stored."""
    return hashlib.blake2b(f"{owner or ''}\0{text}".encode(), digest_size=16, person=b"poly-ray prompt").hexdigest()


def check_dimensions(name: str, cfg: MemoryConfig, metadata: dict[str, str]) -> None:
    """A memory's ``dimensions`` must be what its embedding model gives (its GGUF says)."""
    width = int(metadata.get(f"{metadata.get('general.architecture')}.embedding_length", 0))
    if width and width != cfg.dimensions:
        raise ConfigError(
            f"memories.{name}.dimensions: {cfg.dimensions}, but embedding model '{cfg.embedding_model}' gives {width}"
        )


class Memory:
    """``count`` counts a text's tokens in the embedding model; ``context`` is the most
    it embeds at once (a longer query is cut to its last tokens)."""

    def __init__(
        self, name: str, cfg: MemoryConfig, *, store: VectorStore, embed: Embed, count: Count, context: int | None = None
    ):
        import qdrant_edge

        self.name = name
        self.cfg = cfg
        self._store = store
        self._embed = embed
        self._count = count
        self._context = context
        # Every write goes through one writer, one at a time; reads run on threads beside it.
        self._writer = Writer(store, name)
        self._bm25 = qdrant_edge.Bm25()  # sparse vectors for the keyword side, in-process
        self._chunker = Chunker(
            # A chunk must fit the model as it is embedded: prefix and special tokens too.
            lambda text: count(cfg.document_prefix + text) + SPECIAL_TOKENS,
            max_tokens=cfg.chunk_max_tokens,
            separators=tuple(cfg.chunk_separators),
            overlap=cfg.chunk_overlap,
            pre_filter=tuple(cfg.pre_filter),
            post_filter=tuple(cfg.post_filter),
        )

    async def ingest(self, upload: Upload, progress: Progress | None = None) -> dict:
        """Extract, chunk, embed and store one document; its id and chunk count."""
        return await self.store(self.prepare(upload), progress)

    async def remember(self, text: str, owner: str | None = None) -> dict:
        """Store a piece of text (a task's prompt, with store_prompts) as ``owner``'s:
        only that credential recalls it. Two owners' same words are two documents."""
        prepared = await asyncio.to_thread(self._prepared, text.encode(), Document(text, "text/plain"), "prompt")
        return await self.store(replace(prepared, document=prompt_id(owner, text), owner=owner))

    @contextlib.asynccontextmanager
    async def upload(self, upload: str | None = None) -> AsyncIterator[str]:
        """One upload's transaction: what it stores is committed when the block ends,
        rolled back by its id when it raises or is cancelled (a client gone)."""
        upload = upload or f"upload-{uuid.uuid4().hex[:16]}"
        try:
            yield upload
        except BaseException:
            await self._writer.run_surely(self._writer.rollback, upload)
            raise
        await self._writer.run_surely(self._writer.commit, upload)

    def prepare(self, upload: Upload) -> Prepared:
        """Read and chunk a document (CPU-bound; bad documents fail here, before any storing)."""
        kind = media_type(upload.content_type, upload.data, upload.filename)
        return self._prepared(upload.data, extract(upload.data, kind), upload.filename)

    def _prepared(self, data: bytes, doc: Document, source: str | None) -> Prepared:
        chunks = self._chunker(doc.text, doc.pages)
        if not chunks:
            raise Unprocessable("the document is empty after filtering: no chunk to store")
        return Prepared(hashlib.sha256(data).hexdigest()[:32], doc, source, chunks)

    async def store(self, prepared: Prepared, progress: Progress | None = None, upload: str | None = None) -> dict:
        """Embed and store a document as part of ``upload`` (by default, an upload of its own)."""
        if upload is None:
            async with self.upload() as alone:
                return await self.store(prepared, progress, alone)
        document, doc, source, chunks = prepared.document, prepared.doc, prepared.source, prepared.chunks
        if await self._writer.run(self._writer.claim, upload, document, len(chunks)):
            return {"document": document, "chunks": len(chunks), "source": source, "stored": False}
        vectors: list[list[float]] = []
        for i in range(0, len(chunks), EMBED_BATCH):
            batch = chunks[i : i + EMBED_BATCH]
            vectors += await self._embed([self.cfg.document_prefix + c.text for c in batch])
            if progress:
                progress(len(vectors), len(chunks))
        if vectors and len(vectors[0]) != self.cfg.dimensions:
            raise Unprocessable(
                f"memory '{self.name}': the embedding model gives {len(vectors[0])} dimensions, "
                f"the memory is configured for {self.cfg.dimensions}"
            )
        stored_at = time.time()
        points = [
            StoredPoint(
                id=str(uuid.uuid5(_IDS, f"{document}:{c.index}")),
                dense=vector,
                sparse=self._sparse(c.text, document=True),
                payload={
                    "document": document,
                    "source": source,
                    "content_type": doc.content_type,
                    "chunk": c.index,
                    "chunks": len(chunks),
                    "page": doc.page_at(c.start),
                    "start": c.start,
                    "end": c.end,
                    "text": c.text,
                    "stored_at": stored_at,
                }
                | ({OWNER: prepared.owner} if prepared.owner else {}),
            )
            for c, vector in zip(chunks, vectors)
        ]
        stored = await self._writer.run(self._writer.put, upload, document, points)
        return {"document": document, "chunks": len(chunks), "source": source, "stored": stored}

    async def recall(self, prompt: str, n: int, mode: Mode | None = None, owner: str | None = None) -> list[dict]:
        """The ``n`` chunks that best answer ``prompt``: text, score and metadata; of the
        stored prompts, only ``owner``'s."""
        mode = mode or self.cfg.search
        dense = None
        if mode != "keyword":
            [dense] = await self._embed([self.cfg.query_prefix + await asyncio.to_thread(self._fit, prompt)])
        search = Search(
            dense=dense,
            sparse=self._sparse(prompt, document=False) if mode != "dense" else None,
            limit=n,
            mode=mode,
            fusion=self.cfg.fusion,
            weights=(self.cfg.dense_weight, self.cfg.keyword_weight),
            candidates=max(20, 4 * n),
            owner=owner,
        )
        found = await asyncio.to_thread(self._store.search, search)
        return [_chunk_view(score, payload) for score, payload in found]

    def _fit(self, query: str) -> str:
        """The query, cut to its last tokens that the embedding model takes at once."""
        budget = None if self._context is None else self._context - SPECIAL_TOKENS - self._count(self.cfg.query_prefix)
        if budget is None or self._count(query) <= budget:
            return query
        return query[-fit_length(self._count, query, 0, len(query), budget, tail=True) :]

    async def documents(self, owner: str | None = None) -> list[dict]:
        keys = ("document", "source", "content_type", "chunks", "stored_at")
        first = await asyncio.to_thread(self._store.first_chunks, owner)
        return sorted(({k: p.get(k) for k in keys} for p in first), key=lambda d: d["stored_at"] or 0)

    async def delete(self, document: str, owner: str | None = None) -> dict:
        """Delete a document; another owner's stored prompt reads as missing."""
        chunks = await self._writer.run(self._writer.delete, document, owner)
        if not chunks:
            raise NotFound(f"memory '{self.name}' has no document '{document}'")
        return {"document": document, "deleted_chunks": chunks}

    async def clear(self) -> dict:
        return {"deleted_chunks": await self._writer.run(self._writer.clear)}

    async def info(self) -> dict:
        return {
            "embedding_model": self.cfg.embedding_model,
            "dimensions": self.cfg.dimensions,
            "search": self.cfg.search,
            "chunks": await asyncio.to_thread(self._store.count),
        }

    def close(self) -> None:
        self._writer.close()
        self._store.close()

    def _sparse(self, text: str, *, document: bool) -> Sparse:
        vector = self._bm25.embed_document(text) if document else self._bm25.embed_query(text)
        return Sparse(list(vector.indices), list(vector.values))


def _chunk_view(score: float, payload: dict) -> dict:
    metadata = {k: payload.get(k) for k in ("document", "source", "page", "chunk", "start", "end")}
    return {"text": payload.get("text", ""), "score": score, "metadata": metadata}
