"""Ollama-compatible routes: /api/generate, /api/chat, /api/embed, /api/tags, /api/show, /api/ps,
/api/pull, /api/version.

``model`` names a task or a bare model, as on the OpenAI routes. Streams are
newline-delimited JSON ending with an object that has ``done: true``, the
``done_reason`` and durations in nanoseconds. Errors are ``{"error": "..."}``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict, replace
from datetime import datetime, timezone
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, StreamingResponse

from poly_ray.api.auth import Principal
from poly_ray.api.family import OLLAMA
from poly_ray.api.limits import StreamLimits
from poly_ray.api.openapi import GENERATES, NDJSON, PLAIN, WITH_BODY, doc, ref
from poly_ray.api.parsing import overrides_off_loop, parse_params
from poly_ray.api.services import Services, services
from poly_ray.api.streaming import Framer, respond
from poly_ray.errors import NotFound
from poly_ray.generation import Chunk, Done, Reasoning, ToolCall, ToolCallDelta, gather_calls
from poly_ray.tasks.turn import TurnRequest

from . import pull as pulling
from .protocol import (
    VERSION,
    ChatBody,
    EmbedBody,
    GenerateBody,
    GenerationBody,
    OllamaChatResponse,
    OllamaEmbedResponse,
    OllamaGenerateResponse,
    OllamaLoaded,
    OllamaProgress,
    OllamaPs,
    OllamaShow,
    OllamaTags,
    OllamaVersion,
    PullBody,
    ShowBody,
)

# Ollama's expires_at for a model that stays loaded: Serve, not keep_alive, decides when a replica goes.
NEVER = "9999-12-31T23:59:59Z"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")


router = OLLAMA.router()


async def target(svc: Services, who: Principal, name: str) -> dict:
    """The task or model ``name`` may be used by the caller; what it is."""
    tasks, models = await svc.backend.tasks(), await svc.backend.models()
    if name in tasks:
        who.check("task", name)
        return {"kind": "task", **asdict(tasks[name])}
    if name in models:
        who.check("model", name)
        return {"kind": "model", **asdict(models[name])}
    raise NotFound(f"model '{name}' not found")


@router.get("/api/version", openapi_extra=doc(ok=OllamaVersion, errors=PLAIN))
async def version():
    return {"version": VERSION}


@router.get("/api/tags", openapi_extra=doc(ok=OllamaTags))
async def tags(request: Request):
    svc = services(request)
    who = svc.access.principal(request)
    tasks, models = await svc.backend.tasks(), await svc.backend.models()
    names = [n for n in tasks if who.allows("task", n)] + [n for n in models if who.allows("model", n)]
    return {"models": [_model_entry(n) for n in names]}


@router.post("/api/show", openapi_extra=doc(body=ShowBody, ok=OllamaShow, errors=WITH_BODY))
async def show(request: Request):
    svc = services(request)
    who = svc.access.principal(request)
    body = await parse_params(request, ShowBody)
    info = await target(svc, who, body.model)
    details = {"format": "gguf", "family": "", "parameter_size": "", "quantization_level": ""}
    params = "\n".join(f"{k} {v}" for k, v in info.items() if k != "kind")
    return {"modelfile": "", "parameters": params, "template": "", "details": details,
            "model_info": info, "capabilities": ["completion", "embedding"]}


@router.get("/api/ps", openapi_extra=doc(ok=OllamaPs))
async def ps(request: Request):
    """The tasks and models the caller may use whose model has a replica that answers (is loaded)."""
    svc = services(request)
    who = svc.access.principal(request)
    tasks, models = await svc.backend.tasks(), await svc.backend.models()
    # The readiness answer /ready shares: each call asks every model, so many at once were many fan-outs.
    loaded = {name.removeprefix("model "): ok for name, ok in (await svc.readiness.get()).items()}
    running = [(n, tasks[n].model) for n in tasks if who.allows("task", n)]
    running += [(n, n) for n in models if who.allows("model", n)]
    return {"models": [{**_model_entry(n), "expires_at": NEVER, "size_vram": 0,
                        "context_length": models[m].context_size} for n, m in running if loaded.get(m)]}


@router.post("/api/pull", openapi_extra=doc(body=PullBody, ok=OllamaProgress, streams=NDJSON,
                                         errors=(*WITH_BODY, 502)))
async def pull(request: Request):
    svc = services(request)
    who = svc.access.principal(request)
    body = await parse_params(request, PullBody)
    kind, model, model_cfg = pulling.model_of(svc.config, body.model)
    who.check(kind, body.model)
    progress = pulling.lines(model, model_cfg, svc.config.cache_path)
    if not body.stream:
        last = [line async for line in progress][-1]
        return JSONResponse(last, status_code=502 if "error" in last else 200)

    async def ndjson():
        async for line in progress:
            yield json.dumps(line, separators=(",", ":")).encode() + b"\n"

    return StreamingResponse(ndjson(), media_type="application/x-ndjson")


def loaded(body: GenerationBody, payload: dict) -> JSONResponse:
    """Ollama's answer to a request with nothing to generate: the model is loaded (it is, while Serve
    runs its replicas) or, with keep_alive 0, "unloaded" (it stays: Serve decides that)."""
    reason = "unload" if body.unloads else "load"
    return JSONResponse({"model": body.model, "created_at": _now(), **payload, "done": True, "done_reason": reason})


@router.post("/api/generate", openapi_extra=doc(
    body=GenerateBody, ok={"anyOf": [ref(OllamaGenerateResponse), ref(OllamaLoaded)]},
    streams=NDJSON, errors=GENERATES))
async def generate(request: Request):
    svc = services(request)
    who = svc.access.principal(request)
    body = await parse_params(request, GenerateBody)
    await target(svc, who, body.model)
    if not body.prompt and not body.system:
        return loaded(body, {"response": ""})
    # /api/generate cannot show a tool call: a task's tools stay out of it.
    overrides = replace(await overrides_off_loop(request.app, body), tool_choice="none")
    if body.system:
        turn = TurnRequest(body.model, messages=(("system", body.system), ("user", body.prompt)),
                           overrides=overrides, owner=who.owner)
    else:
        turn = TurnRequest(body.model, body.prompt, overrides=overrides, owner=who.owner)
    events = svc.backend.stream(turn)
    return await _respond(body, events, svc.limits, who.credential, _generated)


@router.post("/api/chat", openapi_extra=doc(
    body=ChatBody, ok={"anyOf": [ref(OllamaChatResponse), ref(OllamaLoaded)]},
    streams=NDJSON, errors=GENERATES))
async def chat(request: Request):
    svc = services(request)
    who = svc.access.principal(request)
    body = await parse_params(request, ChatBody)
    await target(svc, who, body.model)
    if not body.messages:
        return loaded(body, {"message": {"role": "assistant", "content": ""}})
    overrides = await overrides_off_loop(request.app, body)
    events = svc.backend.stream(TurnRequest(body.model, messages=tuple(body.conversation()), overrides=overrides,
                                        owner=who.owner))
    return await _respond(body, events, svc.limits, who.credential, _chat_message)


@router.post("/api/embed", openapi_extra=doc(body=EmbedBody, ok=OllamaEmbedResponse, errors=WITH_BODY))
async def embed(request: Request):
    svc = services(request)
    svc.access.principal(request)  # 401 before looking at the body
    body = await parse_params(request, EmbedBody)
    who = await svc.access.authorize(request, "model", body.model)
    start = time.perf_counter_ns()
    vectors = await svc.embed(who, body.model, [body.input] if isinstance(body.input, str) else body.input)
    return {"model": body.model, "embeddings": vectors, "total_duration": time.perf_counter_ns() - start,
            "load_duration": 0}


def _generated(text: str, calls: Sequence[ToolCall] = (), thinking: str = "") -> dict:
    return {"response": text, **({"thinking": thinking} if thinking else {})}


def _chat_message(text: str, calls: Sequence[ToolCall] = (), thinking: str = "") -> dict:
    message: dict[str, Any] = {"role": "assistant", "content": text}
    if thinking:  # a reasoning model's thinking, apart from the answer
        message["thinking"] = thinking
    whole = []
    for c in calls:  # Ollama's shape: the arguments as an object; a call cut by num_predict is left out
        try:
            whole.append({"function": {"name": c.name, "arguments": json.loads(c.arguments)}})
        except (ValueError, RecursionError):
            pass
    if whole:
        message["tool_calls"] = whole
    return {"message": message}


def _model_entry(name: str) -> dict:
    return {"name": name, "model": name, "modified_at": _now(), "size": 0, "digest": "",
            "details": {"format": "gguf", "family": "", "parameter_size": "", "quantization_level": ""}}


async def _respond(body: GenerationBody, events, slots: StreamLimits, credential: str | None, payload):
    """Wait for the prompt to be accepted, then answer whole or as NDJSON lines."""
    started = time.perf_counter_ns()
    _, release = await slots.accepted(events, credential)

    def final(done: Done, text: str = "", calls: Sequence[ToolCall] = ()) -> dict:
        t = done.timings
        return {"model": body.model, "created_at": _now(), **payload(text, calls, done.reasoning), "done": True,
                "done_reason": "length" if done.finish_reason == "length" else "stop",
                "total_duration": time.perf_counter_ns() - started, "load_duration": 0,
                "prompt_eval_count": done.prompt_tokens,
                "prompt_eval_duration": int(t.get("prompt_ms", 0) * 1e6),
                "eval_count": done.completion_tokens, "eval_duration": int(t.get("decode_ms", 0) * 1e6)}

    if not body.stream:
        try:
            text, _, calls, done = await gather_calls(events)
        finally:
            release()
        return JSONResponse(final(done, text, calls))

    return respond(events, _Framer(body.model, payload, final), release)


class _Framer(Framer):
    """NDJSON lines: text as it comes, each tool call whole (Ollama does not stream
    a call's arguments), then the final line with ``done: true`` and the timings."""

    family, media_type, keep_alive = OLLAMA, "application/x-ndjson", None

    def __init__(self, model: str, payload, final):
        self.model, self.payload, self.final = model, payload, final
        self.call: ToolCall | None = None  # the call being written

    def event(self, ev) -> list[bytes]:
        if isinstance(ev, Chunk) and ev.text:
            return [self._partial(ev.text)]
        if isinstance(ev, Reasoning) and ev.text:
            return [self._partial("", thinking=ev.text)]
        if isinstance(ev, ToolCallDelta):
            out = self._flush() if ev.id else []
            if ev.id:
                self.call = ToolCall(ev.id, ev.name, ev.arguments)
            elif self.call is None:
                raise RuntimeError("a tool call's arguments came before its id")
            else:
                self.call = ToolCall(self.call.id, self.call.name, self.call.arguments + ev.arguments)
            return out
        return []

    async def done(self, done: Done) -> list[bytes]:
        calls = self._flush() if done.finish_reason != "length" else []
        return [*calls, _line(self.final(done))]

    def _flush(self) -> list[bytes]:
        return [self._partial("", [self.call])] if self.call else []

    def _partial(self, text: str, calls: list[ToolCall] | None = None, thinking: str = "") -> bytes:
        shown = self.payload(text, calls or (), thinking)
        return _line({"model": self.model, "created_at": _now(), **shown, "done": False})


def _line(obj) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode() + b"\n"

