"""Ollama-compatible routes: /api/generate, /api/chat, /api/embed, /api/tags, /api/show, /api/version.

``model`` names a task or a bare model, as on the OpenAI routes. Streams are
newline-delimited JSON ending with an object that has ``done: true``, the
``done_reason`` and durations in nanoseconds. Errors are ``{"error": "..."}``.
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator

from . import grammars
from .errors import NotFound, PolyError
from .generation import Chunk, Done
from .auth import Principal
from .openapi import GENERATES, NDJSON, PLAIN, WITH_BODY, doc
from .httputil import Access, GenerationStream, Slots, parse_params
from .tasks import gather

PREFIX = "/api/"
VERSION = "0.6.0"  # the Ollama API version whose shapes these routes follow


# Ollama's options that tune its own server (memory, threads, GPUs): accepted, and
# ignored, since a model's config decides them here. Any other unknown option is refused.
_SERVER_OPTIONS = ("numa", "num_ctx", "num_batch", "num_gpu", "main_gpu", "low_vram", "f16_kv", "logits_all",
                   "vocab_only", "use_mmap", "use_mlock", "embedding_only", "num_thread", "num_keep")


class Options(BaseModel):
    """Ollama's runtime options."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    num_predict: int | None = Field(None, ge=-2, le=1 << 20)
    temperature: float | None = Field(None, ge=0, le=100)
    top_k: int | None = Field(None, ge=0, le=1 << 20)
    top_p: float | None = Field(None, gt=0, le=1)
    min_p: float | None = Field(None, ge=0, le=1)
    seed: int | None = Field(None, ge=0, lt=1 << 32)
    stop: list[str] | None = None
    repeat_penalty: float | None = Field(None, gt=0, le=100)
    repeat_last_n: int | None = Field(None, ge=0, le=1 << 20)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    presence_penalty: float | None = Field(None, ge=-2, le=2)

    # Sampling options of Ollama's that poly-ray does not implement: refused when set.
    tfs_z: float | None = None
    typical_p: float | None = None
    mirostat: int | None = None
    mirostat_tau: float | None = None
    mirostat_eta: float | None = None
    penalize_newline: bool | None = None

    @model_validator(mode="before")
    @classmethod
    def _drop_server_options(cls, data):
        return {k: v for k, v in data.items() if k not in _SERVER_OPTIONS} if isinstance(data, dict) else data

    @model_validator(mode="after")
    def _supported(self):
        for name in ("tfs_z", "typical_p", "mirostat", "mirostat_tau", "mirostat_eta", "penalize_newline"):
            if getattr(self, name):
                raise ValueError(f"options.{name}: not supported")
        return self

    def overrides(self) -> dict:
        o = self.model_dump(exclude_none=True, exclude={"tfs_z", "typical_p", "mirostat", "mirostat_tau",
                                                        "mirostat_eta", "penalize_newline"})
        n = o.pop("num_predict", None)
        if n is not None and n > 0:  # -1 / -2: as much as the task allows
            o["max_tokens"] = n
        return o


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    model: str
    stream: bool = True
    format: Literal["", "json"] | dict[str, Any] | None = None
    options: Options = Field(default_factory=Options)
    keep_alive: str | float | None = None
    think: bool | str | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None

    @model_validator(mode="after")
    def _supported(self):
        # Sent by clients with empty values; refused only when asked for.
        for name in ("think", "logprobs", "top_logprobs", "images", "tools", "suffix", "template", "context"):
            if getattr(self, name, None):
                raise ValueError(f"{name}: not supported")
        return self

    def overrides(self) -> dict:
        o = self.options.overrides()
        if self.format == "json":
            o["grammar"] = grammars.ANY_JSON
        elif isinstance(self.format, dict):
            o["grammar"] = grammars.from_schema(self.format, "format")
        return o


class GenerateBody(_Body):
    prompt: str = Field("", max_length=1_000_000)
    system: str | None = None
    raw: bool = False
    suffix: str | None = None
    template: str | None = None
    context: list[int] | None = None
    images: list[Any] | None = None


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "user", "assistant"]
    content: str = ""
    # Sent by clients with empty values; refused only when set.
    thinking: str | None = None
    images: list[Any] | None = None
    tool_name: str | None = None
    tool_calls: list[Any] | None = None

    @model_validator(mode="after")
    def _supported(self):
        for name in ("thinking", "images", "tool_name", "tool_calls"):
            if getattr(self, name):
                raise ValueError(f"{name}: not supported")
        return self


class ChatBody(_Body):
    messages: list[Message] = Field(min_length=1, max_length=10_000)
    tools: list[Any] | None = None


