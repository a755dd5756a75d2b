"""The small generate/stream APIs that scripts already call.

- llm-api style: ``POST /generate`` and ``POST /agenerate`` (SSE) with
  ``{"prompt", "params"}``, and ``POST /embeddings`` with ``{"text"}``.
- The Rust llm HTTP server's ``POST /stream``: ``{"prompt", "num_predict",
  "top_k", "top_p", "repeat_penalty", "temp", "n_batch", "cache"}``, answered
  with plain UTF-8 text as it is generated.

They run the config's ``default_task`` (else its first task, else its first model).
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from pydantic import BaseModel, ConfigDict, Field

from . import sse
from .errors import NotFound, PolyError
from .generation import Chunk, Done
from .httputil import Access, GenerationStream, Slots, parse_params
from .openapi import GENERATES, SSE, TEXT, WITH_BODY, doc


class Params(BaseModel):
    """llama-cpp-python's completion parameters, as llm-api passes them on."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    max_tokens: int | None = Field(None, ge=1, le=1 << 20)
    temperature: float | None = Field(None, ge=0, le=100)
    top_k: int | None = Field(None, ge=0, le=1 << 20)
    top_p: float | None = Field(None, gt=0, le=1)
    min_p: float | None = Field(None, ge=0, le=1)
    repeat_penalty: float | None = Field(None, gt=0, le=100)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    seed: int | None = Field(None, ge=0, lt=1 << 32)
    stop: list[str] | str | None = None


class LlmApiBody(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    prompt: str = Field(max_length=1_000_000)
    params: Params | None = None

    def overrides(self) -> dict:
        return self.params.model_dump(exclude_none=True) if self.params else {}


class TextBody(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    text: str = Field(max_length=1_000_000)


class StreamBody(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    prompt: str = Field(max_length=1_000_000)
    num_predict: int | None = Field(None, ge=1, le=1 << 20)
    top_k: int | None = Field(None, ge=0, le=1 << 20)
    top_p: float | None = Field(None, gt=0, le=1)
    repeat_penalty: float | None = Field(None, gt=0, le=100)
    temp: float | None = Field(None, ge=0, le=100)
    n_batch: int | None = Field(None, ge=1, le=1 << 16)  # the model's batch size is set in its config
    # Prompt state is reused by prefix on the replica whatever the id (see README).
    cache: str | None = Field(None, max_length=256)

    def overrides(self) -> dict:
        o = {"max_tokens": self.num_predict, "top_k": self.top_k, "top_p": self.top_p,
             "repeat_penalty": self.repeat_penalty, "temperature": self.temp}
        return {k: v for k, v in o.items() if v is not None}


def register(app: FastAPI, backend, access: Access, slots: Slots, default: tuple[str, str] | None) -> None:
    """``default`` is the (kind, name) these routes run: a task, or a model used bare."""

    def target() -> tuple[str, str]:
        if default is None:
            raise NotFound("no task or model is configured")
        return default

    async def start(request: Request, model: type[BaseModel]):
        """Who calls, what they asked for, and its accepted stream with the place's release."""
        who = await access.authorize(request, *target())
        body = await parse_params(request, model)
        events = backend.stream_target(target()[1], body.prompt, None, body.overrides())
        _, release = await slots.accepted(events, who.credential)
        return events, release

    async def texts(events, release):
        """The generated text, piece by piece; a failure mid-stream raises."""
        try:
            async for ev in events:
                if isinstance(ev, Chunk) and ev.text:
                    yield ev.text
                elif isinstance(ev, Done):
                    return
        finally:
            release()
            await events.aclose()

    async def framed(started, frame, error_frame):
        try:
            async for t in texts(*started):
                yield frame(t)
        except PolyError as e:
            yield error_frame(e)

    @app.post("/generate", openapi_extra=doc(body=LlmApiBody, ok={"type": "string"}, errors=GENERATES))
    async def generate(request: Request):
        started = await start(request, LlmApiBody)
        return "".join([t async for t in texts(*started)])

    @app.post("/agenerate", openapi_extra=doc(body=LlmApiBody, streams=SSE, errors=GENERATES))
    async def agenerate(request: Request):
        started = await start(request, LlmApiBody)
        frames = framed(started, sse.event, lambda e: sse.json_event("error", e.to_body()["error"]))
        return GenerationStream(
            frames, events=started[0], release=started[1], media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
        )

    @app.post("/stream", openapi_extra=doc(body=StreamBody, streams=TEXT, errors=GENERATES))
    async def stream(request: Request):
        started = await start(request, StreamBody)
        # Plain text has no event types: a failure is said in the text, then the stream stops.
        frames = framed(started, str.encode, lambda e: f"\n[error: {e.message}]".encode())
        return GenerationStream(frames, events=started[0], release=started[1], media_type="text/plain; charset=utf-8")

    @app.post("/embeddings", openapi_extra=doc(
        body=TextBody, ok={"type": "array", "items": {"type": "number"}}, errors=WITH_BODY))
    async def embeddings(request: Request):
        kind, name = target()
        model = (await backend.tasks())[name]["model"] if kind == "task" else name
        await access.authorize(request, "model", model)
        body = await parse_params(request, TextBody)
        return (await backend.embed(model, [body.text]))[0]
