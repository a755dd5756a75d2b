"""`poly-ray run -R FILE` against the real Gemma 3 270M over the ASGI app (no Ray): a
prompt that a /stream cache id saved is restored, and each request continues it: greedy,
the answer is what the saved prompt and the request's prompt together give."""

import httpx
import pytest
from live_server import EngineClient
from test_run import flags

from poly_ray.api import create_app
from poly_ray.engine.llama_engine import Engine
from poly_ray.migrate.run import run_config
from poly_ray.tasks.runner import TaskRunner

pytestmark = pytest.mark.model
QUESTION = " Paris. The capital of Italy is"


def app_of(cfg, engine):
    name = next(iter(cfg.models))
    return create_app(TaskRunner(cfg.tasks, cfg.models, {name: EngineClient(engine)}), cfg)


def http(app):
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost", timeout=300)


async def test_a_saved_prompt_is_restored_and_continued(gemma_path, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    plain = run_config(flags("-m", str(gemma_path), "-n", "512"), env={})
    engine = Engine(gemma_path, context_size=512, slots=1, threads=2, name="gemma")
    try:
        async with http(app_of(plain, engine)) as client:
            r = await client.post("/stream", json={"prompt": "The capital of France is", "num_predict": 1,
                                                   "cache": 7})
            saved = r.headers["X-Poly-Prompt-File"]
            whole = await client.post("/stream", json={"prompt": "The capital of France is Paris. The capital of "
                                                                 "Italy is", "num_predict": 6, "temp": 0})
            alone = await client.post("/v1/task/default/completion", json={"prompt": QUESTION, "max_tokens": 1})
        restored = run_config(flags("-m", str(gemma_path), "-n", "512", "-R", saved), env={})
        assert restored.tasks["default"].prelude == "The capital of France is"
        async with http(app_of(restored, engine)) as client:
            r = await client.post("/stream", json={"prompt": QUESTION, "num_predict": 6, "temp": 0})
            continued = await client.post("/v1/task/default/completion", json={"prompt": QUESTION, "max_tokens": 1})
        # The model read the saved prompt's tokens before the request's.
        read = continued.json()["usage"]["prompt_tokens"] - alone.json()["usage"]["prompt_tokens"]
        assert read == len(engine.tokenize("The capital of France is")), continued.text
        assert r.status_code == 200, r.text
        first, _, generated = r.text.partition("\n")
        assert first == QUESTION and generated.strip()
        assert generated == whole.text.partition("\n")[2]
    finally:
        engine.close()
