"""The memory routes: list, recall, ingest (one document or a multipart upload),
documents, deletion and ingestion jobs.

``memories`` is anything with the async methods of ``memory.service.MemoryService``: the
object itself in tests, a handle to the memory deployment in the graph.
"""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import JSONResponse
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from poly_ray.api.backend import MemoryBackend
from poly_ray.api.family import POLY
from poly_ray.api.openapi import WITH_BODY, doc
from poly_ray.api.parsing import parse_params, read_body
from poly_ray.api.services import Services, services
from poly_ray.errors import BadRequest, NotFound, PayloadTooLarge
from poly_ray.memory.memory import Upload

from .protocol import (
    MAX_FILES,
    Cleared,
    Deleted,
    Documents,
    JobStarted,
    JobState,
    MemoryList,
    Recall,
    RecallParams,
    Stored,
)

INGEST_ERRORS = (*WITH_BODY, 415, 422, 429)  # 429: uploads in flight or background jobs at their bound
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


router = POLY.router()


def memories_of(svc: Services) -> MemoryBackend:
    if svc.memories is None:
        raise NotFound("no memory is configured")
    return svc.memories


@router.get("/v1/memory", openapi_extra=doc(ok=MemoryList))
async def list_memories(request: Request):
    svc = services(request)
    who = svc.access.principal(request)
    names = await svc.memories.names() if svc.memories is not None else {}
    return {"memories": [m for m in names if who.allows("memory", m)]}


@router.get("/v1/memory/{memory}", name="recall_get", openapi_extra=doc(query=RecallParams, ok=Recall))
@router.post("/v1/memory/{memory}", openapi_extra=doc(body=RecallParams, ok=Recall, errors=WITH_BODY))
async def recall(memory: str, request: Request):
    svc = services(request)
    who = await svc.access.authorize(request, "memory", memory)
    params = await parse_params(request, RecallParams)
    bounds = request.app.state.config
    if params.n > bounds.max_recall:
        raise BadRequest(f"n: {params.n} is over the limit (max_recall) of {bounds.max_recall}")
    if len(params.prompt) > bounds.max_recall_chars:
        raise PayloadTooLarge(f"prompt: {len(params.prompt)} characters, over the limit (max_recall_chars)"
                              f" of {bounds.max_recall_chars}")
    chunks = await memories_of(svc).recall(memory, params.prompt, params.n, params.mode, owner=who.owner)
    # Poly answers the texts as "chunks" (its first versions as "memories");
    # "results" has them with their scores and metadata.
    texts = [c["text"] for c in chunks]
    return {"chunks": texts, "memories": texts, "results": chunks}


@router.put(
    "/v1/memory/{memory}", openapi_extra=doc(ok=Stored, accepted=JobStarted, errors=INGEST_ERRORS) | INGEST_BODY
)
async def ingest(memory: str, request: Request, wait: bool = True):
    svc = services(request)
    who = await svc.access.authorize(request, "memory", memory, write=True)
    uploads = await _uploads(request)
    result = await memories_of(svc).ingest(memory, uploads, wait=wait, owner=who.owner)
    return JSONResponse(result, status_code=200 if wait else 202)


@router.get("/v1/memory/{memory}/jobs/{job}", openapi_extra=doc(ok=JobState))
async def job(memory: str, job: str, request: Request):
    svc = services(request)
    await svc.access.authorize(request, "memory", memory)
    return await memories_of(svc).job(memory, job)


@router.get("/v1/memory/{memory}/documents", openapi_extra=doc(ok=Documents))
async def documents(memory: str, request: Request):
    svc = services(request)
    who = await svc.access.authorize(request, "memory", memory)
    return {"documents": await memories_of(svc).documents(memory, owner=who.owner), **await memories_of(svc).info(memory)}


@router.delete("/v1/memory/{memory}/documents/{document}", openapi_extra=doc(ok=Deleted))
async def delete_document(memory: str, document: str, request: Request):
    svc = services(request)
    who = await svc.access.authorize(request, "memory", memory, write=True)
    return await memories_of(svc).delete(memory, document, owner=who.owner)


@router.delete("/v1/memory/{memory}", openapi_extra=doc(ok=Cleared))
async def clear(memory: str, request: Request):
    svc = services(request)
    await svc.access.authorize(request, "memory", memory, write=True)
    return await memories_of(svc).clear(memory)


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
