"""The Rust llm server's ``/stream`` against the real Gemma 3 270M over the ASGI app (no
Ray): its documented example body, verbatim, with a config whose only task has a long
prelude and ``max_tokens = 8`` (issue 31): the raw prompt runs on the model."""

import httpx
import pytest
from live_server import EngineClient

from poly_ray import config
from poly_ray.api import create_app
from poly_ray.engine.llama_engine import Engine
from poly_ray.tasks.runner import TaskRunner

pytestmark = pytest.mark.model

# The Rust server's README, verbatim.
DOCUMENTED_BODY = {
    "num_predict": 64,
    "prompt": "Once upon a time",
    "n_batch": 16,
    "top_k": 50,
    "top_p": 0.9,
    "repeat_penalty": 1.5,
    "temp": 0.7,
    "cache": 42,
}


@pytest.fixture(scope="module")
def served(gemma_path, tmp_path_factory):
    state = tmp_path_factory.mktemp("state")
    cfg = config.validate({
        "public": True,
        "state_dir": str(state),
        "models": {"gemma": {"model_path": str(gemma_path), "context_size": 1024, "slots": 1}},
        "tasks": {"pirate": {"model": "gemma", "prelude": "Speak like a pirate, matey. " * 40, "max_tokens": 8}},
    }, env={})
    engine = Engine(gemma_path, context_size=1024, slots=1, threads=2, name="gemma")
    yield create_app(TaskRunner(cfg.tasks, cfg.models, {"gemma": EngineClient(engine)}), cfg), engine, state
    engine.close()


def http(app):
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost", timeout=300)


async def test_the_documented_body_completes_the_raw_prompt_on_the_model(served):
    app, engine, state = served
    async with http(app) as client:
        r = await client.post("/stream", json=DOCUMENTED_BODY)
        assert r.status_code == 200, r.text
        assert r.headers["content-type"].startswith("text/plain")
        first, _, generated = r.text.partition("\n")
        assert first == "Once upon a time" and generated
        # Past the task's max_tokens of 8: the body's num_predict of 64 is the limit.
        assert 8 < len(engine.tokenize(generated)) <= 64 + 2  # re-tokenizing may split a piece
        saved = r.headers["X-Poly-Prompt-File"]
        assert saved.startswith(str(state)) and open(saved, encoding="utf-8").read() == "Once upon a time"
        # Greedy: the same text as a bare completion of the prompt alone, no prelude before it.
        greedy = {"prompt": "The capital of France is", "num_predict": 12, "temp": 0, "cache": 0}
        r = await client.post("/stream", json=greedy)
        assert r.status_code == 200 and "X-Poly-Prompt-File" not in r.headers
        bare = await client.post("/v1/completions", json={"model": "gemma", "prompt": greedy["prompt"],
                                                          "max_tokens": 12, "temperature": 0})
        assert r.text == greedy["prompt"] + "\n" + bare.json()["choices"][0]["text"]
