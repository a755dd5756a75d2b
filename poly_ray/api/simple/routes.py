"""The small generate/stream APIs that scripts already call.

- llm-api style: ``POST /generate`` and ``POST /agenerate`` (SSE) with
  ``{"prompt", "params"}``, and ``POST /embeddings`` with ``{"text"}``.
- The Rust llm HTTP server's ``POST /stream``: ``{"prompt", "num_predict",
  "top_k", "top_p", "repeat_penalty", "temp", "n_batch", "cache"}``, answered
  with the prompt's line, then plain UTF-8 text as it is generated.

llm-api's run the config's ``default_task`` (else its first task, else its first
model); ``/stream`` the default model bare, or ``stream_task`` (stream.py).
"""

from __future__ import annotations

from fastapi import Request
from pydantic import BaseModel

from poly_ray.api import sse
from poly_ray.api.family import POLY
from poly_ray.api.openapi import GENERATES, SSE, TEXT, WITH_BODY, doc
from poly_ray.api.parsing import parse_params
from poly_ray.api.services import Services, services
from poly_ray.api.streaming import Framer, respond
from poly_ray.errors import BadRequest, NotFound, PolyError
from poly_ray.generation import Chunk, gather
from poly_ray.tasks.turn import Overrides, TurnRequest

from .protocol import STREAM_NUM_PREDICT, LlmApiBody, StreamBody, TextBody
from .stream import PROMPT_FILE_HEADER, save_prompt, stream_target

router = POLY.router()


def target(svc: Services) -> tuple[str, str]:
    """The (kind, name) these routes run: the config's default task, or a model used bare."""
    if svc.config.default_target is None:
        raise NotFound("no task or model is configured")
    return svc.config.default_target


async def limit(svc: Services, where: tuple[str, str]) -> int:
    """The most tokens a target may generate: a task's max_tokens, a bare model's context."""
    kind, name = where
    if kind == "task":
        return (await svc.backend.tasks())[name].max_tokens
    return (await svc.backend.models())[name].context_size


async def start(request: Request, model: type[BaseModel], where: tuple[str, str] | None = None):
    """Who calls, what they asked for, and its accepted stream with the place's release.
    ``where``: the (kind, name) to run, else the default target."""
    svc = services(request)
    kind, name = where or target(svc)
    who = await svc.access.authorize(request, kind, name)
    body = await parse_params(request, model)
    # A task's tools stay out: these APIs cannot show a tool call. A model runs bare: the
    # raw prompt, even where a task has the model's name (a name means the task first).
    overrides = {**body.overrides(), "tool_choice": "none", "raw": kind == "model"}
    if (cache := getattr(body, "cache", None)) is not None:  # durable prompt state (docs/api/simple.md)
        # Each credential has its own ids: one caller's 42 never evicts another's.
        overrides["cache_key"] = f"stream/{name}/{who.owner}/{cache}"
        overrides["session"] = overrides["cache_key"]  # to the replica that holds it
    if isinstance(body, StreamBody):
        most = await limit(svc, (kind, name))
        if body.num_predict is None:
            overrides["max_tokens"] = min(STREAM_NUM_PREDICT, most)
        elif body.num_predict > most:
            raise BadRequest(f"num_predict: {body.num_predict} is above the limit of {kind} '{name}' ({most} tokens)")
    turn = TurnRequest(name, body.prompt, overrides=Overrides.of(overrides), owner=who.owner)
    events = svc.backend.stream(turn)
    _, release = await svc.limits.accepted(events, who.credential)
    return events, release, body, who


@router.post("/generate", openapi_extra=doc(body=LlmApiBody, ok={"type": "string"}, errors=GENERATES))
async def generate(request: Request):
    events, release, body, _ = await start(request, LlmApiBody)
    try:
        text, _, _ = await gather(events)
    finally:
        release()
        await events.aclose()
    params = body.params
    if params and params.echo:
        text = body.prompt + text
    if params and params.suffix:
        text += params.suffix
    return text


@router.post("/agenerate", openapi_extra=doc(body=LlmApiBody, streams=SSE, errors=GENERATES))
async def agenerate(request: Request):
    events, release, body, _ = await start(request, LlmApiBody)
    return respond(events, _TextFramer(body, sse.event), release)


@router.post("/stream", openapi_extra=doc(body=StreamBody, streams=TEXT, errors=GENERATES))
async def stream(request: Request):
    svc = services(request)
    events, release, body, who = await start(request, StreamBody, stream_target(svc.config))
    response = respond(events, _PlainFramer(body, str.encode), release)
    if body.cache is not None:  # the prompt, for `poly-ray run -R` (stream.py)
        path = await save_prompt(svc.config.state_dir, who.owner, body.cache, body.prompt)
        response.headers[PROMPT_FILE_HEADER] = str(path)
    return response


@router.post("/embeddings", openapi_extra=doc(
    body=TextBody, ok={"type": "array", "items": {"type": "number"}}, errors=WITH_BODY))
async def embeddings(request: Request):
    svc = services(request)
    kind, name = target(svc)
    model = (await svc.backend.tasks())[name].model if kind == "task" else name
    who = await svc.access.authorize(request, "model", model)
    body = await parse_params(request, TextBody)
    return (await svc.embed(who, model, [body.text]))[0]


class _TextFramer(Framer):
    """The generated text, piece by piece (SSE events on ``/agenerate``). llm-api's
    echo and suffix (llama-cpp-python's meanings) put the prompt before it and the
    suffix after it."""

    def __init__(self, body, frame):
        self.params, self.prompt, self.frame = getattr(body, "params", None), body.prompt, frame

    def opening(self) -> list[bytes]:
        return [self.frame(self.prompt)] if self.params and self.params.echo else []

    def event(self, ev) -> list[bytes]:
        return [self.frame(ev.text)] if isinstance(ev, Chunk) and ev.text else []

    async def done(self, done) -> list[bytes]:
        return [self.frame(self.params.suffix)] if self.params and self.params.suffix else []


class _PlainFramer(_TextFramer):
    """``/stream``: the prompt on the first line, then the generated text, as the Rust
    server's docs show. Plain UTF-8 text has no event types and no keep-alive: a failure
    is said in the text, then the stream stops."""

    media_type, keep_alive = "text/plain; charset=utf-8", None

    def opening(self) -> list[bytes]:
        return [self.frame(self.prompt + "\n")]

    async def error(self, err: PolyError) -> list[bytes]:
        return [f"\n[error: {err.message}]".encode()]
