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
from pydantic import BaseModel

from poly_ray.api import sse
from poly_ray.api.auth import Access, owner_of
from poly_ray.api.limits import StreamLimits
from poly_ray.api.openapi import GENERATES, SSE, TEXT, WITH_BODY, doc
from poly_ray.api.parsing import parse_params
from poly_ray.api.streaming import GenerationStream
from poly_ray.errors import NotFound, PolyError
from poly_ray.generation import Chunk, Done

from .protocol import STREAM_NUM_PREDICT, LlmApiBody, StreamBody, TextBody


def register(app: FastAPI, backend, access: Access, slots: StreamLimits, default: tuple[str, str] | None) -> None:
    """``default`` is the (kind, name) these routes run: a task, or a model used bare."""

    def target() -> tuple[str, str]:
        if default is None:
            raise NotFound("no task or model is configured")
        return default

    async def limit() -> int:
        """The most tokens the target may generate: a task's max_tokens, a bare model's context."""
        kind, name = target()
        if kind == "task":
            return (await backend.tasks())[name]["max_tokens"]
        return (await backend.models())[name]["context_size"]

    async def start(request: Request, model: type[BaseModel]):
        """Who calls, what they asked for, and its accepted stream with the place's release."""
        who = await access.authorize(request, *target())
        body = await parse_params(request, model)
        overrides = body.overrides()
        if getattr(body, "cache", None) is not None:  # durable prompt state (see README)
            # Each credential has its own ids: one caller's 42 never evicts another's.
            overrides["cache_key"] = f"stream/{target()[1]}/{owner_of(who)}/{body.cache}"
        if isinstance(body, StreamBody) and body.num_predict is None:
            overrides["max_tokens"] = min(STREAM_NUM_PREDICT, await limit())
        events = backend.stream_target(target()[1], body.prompt, None, overrides)
        _, release = await slots.accepted(events, who.credential)
        return events, release, body

    async def texts(events, release, body):
        """The generated text, piece by piece; a failure mid-stream raises. llm-api's
        echo and suffix (llama-cpp-python's meanings) put the prompt before it and the
        suffix after it."""
        params = getattr(body, "params", None)
        try:
            if params and params.echo:
                yield body.prompt
            async for ev in events:
                if isinstance(ev, Chunk) and ev.text:
                    yield ev.text
                elif isinstance(ev, Done):
                    if params and params.suffix:
                        yield params.suffix
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
