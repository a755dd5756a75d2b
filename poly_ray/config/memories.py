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
    path: Path


class QdrantStore(Strict):
    url: str = Field(pattern=r"^https?://")
    collection: str = Field(min_length=1)
    api_key: str | None = None


class StoreConfig(Strict):
    """Exactly one of: the embedded store on disk (``file``, or Poly's ``hora``
    spelling), or a collection on a Qdrant server (``qdrant``)."""

    file: FileStore | None = None
    hora: FileStore | None = None
    qdrant: QdrantStore | None = None

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
    store: StoreConfig
    dimensions: int = Field(ge=1, le=65536)
    embedding_model: str
    chunk_max_tokens: int = Field(255, ge=8, le=1 << 16)
    # Tried in order: a piece too long for one is cut at the next (Poly's default is [" "]).
    chunk_separators: list[str] = ["\n\n", "\n", ". ", " "]
    chunk_overlap: int = Field(0, ge=0)
    pre_filter: list[str] = _PRE_FILTER
    post_filter: list[str] = []
    # Retrieval: hybrid (dense + BM25, fused), dense only, or keyword (BM25) only.
    search: Literal["hybrid", "dense", "keyword"] = "hybrid"
    # DBSF beat RRF in bench/memory.py (recall@3 0.895 against 0.816 with MiniLM).
    fusion: Literal["rrf", "dbsf"] = "dbsf"
    dense_weight: float = Field(1.0, ge=0, le=100)  # RRF only
    keyword_weight: float = Field(1.0, ge=0, le=100)
    # Some embedding models want their inputs marked (e5: "query: ", "passage: ").
    query_prefix: str = ""
    document_prefix: str = ""

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
