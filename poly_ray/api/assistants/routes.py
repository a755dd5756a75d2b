"""The Assistants API (v2, ``client.beta`` in the openai package): assistants,
threads, messages, runs and run steps, in the state store, owned by the
request's credential (another credential's ids read as missing: 404).
Listings are paginated (``limit``, ``after``, ``before``, ``order``)."""

from __future__ import annotations

import asyncio

from fastapi import Request
from fastapi.responses import JSONResponse

from poly_ray.api.auth import Principal, check_target
from poly_ray.api.backend import StateBackend
from poly_ray.api.family import OPENAI
from poly_ray.api.fields import ListQuery
from poly_ray.api.openapi import AUTHORIZED, GENERATES, SSE, WITH_BODY, doc
from poly_ray.api.parsing import parse_params
from poly_ray.api.services import services, stateful
from poly_ray.api.streaming import respond
from poly_ray.errors import BadRequest, NotFound
from poly_ray.state.kinds import ASSISTANT, MESSAGE, RUN, STEP, THREAD

from . import protocol as p
from .runs import Framer

POLL = {"openai-poll-after-ms": "200"}  # create_and_poll's interval (its default is a second)


router = OPENAI.router()


def store(request: Request) -> StateBackend:
    return stateful(request)[0]


def caller(request: Request) -> tuple[Principal, str]:
    who = stateful(request)[1]
    return who, who.owner


async def check_resources(request: Request, who: Principal, tool_resources, where: str = "tool_resources") -> None:
    """The memories file_search names exist, are few enough, and the caller may read them
    (a run recalls their passages into its answer, as ``GET /v1/memory/NAME`` would)."""
    names = p.memory_names(tool_resources, where)
    if not names:
        return
    limit = services(request).config.max_file_search_memories
    if len(names) > limit:
        raise BadRequest(f"{where}.file_search.vector_store_ids: {len(names)} memories; at most {limit} "
                         "(max_file_search_memories)")
    memories = services(request).memories
    known = await memories.names() if memories is not None else {}
    for i, name in enumerate(names):
        if name not in known:
            raise BadRequest(f"{where}.file_search.vector_store_ids[{i}]: no memory named '{name}'"
                             f" (memories: {', '.join(known) or 'none'})")
        who.check("memory", name)


async def check_assistant(request: Request, who, body) -> None:
    if body.model is not None:
        await check_target(services(request).backend, who, body.model, "model")
    caps = request_caps(request)
    if body.tools is not None:
        await asyncio.to_thread(p.check_tools, body.tools, "tools", caps)
    await asyncio.to_thread(p.format_grammar, body.response_format, "response_format", caps)
    await check_resources(request, who, body.tool_resources)


def request_caps(request: Request):
    return request.app.state.schema_caps


async def child(request: Request, owner: str, kind: str, oid: str, parent: str) -> dict:
    """An object that must belong to ``parent`` (a thread's message, a run's step)."""
    obj = await store(request).get(owner, kind, oid)
    if await store(request).parent_of(owner, kind, oid) != parent:
        raise NotFound(f"No {kind} found with id '{oid}'.")
    return obj


# -- assistants


@router.post("/v1/assistants", openapi_extra=doc(body=p.AssistantCreate, errors=WITH_BODY))
async def create_assistant(request: Request):
    who, owner = caller(request)
    body = await parse_params(request, p.AssistantCreate)
    await check_assistant(request, who, body)
    return await store(request).create(owner, ASSISTANT, p.assistant_object(body))


@router.get("/v1/assistants", openapi_extra=doc(query=ListQuery, errors=AUTHORIZED))
async def list_assistants(request: Request):
    _, owner = caller(request)
    query = await parse_params(request, ListQuery)
    return await store(request).list(owner, ASSISTANT, **query.page())


@router.get("/v1/assistants/{aid}", openapi_extra=doc(errors=AUTHORIZED))
async def retrieve_assistant(request: Request, aid: str):
    return await store(request).get(caller(request)[1], ASSISTANT, aid)


@router.post("/v1/assistants/{aid}", openapi_extra=doc(body=p.AssistantUpdate, errors=WITH_BODY))
async def update_assistant(request: Request, aid: str):
    who, owner = caller(request)
    body = await parse_params(request, p.AssistantUpdate)
    await store(request).get(owner, ASSISTANT, aid)
    await check_assistant(request, who, body)
    return await store(request).update(owner, ASSISTANT, aid, body.model_dump(exclude_unset=True))


