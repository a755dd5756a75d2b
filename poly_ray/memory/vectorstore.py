"""Where a memory's chunks live: Qdrant, embedded (Qdrant Edge) or a server.

Both stores hold, per chunk, a dense vector ("dense", cosine) from the
memory's embedding model, a BM25 sparse vector ("bm25", IDF-weighted by
Qdrant) and a payload (text and metadata). Search is dense, keyword (BM25) or
hybrid: both, fused by Qdrant with RRF (weighted) or DBSF. The memory logic
sees only the small ``VectorStore`` interface.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from poly_ray.errors import ConfigError

DENSE, SPARSE = "dense", "bm25"
OWNER = "owner"  # payload key of a stored prompt's credential
Mode = Literal["hybrid", "dense", "keyword"]


@dataclass(frozen=True)
class Sparse:
    indices: list[int]
    values: list[float]


@dataclass(frozen=True)
class StoredPoint:
    id: str
    dense: list[float]
    sparse: Sparse
    payload: dict


@dataclass(frozen=True)
class Search:
    dense: list[float] | None
    sparse: Sparse | None
    limit: int
    mode: Mode = "hybrid"
    fusion: Literal["rrf", "dbsf"] = "rrf"
    weights: tuple[float, float] = (1.0, 1.0)  # dense, keyword (RRF only)
    candidates: int = 20  # per side, before fusion
    # Stored prompts (store_prompts) carry their credential ("owner"); a search sees
    # chunks without one (documents) and those of this owner only (None: no prompts).
    owner: str | None = None


class StoreError(ConfigError):
    """The store cannot be opened as configured; the message names the memory."""


class VectorStore(Protocol):
    def upsert(self, points: list[StoredPoint]) -> None: ...
    # ``upload``: only the points that this upload wrote (payload key "upload").
    def delete_document(self, document: str, upload: str | None = None) -> None: ...
    def retag(self, document: str, upload: str) -> None: ...  # the document's points now the upload's
    def search(self, search: Search) -> list[tuple[float, dict]]: ...
    def first_chunks(self, owner: str | None = None) -> list[dict]: ...  # chunk 0 of every document it may see
    def count(self, document: str | None = None, upload: str | None = None) -> int: ...
    def visible(self, document: str, owner: str | None) -> int: ...  # the document's chunks the owner may see
    def clear(self) -> None: ...
    def close(self) -> None: ...


class EdgeStore:
    """The embedded store: one Qdrant Edge shard on disk, owned by this process."""

    def __init__(self, memory: str, path: Path, dimensions: int, *, owner_wait_s: float = 0.0):
        """``owner_wait_s``: how long to wait for another process to let go of the
        store (a replica being replaced may still hold it)."""
        import qdrant_edge as qe

        self._qe = qe
        self._path = Path(path)
        self._config = qe.EdgeConfig(
            vectors={DENSE: qe.EdgeVectorParams(size=dimensions, distance=qe.Distance.Cosine)},
            sparse_vectors={SPARSE: qe.EdgeSparseVectorParams(modifier=qe.Modifier.Idf)},
        )
        where = f"memories.{memory}.store: {self._path}"
        try:
            self._shard = self._open(owner_wait_s)
        except Exception as e:  # qdrant_edge raises plain Exceptions
            text = str(e)
            if "WouldBlock" in text:
                raise StoreError(f"{where} is already open in another process (one process owns an embedded store)")
            if "expected vector size" in text:
                raise StoreError(f"{where} holds vectors of another size than dimensions = {dimensions}: {text}")
            raise StoreError(f"{where} cannot be opened: {text}") from None

    def _open(self, owner_wait_s: float):
        qe, deadline, pause = self._qe, time.monotonic() + owner_wait_s, 0.2
        while True:
            try:
                if (self._path / "wal").exists() or (self._path / "segments").exists():
                    return qe.EdgeShard.load(str(self._path), self._config)
                return qe.EdgeShard.create(str(self._path), self._config)
            except Exception as e:
                if "WouldBlock" not in str(e) or time.monotonic() + pause > deadline:
                    raise
                time.sleep(pause)
                pause = min(2 * pause, 2.0)

    def upsert(self, points: list[StoredPoint]) -> None:
        qe = self._qe
        self._shard.update(
            qe.UpdateOperation.upsert_points(
                [
                    qe.Point(
                        p.id,
                        {DENSE: p.dense, SPARSE: qe.SparseVector(p.sparse.indices, p.sparse.values)},
                        p.payload,
                    )
                    for p in points
                ]
            )
        )
        self._shard.flush()

    def delete_document(self, document: str, upload: str | None = None) -> None:
        self._shard.update(self._qe.UpdateOperation.delete_points_by_filter(self._document(document, upload)))
        self._shard.flush()

    def retag(self, document: str, upload: str) -> None:
        self._shard.update(self._qe.UpdateOperation.set_payload_by_filter(self._document(document), {"upload": upload}))
        self._shard.flush()

    def search(self, search: Search) -> list[tuple[float, dict]]:
        qe = self._qe
        dense = search.dense and qe.Query.Nearest(search.dense, using=DENSE)
        sparse = search.sparse and qe.Query.Nearest(qe.SparseVector(search.sparse.indices, search.sparse.values), using=SPARSE)
        visible = self._visible(search.owner)
        if search.mode == "hybrid":
            fusion = qe.Fusion.Dbsf() if search.fusion == "dbsf" else qe.Fusion.Rrf(k=60, weights=list(search.weights))
            request = qe.QueryRequest(
                limit=search.limit,
                prefetches=[qe.Prefetch(limit=search.candidates, query=q, filter=visible) for q in (dense, sparse)],
                query=fusion,
                filter=visible,
                with_payload=True,
            )
        else:
            request = qe.QueryRequest(
                limit=search.limit, query=dense if search.mode == "dense" else sparse, filter=visible, with_payload=True
            )
        return [(p.score, dict(p.payload or {})) for p in self._shard.query(request)]

    def first_chunks(self, owner: str | None = None) -> list[dict]:
        qe = self._qe
        found, offset = [], None
        condition = qe.Filter(must=[qe.FieldCondition(key="chunk", match=qe.MatchValue(0)), self._visible(owner)])
        while True:
            records, offset = self._shard.scroll(
                qe.ScrollRequest(offset=offset, limit=256, filter=condition, with_payload=True)
            )
            found += [dict(r.payload or {}) for r in records]
            if offset is None:
                return found

    def count(self, document: str | None = None, upload: str | None = None) -> int:
        condition = self._document(document, upload) if document else None
        return self._shard.count(self._qe.CountRequest(exact=True, filter=condition))

    def visible(self, document: str, owner: str | None) -> int:
        condition = self._qe.Filter(must=[self._document(document), self._visible(owner)])
        return self._shard.count(self._qe.CountRequest(exact=True, filter=condition))

    def clear(self) -> None:
        # By filter, not by removing the directory: the configured path may hold more.
        self._shard.update(self._qe.UpdateOperation.delete_points_by_filter(self._qe.Filter(must=[])))
        self._shard.flush()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._shard.flush()
        self._shard.close()

    def _visible(self, owner: str | None):
        """Chunks without an owner, and those of ``owner``."""
        qe = self._qe
        unowned = qe.IsEmptyCondition(key=OWNER)
        if owner is None:
            return qe.Filter(must=[unowned])
        return qe.Filter(should=[unowned, qe.FieldCondition(key=OWNER, match=qe.MatchValue(owner))])

    def _document(self, document: str, upload: str | None = None):
        qe = self._qe
        keys = {"document": document} | ({"upload": upload} if upload else {})
        return qe.Filter(must=[qe.FieldCondition(key=k, match=qe.MatchValue(v)) for k, v in keys.items()])


class QdrantServerStore:
    """A collection on a Qdrant server, through qdrant-client. Kept thin: the
    memory logic is shared with the embedded store."""

    def __init__(self, memory: str, client, collection: str, dimensions: int):
        from qdrant_client import models

        self._m = models
        self._client = client
        self._collection = collection
        where = f"memories.{memory}.store.qdrant"
        if client.collection_exists(collection):
            info = client.get_collection(collection).config.params.vectors
            size = info[DENSE].size if isinstance(info, dict) and DENSE in info else None
            if size != dimensions:
                raise StoreError(
                    f"{where}: collection '{collection}' has dense vectors of size {size}, but dimensions = {dimensions}"
                )
        else:
            client.create_collection(
                collection,
                vectors_config={DENSE: models.VectorParams(size=dimensions, distance=models.Distance.COSINE)},
                sparse_vectors_config={SPARSE: models.SparseVectorParams(modifier=models.Modifier.IDF)},
            )
        for key in ("document", "upload", OWNER):
            client.create_payload_index(collection, key, models.PayloadSchemaType.KEYWORD)

    def upsert(self, points: list[StoredPoint]) -> None:
        m = self._m
        self._client.upsert(
            self._collection,
            [
                m.PointStruct(
                    id=p.id,
                    vector={DENSE: p.dense, SPARSE: m.SparseVector(indices=p.sparse.indices, values=p.sparse.values)},
                    payload=p.payload,
                )
                for p in points
            ],
            wait=True,
        )

    def delete_document(self, document: str, upload: str | None = None) -> None:
        self._client.delete(self._collection, self._document(document, upload), wait=True)

    def retag(self, document: str, upload: str) -> None:
        self._client.set_payload(self._collection, {"upload": upload}, points=self._document(document), wait=True)

    def search(self, search: Search) -> list[tuple[float, dict]]:
        m = self._m
        sparse = search.sparse and m.SparseVector(indices=search.sparse.indices, values=search.sparse.values)
        visible = self._visible(search.owner)
        if search.mode == "hybrid":
            fusion = (
                m.FusionQuery(fusion=m.Fusion.DBSF)
                if search.fusion == "dbsf"
                else m.RrfQuery(rrf=m.Rrf(weights=list(search.weights)))
            )
            result = self._client.query_points(
                self._collection,
                prefetch=[
                    m.Prefetch(query=search.dense, using=DENSE, limit=search.candidates, filter=visible),
                    m.Prefetch(query=sparse, using=SPARSE, limit=search.candidates, filter=visible),
                ],
                query=fusion,
                query_filter=visible,
                limit=search.limit,
                with_payload=True,
            )
        else:
            dense = search.mode == "dense"
            result = self._client.query_points(
                self._collection,
                query=search.dense if dense else sparse,
                using=DENSE if dense else SPARSE,
                query_filter=visible,
                limit=search.limit,
                with_payload=True,
            )
        return [(p.score, dict(p.payload or {})) for p in result.points]

    def first_chunks(self, owner: str | None = None) -> list[dict]:
        m = self._m
        found, offset = [], None
        condition = m.Filter(must=[m.FieldCondition(key="chunk", match=m.MatchValue(value=0)), self._visible(owner)])
        while True:
            records, offset = self._client.scroll(
                self._collection, scroll_filter=condition, limit=256, offset=offset, with_payload=True
            )
            found += [dict(r.payload or {}) for r in records]
            if offset is None:
                return found

    def count(self, document: str | None = None, upload: str | None = None) -> int:
        condition = self._document(document, upload) if document else None
        return self._client.count(self._collection, count_filter=condition, exact=True).count

    def visible(self, document: str, owner: str | None) -> int:
        condition = self._m.Filter(must=[self._document(document), self._visible(owner)])
        return self._client.count(self._collection, count_filter=condition, exact=True).count

    def clear(self) -> None:
        self._client.delete(self._collection, self._m.Filter(must=[]), wait=True)

    def close(self) -> None:
        self._client.close()

    def _visible(self, owner: str | None):
        m = self._m
        unowned = m.IsEmptyCondition(is_empty=m.PayloadField(key=OWNER))
        if owner is None:
            return m.Filter(must=[unowned])
        return m.Filter(should=[unowned, m.FieldCondition(key=OWNER, match=m.MatchValue(value=owner))])

    def _document(self, document: str, upload: str | None = None):
        m = self._m
        keys = {"document": document} | ({"upload": upload} if upload else {})
        return m.Filter(must=[m.FieldCondition(key=k, match=m.MatchValue(value=v)) for k, v in keys.items()])


def open_store(memory: str, cfg) -> VectorStore:
    """The store a ``MemoryConfig`` names, opened (collections created as needed)."""
    if cfg.store.path is not None:
        # On a redeploy, the replica being replaced may hold the store for a while.
        return EdgeStore(memory, cfg.store.path, cfg.dimensions, owner_wait_s=60)
    from qdrant_client import QdrantClient

    q = cfg.store.qdrant
    try:
        return QdrantServerStore(memory, QdrantClient(url=q.url, api_key=q.api_key), q.collection, cfg.dimensions)
    except StoreError:
        raise
    except Exception as e:  # unreachable server, refused key, ...
        raise StoreError(f"memories.{memory}.store.qdrant: cannot use {q.url} collection '{q.collection}': {e}") from None
