"""Poly's native routes: tasks (completion, live SSE), models (embedding,
tokenization), status, readiness and stats."""

from __future__ import annotations

import json

from fastapi import Request
from fastapi.responses import JSONResponse

from poly_ray.api import sse
from poly_ray.api.family import POLY
from poly_ray.api.openapi import GENERATES, PLAIN, SSE, WITH_BODY, doc, ref
from poly_ray.api.parsing import overrides_off_loop, parse_params
from poly_ray.api.services import services
from poly_ray.api.streaming import Framer, respond
from poly_ray.errors import PayloadTooLarge
from poly_ray.generation import Chunk, Done, Reasoning, ToolCallDelta
from poly_ray.tasks.turn import TurnRequest

from .protocol import (
    Completion,
    CompletionParams,
    Embedding,
    EmbeddingBody,
    EmbeddingQuery,
    Embeddings,
    ModelList,
    PromptBody,
    Readiness,
    Stats,
    Status,
    TaskList,
    Tokenization,
)


def _not_ready(extra: dict) -> dict:
    extra["responses"]["503"] = {"description": "Not ready: what is still loading",
                                 "content": {"application/json": {"schema": ref(Readiness)}}}
    return extra


router = POLY.router()


@router.get("/status", openapi_extra=doc(ok=Status, errors=PLAIN))
async def status():
    return {"status": "ok"}


@router.get("/ready", openapi_extra=_not_ready(doc(ok=Readiness, errors=PLAIN)))
async def ready(request: Request):
    """Readiness (``/status`` is liveness): 503 until every model, and the memories, answer."""
    svc = services(request)
    waiting = [name for name, ok in (await svc.readiness.get()).items() if not ok]
    if waiting:
        return JSONResponse({"ready": False, "waiting": waiting}, status_code=503, headers={"Retry-After": "5"})
    return {"ready": True, "waiting": []}


@router.get("/v1/stats", openapi_extra=doc(ok=Stats, errors=(400, 401, 503)))
async def stats(request: Request):
    """Poly's stats: counts per task and each model's engine stats, of what the caller may use."""
    svc = services(request)
    who = svc.access.principal(request)
    stats, tasks = await svc.backend.stats(), await svc.access.names("task")
    return {
        # A model used bare (OpenAI, Ollama, simple APIs) counts under its own name.
        "tasks": {t: s for t, s in stats["tasks"].items() if who.allows("task" if t in tasks else "model", t)},
        "models": {m: s for m, s in stats["models"].items() if who.allows("model", m)},
    }


@router.get("/v1/task", openapi_extra=doc(ok=TaskList))
async def list_tasks(request: Request):
    svc = services(request)
    who = svc.access.principal(request)
    return {"tasks": [t for t in await svc.access.names("task") if who.allows("task", t)]}


@router.get("/v1/model", openapi_extra=doc(ok=ModelList))
async def list_models(request: Request):
    svc = services(request)
    who = svc.access.principal(request)
    return {"models": [m for m in await svc.access.names("model") if who.allows("model", m)]}


@router.get("/v1/task/{task}/completion", name="completion_get",
         openapi_extra=doc(query=CompletionParams, ok=Completion, errors=GENERATES))
@router.post("/v1/task/{task}/completion", openapi_extra=doc(body=CompletionParams, ok=Completion, errors=GENERATES))
async def completion(task: str, request: Request):
    svc = services(request)
    who = await svc.access.authorize(request, "task", task)
    params = await parse_params(request, CompletionParams)
    async with svc.limits.held(who.credential):
        overrides = await overrides_off_loop(request.app, params)
        return await svc.backend.complete(TurnRequest(task, params.prompt, overrides=overrides, owner=who.owner))


@router.get("/v1/task/{task}/live", name="live_get", openapi_extra=doc(query=CompletionParams, streams=SSE, errors=GENERATES))
@router.post("/v1/task/{task}/live", openapi_extra=doc(body=CompletionParams, streams=SSE, errors=GENERATES))
async def live(task: str, request: Request):
    svc = services(request)
    who = await svc.access.authorize(request, "task", task)
    params = await parse_params(request, CompletionParams)
    overrides = await overrides_off_loop(request.app, params)
    events = svc.backend.stream(TurnRequest(task, params.prompt, overrides=overrides, owner=who.owner))
    _, release = await svc.limits.accepted(events, who.credential)
    return respond(events, _LiveFramer(), release)


@router.get("/v1/task/{task}/status", name="task_status", openapi_extra=doc(ok=Status))
async def task_status(task: str, request: Request):
    """Poly's per-task check: the caller may use the task, and it exists."""
    svc = services(request)
    await svc.access.authorize(request, "task", task)
    return {"status": "ok"}


@router.get("/v1/model/{model}/embedding", name="embedding_get", openapi_extra=doc(query=EmbeddingQuery, ok=Embedding))
@router.post("/v1/model/{model}/embedding", openapi_extra=doc(
    body=EmbeddingBody, ok={"anyOf": [ref(Embedding), ref(Embeddings)]}, errors=WITH_BODY))
async def embedding(model: str, request: Request):
    svc = services(request)
    who = await svc.access.authorize(request, "model", model)
    body = await parse_params(request, EmbeddingBody if request.method == "POST" else EmbeddingQuery)
    vectors = await svc.embed(who, model, [body.prompt] if isinstance(body.prompt, str) else body.prompt)
    if isinstance(body.prompt, str):
        return {"embedding": vectors[0]}
    return {"embeddings": vectors}


@router.get("/v1/model/{model}/tokenization", name="tokenization_get", openapi_extra=doc(query=PromptBody, ok=Tokenization))
@router.post("/v1/model/{model}/tokenization", openapi_extra=doc(body=PromptBody, ok=Tokenization, errors=WITH_BODY))
async def tokenization(model: str, request: Request):
    svc = services(request)
    await svc.access.authorize(request, "model", model)
    body = await parse_params(request, PromptBody)
    limit = request.app.state.config.max_tokenize_chars
    if len(body.prompt) > limit:
        raise PayloadTooLarge(f"prompt: {len(body.prompt)} characters, over the limit (max_tokenize_chars) of {limit}")
    # Poly answers each token's id as "token"; "id" stays for this API's older clients.
    return {"tokens": [{"token": t["id"], **t} for t in await svc.backend.tokenize(model, body.prompt)]}


class _LiveFramer(Framer):
    """``/live``: each piece of text a ``data:`` event (a reasoning model's thinking an
    ``event: reasoning``), a task's tool call an ``event: tool_call`` sent whole, then
    ``event: done`` with the stats."""

    def __init__(self):
        self.call: dict | None = None  # the tool call being written

    def event(self, ev) -> list[bytes]:
        if isinstance(ev, Chunk) and ev.text:
            return [sse.event(ev.text)]
        if isinstance(ev, Reasoning) and ev.text:
            return [sse.event(ev.text, "reasoning")]
        if isinstance(ev, ToolCallDelta):
            out = self._call() if ev.id else []
            if ev.id:
                self.call = {"id": ev.id, "name": ev.name, "arguments": ev.arguments}
            elif self.call is None:
                raise RuntimeError("a tool call's arguments came before its id")
            else:
                self.call["arguments"] += ev.arguments
            return out
        return []

    async def done(self, done: Done) -> list[bytes]:
        calls = self._call() if done.finish_reason != "length" else []
        return [*calls, sse.json_event("done", done.to_dict())]

    def _call(self) -> list[bytes]:
        if self.call is None:
            return []
        return [sse.json_event("tool_call", {**self.call, "arguments": json.loads(self.call["arguments"])})]