@router.delete("/v1/assistants/{aid}", openapi_extra=doc(errors=AUTHORIZED))
async def delete_assistant(request: Request, aid: str):
    await store(request).delete(caller(request)[1], ASSISTANT, aid)
    return p.deleted(aid, "assistant")


# -- threads and messages (POST /v1/threads/runs before /v1/threads/{tid} matches it)


@router.post("/v1/threads/runs", openapi_extra=doc(
    body=p.ThreadAndRunCreate, streams=SSE, errors=GENERATES))
async def create_thread_and_run(request: Request):
    who, owner = caller(request)
    body = await parse_params(request, p.ThreadAndRunCreate)
    await store(request).get(owner, ASSISTANT, body.assistant_id)
    spec = body.thread or p.ThreadCreate()
    if body.tool_resources is not None and spec.tool_resources is None:  # the request's, for the new thread
        spec = spec.model_copy(update={"tool_resources": body.tool_resources})
    thread = await new_thread(request, who, spec, "thread.")
    return await start_run(request, who, owner, thread["id"], body, [("thread.created", thread)])


async def new_thread(request: Request, who: Principal, body: p.ThreadCreate, where: str = "") -> dict:
    owner = who.owner
    await check_resources(request, who, body.tool_resources, f"{where}tool_resources")
    thread = p.thread_object(body.metadata, body.tool_resources)
    messages = [p.new_message(thread["id"], m, f"{where}messages[{i}]") for i, m in enumerate(body.messages)]
    thread = await store(request).create(owner, THREAD, thread)
    for message in messages:
        await store(request).create(owner, MESSAGE, message, parent=thread["id"])
    return thread


@router.post("/v1/threads", openapi_extra=doc(body=p.ThreadCreate, errors=WITH_BODY))
async def create_thread(request: Request):
    who, _ = caller(request)
    return await new_thread(request, who, await parse_params(request, p.ThreadCreate))


@router.get("/v1/threads/{tid}", openapi_extra=doc(errors=AUTHORIZED))
async def retrieve_thread(request: Request, tid: str):
    return await store(request).get(caller(request)[1], THREAD, tid)


@router.post("/v1/threads/{tid}", openapi_extra=doc(body=p.ThreadUpdate, errors=WITH_BODY))
async def update_thread(request: Request, tid: str):
    who, owner = caller(request)
    body = await parse_params(request, p.ThreadUpdate)
    await store(request).get(owner, THREAD, tid)
    await check_resources(request, who, body.tool_resources)
    return await store(request).update(owner, THREAD, tid, body.model_dump(exclude_unset=True))


@router.delete("/v1/threads/{tid}", openapi_extra=doc(errors=AUTHORIZED))
async def delete_thread(request: Request, tid: str):
    await store(request).delete(caller(request)[1], THREAD, tid)  # its messages, runs and steps with it
    return p.deleted(tid, "thread")


@router.post("/v1/threads/{tid}/messages", openapi_extra=doc(body=p.MessageCreate, errors=WITH_BODY))
async def create_message(request: Request, tid: str):
    _, owner = caller(request)
    body = await parse_params(request, p.MessageCreate)
    await store(request).get(owner, THREAD, tid)
    return await store(request).create(owner, MESSAGE, p.new_message(tid, body, ""), parent=tid)


@router.get("/v1/threads/{tid}/messages", openapi_extra=doc(query=p.MessagesQuery, errors=AUTHORIZED))
async def list_messages(request: Request, tid: str):
    _, owner = caller(request)
    query = await parse_params(request, p.MessagesQuery)
    await store(request).get(owner, THREAD, tid)
    page = await store(request).list(owner, MESSAGE, parent=tid, **query.page())
    if query.run_id is not None:
        page["data"] = [m for m in page["data"] if m.get("run_id") == query.run_id]
    return page


@router.get("/v1/threads/{tid}/messages/{mid}", openapi_extra=doc(errors=AUTHORIZED))
async def retrieve_message(request: Request, tid: str, mid: str):
    return await child(request, caller(request)[1], MESSAGE, mid, tid)


@router.post("/v1/threads/{tid}/messages/{mid}", openapi_extra=doc(
    body=p.MessageUpdate, errors=WITH_BODY))
async def update_message(request: Request, tid: str, mid: str):
    _, owner = caller(request)
    body = await parse_params(request, p.MessageUpdate)
    await child(request, owner, MESSAGE, mid, tid)
    return await store(request).update(owner, MESSAGE, mid, {"metadata": body.metadata or {}})