class EmbedBody(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    model: str
    input: str | list[str] = Field(min_length=1)
    truncate: bool = True
    keep_alive: str | int | None = None
    options: dict | None = None


class ShowBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str
    verbose: bool | None = None


# What the routes answer. Documentation only (the routes build plain dicts); the
# fuzz test checks every answer against these.

class OllamaVersion(BaseModel):
    version: str


class OllamaModelDetails(BaseModel):
    format: str
    family: str
    parameter_size: str
    quantization_level: str


class OllamaModelEntry(BaseModel):
    name: str
    model: str
    modified_at: str
    size: int
    digest: str
    details: OllamaModelDetails


class OllamaTags(BaseModel):
    models: list[OllamaModelEntry]


class OllamaShow(BaseModel):
    modelfile: str
    parameters: str
    template: str
    details: OllamaModelDetails
    model_info: dict[str, Any]
    capabilities: list[str]


class _OllamaDone(BaseModel):
    model: str
    created_at: str
    done: Literal[True]
    done_reason: Literal["stop", "length"]
    total_duration: int
    load_duration: int
    prompt_eval_count: int
    prompt_eval_duration: int
    eval_count: int
    eval_duration: int


class OllamaGenerateResponse(_OllamaDone):
    response: str


class OllamaChatMessage(BaseModel):
    role: Literal["assistant"]
    content: str


class OllamaChatResponse(_OllamaDone):
    message: OllamaChatMessage


class OllamaEmbedResponse(BaseModel):
    model: str
    embeddings: list[list[float]]
    total_duration: int
    load_duration: int


def is_ollama_path(path: str) -> bool:
    return path.startswith(PREFIX)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")


def register(app: FastAPI, backend, access: Access, slots: Slots) -> None:
    async def target(who: Principal, name: str) -> dict:
        """The task or model ``name`` may be used by the caller; what it is."""
        tasks, models = await backend.tasks(), await backend.models()
        if name in tasks:
            who.check("task", name)
            return {"kind": "task", **tasks[name]}
        if name in models:
            who.check("model", name)
            return {"kind": "model", **models[name]}
        raise NotFound(f"model '{name}' not found")

    @app.get("/api/version", openapi_extra=doc(family="ollama", ok=OllamaVersion, errors=PLAIN))
    async def version():
        return {"version": VERSION}

    @app.get("/api/tags", openapi_extra=doc(family="ollama", ok=OllamaTags))
    async def tags(request: Request):
        who = access.principal(request)
        tasks, models = await backend.tasks(), await backend.models()
        names = [n for n in tasks if who.allows("task", n)] + [n for n in models if who.allows("model", n)]
        return {"models": [_model_entry(n) for n in names]}

    @app.post("/api/show", openapi_extra=doc(family="ollama", body=ShowBody, ok=OllamaShow, errors=WITH_BODY))
    async def show(request: Request):
        who = access.principal(request)
        body = await parse_params(request, ShowBody)
        info = await target(who, body.model)
        details = {"format": "gguf", "family": "", "parameter_size": "", "quantization_level": ""}
        params = "\n".join(f"{k} {v}" for k, v in info.items() if k != "kind")
        return {"modelfile": "", "parameters": params, "template": "", "details": details,
                "model_info": info, "capabilities": ["completion", "embedding"]}

    @app.post("/api/generate", openapi_extra=doc(
        family="ollama", body=GenerateBody, ok=OllamaGenerateResponse, streams=NDJSON, errors=GENERATES))
    async def generate(request: Request):
        who = access.principal(request)
        body = await parse_params(request, GenerateBody)
        await target(who, body.model)
        if body.system:
            events = backend.stream_target(body.model, None, [("system", body.system), ("user", body.prompt)],
                                           body.overrides())
        else:
            events = backend.stream_target(body.model, body.prompt, None, body.overrides())
        return await _respond(body, events, slots, who.credential, lambda text: {"response": text})

    @app.post("/api/chat", openapi_extra=doc(
        family="ollama", body=ChatBody, ok=OllamaChatResponse, streams=NDJSON, errors=GENERATES))
    async def chat(request: Request):
        who = access.principal(request)
        body = await parse_params(request, ChatBody)
        await target(who, body.model)
        messages = [(m.role, m.content) for m in body.messages]
        events = backend.stream_target(body.model, None, messages, body.overrides())
        return await _respond(body, events, slots, who.credential,
                              lambda text: {"message": {"role": "assistant", "content": text}})

    @app.post("/api/embed", openapi_extra=doc(family="ollama", body=EmbedBody, ok=OllamaEmbedResponse, errors=WITH_BODY))
    async def embed(request: Request):
        access.principal(request)  # 401 before looking at the body
        body = await parse_params(request, EmbedBody)
        await access.authorize(request, "model", body.model)
        start = time.perf_counter_ns()
        texts = [body.input] if isinstance(body.input, str) else body.input
        vectors = await backend.embed(body.model, texts)
        return {"model": body.model, "embeddings": vectors, "total_duration": time.perf_counter_ns() - start,
                "load_duration": 0}


def _model_entry(name: str) -> dict:
    return {"name": name, "model": name, "modified_at": _now(), "size": 0, "digest": "",
            "details": {"format": "gguf", "family": "", "parameter_size": "", "quantization_level": ""}}


async def _respond(body: _Body, events, slots: Slots, credential: str, payload):
    """Wait for the prompt to be accepted, then answer whole or as NDJSON lines."""
    started = time.perf_counter_ns()
    _, release = await slots.accepted(events, credential)

    def final(done: Done, text: str = "") -> dict:
        t = done.timings
        return {"model": body.model, "created_at": _now(), **payload(text), "done": True,
                "done_reason": "length" if done.finish_reason == "length" else "stop",
                "total_duration": time.perf_counter_ns() - started, "load_duration": 0,
                "prompt_eval_count": done.prompt_tokens,
                "prompt_eval_duration": int(t.get("prompt_ms", 0) * 1e6),
                "eval_count": done.completion_tokens, "eval_duration": int(t.get("decode_ms", 0) * 1e6)}

    if not body.stream:
        try:
            text, _, done = await gather(events)
        finally:
            release()
        return JSONResponse(final(done, text))

    async def lines():
        def line(obj) -> bytes:
            return json.dumps(obj, separators=(",", ":")).encode() + b"\n"

        try:
            async for ev in events:
                if isinstance(ev, Chunk) and ev.text:
                    yield line({"model": body.model, "created_at": _now(), **payload(ev.text), "done": False})
                elif isinstance(ev, Done):
                    yield line(final(ev))
                    return
        except PolyError as e:
            yield line({"error": e.message})
        except Exception:
            yield line({"error": "internal server error"})
        finally:
            release()
            await events.aclose()

    return GenerationStream(lines(), events=events, release=release, media_type="application/x-ndjson")
