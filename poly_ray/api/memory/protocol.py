"""The memory routes' bodies and answers: recall, stored documents, jobs, deletions."""


from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from poly_ray.api.fields import Body

MAX_FILES = 100


class RecallParams(Body):
    prompt: str = Field(min_length=1, max_length=100_000)
    n: int = Field(3, ge=1, le=100)
    mode: Literal["hybrid", "dense", "keyword"] | None = None


class MemoryList(BaseModel):
    memories: list[str]


class ChunkMetadata(BaseModel):
    document: str | None
    source: str | None
    page: int | None
    chunk: int | None
    start: int | None
    end: int | None


class RecalledChunk(BaseModel):
    text: str
    score: float
    metadata: ChunkMetadata


class Recall(BaseModel):
    chunks: list[str]  # Poly's answer: the texts, best first
    memories: list[str]  # the same texts (the name of Poly's first versions)
    results: list[RecalledChunk]  # the same chunks with score and metadata


class StoredDocument(BaseModel):
    document: str
    chunks: int
    source: str | None
    stored: bool


class Stored(BaseModel):
    documents: list[StoredDocument]


class JobStarted(BaseModel):
    job: str
    state: str
    chunks_total: int


class JobError(BaseModel):
    code: str
    message: str
    status: int


class JobState(BaseModel):
    id: str
    memory: str
    files: int
    state: Literal["running", "done", "failed"]
    chunks_done: int
    chunks_total: int
    result: Stored | None = None
    error: JobError | None = None
    started: float
    finished: float | None = None
    attempts: int = 1  # more than 1: resumed after a restart of the server


class DocumentInfo(BaseModel):
    document: str | None
    source: str | None
    content_type: str | None
    chunks: int | None
    stored_at: float | None


class Documents(BaseModel):
    documents: list[DocumentInfo]
    embedding_model: str
    dimensions: int
    search: str
    chunks: int


class Deleted(BaseModel):
    document: str
    deleted_chunks: int


class Cleared(BaseModel):
    deleted_chunks: int