@router.delete("/v1/threads/{tid}/messages/{mid}", openapi_extra=doc(errors=AUTHORIZED))
async def delete_message(request: Request, tid: str, mid: str):
    _, owner = caller(request)
    await child(request, owner, MESSAGE, mid, tid)
    await store(request).delete(owner, MESSAGE, mid)
    return p.deleted(mid, "thread.message")


# -- runs


async def start_run(request: Request, who: Principal, owner: str, tid: str, body: p.RunCreate, first: list):
    assistant = await store(request).get(owner, ASSISTANT, body.assistant_id)
    run = p.run_object(tid, assistant, body)
    await check_target(services(request).backend, who, run["model"], "model")
    caps = request_caps(request)
    if body.tools is not None:
        await asyncio.to_thread(p.check_tools, body.tools, "tools", caps)
    await asyncio.to_thread(p.format_grammar, body.response_format, "response_format", caps)
    messages = [p.new_message(tid, m, f"additional_messages[{i}]") for i, m in enumerate(body.additional_messages or [])]
    run = await services(request).runs.create(owner, run)  # refused while the thread has an active run
    for message in messages:  # before the run starts: it reads them
        await store(request).create(owner, MESSAGE, message, parent=tid)
    events = services(request).runs.start(who, run,
                        [*first, ("thread.run.created", run), ("thread.run.queued", run)], body.stream)
    return answer(run, events)


def answer(run: dict, events):
    if events is None:
        return JSONResponse(run, headers=POLL)
    return respond(events, Framer())  # the run keeps its place in the background


@router.post("/v1/threads/{tid}/runs", openapi_extra=doc(
    body=p.RunCreate, streams=SSE, errors=GENERATES))
async def create_run(request: Request, tid: str):
    who, owner = caller(request)
    body = await parse_params(request, p.RunCreate)
    await store(request).get(owner, THREAD, tid)
    return await start_run(request, who, owner, tid, body, [])


@router.get("/v1/threads/{tid}/runs", openapi_extra=doc(query=ListQuery, errors=AUTHORIZED))
async def list_runs(request: Request, tid: str):
    _, owner = caller(request)
    query = await parse_params(request, ListQuery)
    await store(request).get(owner, THREAD, tid)
    return await store(request).list(owner, RUN, parent=tid, **query.page())


@router.get("/v1/threads/{tid}/runs/{rid}", openapi_extra=doc(errors=AUTHORIZED))
async def retrieve_run(request: Request, tid: str, rid: str):
    return JSONResponse(await child(request, caller(request)[1], RUN, rid, tid), headers=POLL)


@router.post("/v1/threads/{tid}/runs/{rid}", openapi_extra=doc(body=p.MessageUpdate, errors=WITH_BODY))
async def update_run(request: Request, tid: str, rid: str):
    _, owner = caller(request)
    body = await parse_params(request, p.MessageUpdate)
    await child(request, owner, RUN, rid, tid)
    return await store(request).update(owner, RUN, rid, {"metadata": body.metadata or {}})


@router.post("/v1/threads/{tid}/runs/{rid}/cancel", openapi_extra=doc(errors=AUTHORIZED))
async def cancel_run(request: Request, tid: str, rid: str):
    _, owner = caller(request)
    return await services(request).runs.cancel(owner, await child(request, owner, RUN, rid, tid))


@router.post("/v1/threads/{tid}/runs/{rid}/submit_tool_outputs", openapi_extra=doc(
    body=p.SubmitToolOutputs, streams=SSE, errors=GENERATES))
async def submit_tool_outputs(request: Request, tid: str, rid: str):
    who, owner = caller(request)
    body = await parse_params(request, p.SubmitToolOutputs)
    run = await services(request).runs.submit(owner, await child(request, owner, RUN, rid, tid), body.tool_outputs)
    return answer(run, services(request).runs.start(who, run, [("thread.run.queued", run)], body.stream))


@router.get("/v1/threads/{tid}/runs/{rid}/steps", openapi_extra=doc(
    query=ListQuery, errors=AUTHORIZED))
async def list_steps(request: Request, tid: str, rid: str):
    _, owner = caller(request)
    query = await parse_params(request, ListQuery)
    await child(request, owner, RUN, rid, tid)
    return await store(request).list(owner, STEP, parent=rid, **query.page())


@router.get("/v1/threads/{tid}/runs/{rid}/steps/{sid}", openapi_extra=doc(errors=AUTHORIZED))
async def retrieve_step(request: Request, tid: str, rid: str, sid: str):
    _, owner = caller(request)
    await child(request, owner, RUN, rid, tid)
    return await child(request, owner, STEP, sid, rid)
