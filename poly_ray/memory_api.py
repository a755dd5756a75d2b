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

from .errors import BadRequest, NotFound
from .httputil import Access, parse_params, read_body
from .memory import Upload
from .protocol import _Body

MAX_FILES = 100


class RecallParams(_Body):
    prompt: str = Field(min_length=1, max_length=100_000)
    n: int = Field(3, ge=1, le=100)
    mode: Literal["hybrid", "dense", "keyword"] | None = None


def register(app: FastAPI, memories, access: Access) -> None:
    def backend():
        if memories is None:
            raise NotFound("no memory is configured")
        return memories

    @app.get("/v1/memory")
    async def list_memories(request: Request):
        who = access.principal(request)
        names = await backend().names() if memories is not None else {}
        return {"memories": [m for m in names if who.allows("memory", m)]}

    @app.api_route("/v1/memory/{memory}", methods=["GET", "POST"])
    async def recall(memory: str, request: Request):
        await access.authorize(request, "memory", memory)
        params = await parse_params(request, RecallParams)
        chunks = await backend().recall(memory, params.prompt, params.n, params.mode)
        # "memories" is Poly's answer (texts); "chunks" adds scores and metadata.
        return {"memories": [c["text"] for c in chunks], "chunks": chunks}

    @app.put("/v1/memory/{memory}")
    async def ingest(memory: str, request: Request, wait: bool = True):
        await access.authorize(request, "memory", memory)
        uploads = await _uploads(request)
        result = await backend().ingest(memory, uploads, wait=wait)
        return JSONResponse(result, status_code=200 if wait else 202)

    @app.get("/v1/memory/{memory}/jobs/{job}")
    async def job(memory: str, job: str, request: Request):
        await access.authorize(request, "memory", memory)
        return await backend().job(memory, job)

    @app.get("/v1/memory/{memory}/documents")
    async def documents(memory: str, request: Request):
        await access.authorize(request, "memory", memory)
        return {"documents": await backend().documents(memory), **await backend().info(memory)}

    @app.delete("/v1/memory/{memory}/documents/{document}")
    async def delete_document(memory: str, document: str, request: Request):
        await access.authorize(request, "memory", memory)
        return await backend().delete(memory, document)

    @app.delete("/v1/memory/{memory}")
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
