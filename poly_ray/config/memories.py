"""``[memories.NAME]``: a vector store of text chunks, how documents are cut into
them, and how they are searched."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from .base import Strict

# Chunks a memory embeds per call to its model (memory.memory): its uploads must fit
# the model's max_embedding_tokens.
EMBED_BATCH = 32


class FileStore(Strict):
    """The embedded store (Qdrant Edge: the Qdrant engine in-process, on disk), owned by
    the one ``memory`` deployment; a second process opening the same path is refused."""

    path: Path = Field(description="The store's folder, relative to the config; no two memories may share one.")


class QdrantStore(Strict):
    """A collection on a Qdrant server, created at start-up (dense cosine + sparse IDF); one
    whose vector size differs from ``dimensions`` stops start-up naming the memory."""

    url: str = Field(pattern=r"^https?://", description="The server's URL (`http://` or `https://`).")
    collection: str = Field(min_length=1, description="The collection's name.")
    api_key: str | None = Field(None, repr=False, description="The server's API key, if it wants one.")


class StoreConfig(Strict):
    """Exactly one of: the embedded store on disk (``file``, or Poly's ``hora``
    spelling), or a collection on a Qdrant server (``qdrant``)."""

    file: FileStore | None = Field(None, description="The embedded store on disk: `{ path = \"...\" }`.")
    hora: FileStore | None = Field(None, description="Poly's name for `file` (the same table).")
    qdrant: QdrantStore | None = Field(None, description=(
        "A Qdrant server's collection: `{ url, collection, api_key }`."))

    @model_validator(mode="after")
    def _one(self):
        if sum(x is not None for x in (self.file, self.hora, self.qdrant)) != 1:
            raise ValueError("set exactly one of file = { path = ... }, qdrant = { url = ..., collection = ... }")
        return self

    @property
    def path(self) -> Path | None:
        local = self.file or self.hora
        return local.path if local else None


# Replaced by a space before embedding: tabs and returns, and runs of 3+ of the
# same separator character (rules, dot leaders). Poly's defaults also removed
# ". " and " | ", which took the full stops and table cells out of recalled text.
_PRE_FILTER = [r"[\r\t]", r"([._|=-])\1{2,}"]


class MemoryConfig(Strict):
    """A named vector store of text chunks that tasks recall from: the documents given to
    it (PDF, DOCX, text) are cut into chunks, embedded, and stored with a BM25 sparse
    vector beside each dense one."""

    store: StoreConfig = Field(description="Where the chunks are stored.")
    dimensions: int = Field(ge=1, le=65536, description="The embedding model's vector size (384 for MiniLM).")
    embedding_model: str = Field(description=(
        "The model that embeds chunks and queries (a `[models.NAME]` with `embeddings = true`)."))
    chunk_max_tokens: int = Field(255, ge=8, le=1 << 16, description=(
        "Tokens a chunk may have, counted as the embedding model sees the chunk."))
    # Poly's default is [" "].
    chunk_separators: list[str] = Field(["\n\n", "\n", ". ", " "], description=(
        "Where text is cut, tried in order: a piece too long for one is cut at the next (last resort: at a "
        "token boundary)."))
    chunk_overlap: int = Field(0, ge=0, description=(
        "Tokens a chunk repeats from the end of the one before (below chunk_max_tokens)."))
    pre_filter: list[str] = Field(_PRE_FILTER, description=(
        "Regular expressions replaced by a space in each chunk's text before it is embedded and stored (where a "
        "chunk points in its document stays). The default: tabs and returns, and runs of 3 or more of the same "
        "separator character (rules, dot leaders)."))
    post_filter: list[str] = Field([], description=(
        "Strings replaced by a space in each chunk's text, after `pre_filter`."))
    search: Literal["hybrid", "dense", "keyword"] = Field("hybrid", description=(
        "Retrieval: hybrid (dense + BM25, fused), dense only, or keyword (BM25) only; a recall may ask for "
        "another `mode`."))
    # DBSF beat RRF in bench/memory.py (recall@3 0.895 against 0.816 with MiniLM).
    fusion: Literal["rrf", "dbsf"] = Field("dbsf", description="How hybrid search fuses the two rankings: DBSF or RRF.")
    dense_weight: float = Field(1.0, ge=0, le=100, description="RRF only: the dense ranking's weight.")
    keyword_weight: float = Field(1.0, ge=0, le=100, description="RRF only: the keyword (BM25) ranking's weight.")
    # Some embedding models are trained with their inputs marked.
    query_prefix: str = Field("", description='Put before each query when it is embedded (e5: `"query: "`).')
    document_prefix: str = Field("", description='Put before each chunk when it is embedded (e5: `"passage: "`).')

    @field_validator("pre_filter")
    @classmethod
    def _regexes(cls, v):
        for pattern in v:
            try:
                re.compile(pattern)
            except re.error as e:
                raise ValueError(f"{pattern!r} is not a regular expression: {e}") from None
        return v

    @field_validator("chunk_separators", "post_filter")
    @classmethod
    def _non_empty(cls, v):
        if any(s == "" for s in v):
            raise ValueError("entries must not be empty strings")
        return v

    @model_validator(mode="after")
    def _overlap(self):
        if self.chunk_overlap >= self.chunk_max_tokens:
            raise ValueError(f"chunk_overlap ({self.chunk_overlap}) must be below chunk_max_tokens ({self.chunk_max_tokens})")
        return self
