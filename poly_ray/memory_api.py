"""The memory routes: list, recall, ingest (one document or a multipart upload),
documents, deletion and ingestion jobs.

``memories`` is anything with the async methods of ``memories.Memories``: the
object itself in tests, a handle to the memory deployment in the graph.
"""

from __future__ import annotations

from typing import Literal

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import Field
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from pydantic import BaseModel

from .errors import BadRequest, NotFound
from .httputil import Access, parse_params, read_body
from .memory import Upload
from .openapi import WITH_BODY, doc
from .protocol import _Body

MAX_FILES = 100


class RecallParams(_Body):
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
    memories: list[str]
    chunks: list[RecalledChunk]


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


INGEST_ERRORS = (*WITH_BODY, 415, 422)
_BINARY = {"type": "string", "format": "binary"}
INGEST_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "text/plain": {"schema": {"type": "string"}},
            "application/pdf": {"schema": _BINARY},
            "application/vnd.openxmlformats-officedocument.wordprocessingml.document": {"schema": _BINARY},
            "multipart/form-data": {
                "schema": {"type": "object", "properties": {"file": {"type": "array", "items": _BINARY}}}
            },
        },
    }
}


def register(app: FastAPI, memories, access: Access) -> None:
    def backend():
        if memories is None:
            raise NotFound("no memory is configured")
        return memories

    @app.get("/v1/memory", openapi_extra=doc(ok=MemoryList))
    async def list_memories(request: Request):
        who = access.principal(request)
        names = await backend().names() if memories is not None else {}
        return {"memories": [m for m in names if who.allows("memory", m)]}

    @app.get("/v1/memory/{memory}", name="recall_get", openapi_extra=doc(query=RecallParams, ok=Recall))
    @app.post("/v1/memory/{memory}", openapi_extra=doc(body=RecallParams, ok=Recall, errors=WITH_BODY))
    async def recall(memory: str, request: Request):
        await access.authorize(request, "memory", memory)
        params = await parse_params(request, RecallParams)
        chunks = await backend().recall(memory, params.prompt, params.n, params.mode)
        # "memories" is Poly's answer (texts); "chunks" adds scores and metadata.
        return {"memories": [c["text"] for c in chunks], "chunks": chunks}

    @app.put(
        "/v1/memory/{memory}", openapi_extra=doc(ok=Stored, accepted=JobStarted, errors=INGEST_ERRORS) | INGEST_BODY
    )
    async def ingest(memory: str, request: Request, wait: bool = True):
        await access.authorize(request, "memory", memory)
        uploads = await _uploads(request)
        result = await backend().ingest(memory, uploads, wait=wait)
        return JSONResponse(result, status_code=200 if wait else 202)

    @app.get("/v1/memory/{memory}/jobs/{job}", openapi_extra=doc(ok=JobState))
    async def job(memory: str, job: str, request: Request):
        await access.authorize(request, "memory", memory)
        return await backend().job(memory, job)

    @app.get("/v1/memory/{memory}/documents", openapi_extra=doc(ok=Documents))
    async def documents(memory: str, request: Request):
        await access.authorize(request, "memory", memory)
        return {"documents": await backend().documents(memory), **await backend().info(memory)}

    @app.delete("/v1/memory/{memory}/documents/{document}", openapi_extra=doc(ok=Deleted))
    async def delete_document(memory: str, document: str, request: Request):
        await access.authorize(request, "memory", memory)
        return await backend().delete(memory, document)

    @app.delete("/v1/memory/{memory}", openapi_extra=doc(ok=Cleared))
    async def clear(memory: str, request: Request):
        await access.authorize(request, "memory", memory)
        return await backend().clear(memory)


async def _uploads(request: Request) -> list[Upload]:
    """The documents of a PUT: its body, or each file of a multipart/form-data body."""
    body = await read_body(request, "max_upload_bytes")
    content_type = request.headers.get("content-type", "")
    name = request.headers.get("x-filename") or request.query_params.get("filename")
    if not content_type.lower().startswith("multipart/form-data"):
        return [Upload(body, content_type or None, name)]

    async def stream():
        yield body

    try:
        form = await MultiPartParser(
            request.headers, stream(), max_files=MAX_FILES, max_fields=MAX_FILES, max_part_size=len(body) + 1
        ).parse()
    except MultiPartException as e:
        raise BadRequest(f"the multipart body cannot be read: {e.message}") from None
    files = [v for _, v in form.multi_items() if isinstance(v, UploadFile)]
    if not files:
        raise BadRequest("the multipart body holds no file: send each document as a file field")
    uploads = []
    for f in files:
        uploads.append(Upload(await f.read(), f.content_type, f.filename))
        await f.close()
    return uploads
