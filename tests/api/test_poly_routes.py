"""The HTTP layer over an in-process backend with a scripted model: no Ray, no model."""

import asyncio
import json
import time

import jwt
import pytest
from scripted import SECRET, make_client, sse_events

JSON = {"Content-Type": "application/json"}


async def test_status_needs_no_credentials():
    client, _ = make_client()
    r = await client.get("/status", headers={"Authorization": ""})
    assert r.status_code == 200 and r.json() == {"status": "ok"}


async def test_listings():
    client, _ = make_client()
    assert (await client.get("/v1/task")).json() == {"tasks": ["echo", "secret"]}
    assert (await client.get("/v1/model")).json() == {"models": ["m", "other"]}


async def test_completion_get_and_post():
    client, model = make_client()
    r = await client.post("/v1/task/echo/completion", json={"prompt": "hello there", "max_tokens": 5})
    assert r.status_code == 200
    body = r.json()
    assert body["text"] == ">\nhello\nthere\n"
    assert body["usage"] == {"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6}
    assert body["finish_reason"] == "stop"
    r = await client.get("/v1/task/echo/completion", params={"prompt": "hi", "stop": ["a", "b"], "seed": "4"})
    assert r.json()["text"] == ">\nhi\n"
    assert model.requests[-1].stop == ("a", "b")
    assert model.requests[-1].sampling.seed == 4


async def test_live_streams_sse_and_ends_with_done():
    client, _ = make_client()
    r = await client.get("/v1/task/echo/live", params={"prompt": "one two"})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    events = sse_events(r.text)
    assert [d for n, d in events if n is None] == [">\n", "one\n", "two\n"]
    name, data = events[-1]
    assert name == "done"
    assert json.loads(data)["usage"]["completion_tokens"] == 3


async def test_quiet_stream_sends_keep_alive_comments(monkeypatch):
    from poly_ray.api import streaming

    monkeypatch.setattr(streaming, "KEEP_ALIVE_S", 0.02)
    client, model = make_client()
    pending = asyncio.create_task(client.get("/v1/task/echo/live", params={"prompt": "WAIT here"}))
    await model.waiting.wait()
    await asyncio.sleep(0.2)
    model.gate.set()
    body = (await pending).text
    assert body.count(": keep-alive\n\n") >= 3
    assert sse_events(body)[-1][0] == "done"


async def test_failure_mid_stream_is_an_error_event():
    client, _ = make_client()
    r = await client.post("/v1/task/echo/live", json={"prompt": "one FAIL two"})
    assert r.status_code == 200
    name, data = sse_events(r.text)[-1]
    assert name == "error"
    assert json.loads(data) == {"code": "model_error", "message": "model 'm' failed while generating"}


@pytest.mark.parametrize("route", ["live", "completion"])
async def test_refusals_before_the_stream_are_http_errors(route):
    client, _ = make_client()
    r = await client.post(f"/v1/task/echo/{route}", json={"prompt": "TOO-LONG"})
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "prompt_too_long"
    assert "9999" in r.json()["error"]["message"] and "512" in r.json()["error"]["message"]
    r = await client.post(f"/v1/task/echo/{route}", json={"prompt": "BUSY"})
    assert r.status_code == 503
    assert r.headers["retry-after"] == "2"


async def test_bad_requests_are_400_with_a_message():
    client, _ = make_client()
    cases = [
        (dict(content=b"{not json", headers=JSON), "not valid JSON"),
        (dict(json=["prompt"]), "must be a JSON object"),
        (dict(json={}), "prompt: Field required"),
        (dict(json={"prompt": "x", "max_tokenz": 3}), "max_tokenz: unknown field"),
        (dict(json={"prompt": "x", "max_tokens": -1}), "max_tokens"),
        (dict(json={"prompt": "x", "temperature": 1e308}), "temperature"),
        (dict(json={"prompt": "x", "max_tokens": 51}), "above the limit of task 'echo' (50)"),
        (dict(content=b'{"prompt": "\xff"}', headers=JSON), "not valid JSON"),
    ]
    for kwargs, message in cases:
        r = await client.post("/v1/task/echo/completion", **kwargs)
        assert r.status_code == 400, (kwargs, r.text)
        assert message in r.json()["error"]["message"], (kwargs, r.text)
    r = await client.get("/v1/task/echo/live", params={"prompt": "x", "top_k": "many"})
    assert r.status_code == 400 and "top_k" in r.json()["error"]["message"]


async def test_bodies_over_the_limit_are_413():
    client, _ = make_client(max_request_bytes=2048)
    r = await client.post("/v1/task/echo/completion", json={"prompt": "x" * 5000})
    assert r.status_code == 413
    assert r.json()["error"] == {
        "code": "payload_too_large",
        "message": "the request body is 5013 bytes; the limit (max_request_bytes) is 2048",
    }

    async def chunks():  # no Content-Length: counted while read
        for _ in range(10):
            yield b"x" * 1000

    r = await client.post("/v1/task/echo/completion", content=chunks(), headers=JSON)
    assert r.status_code == 413 and "max_request_bytes" in r.json()["error"]["message"]
    r = await client.post("/v1/completions", json={"model": "echo", "prompt": "x" * 5000})
    assert r.status_code == 413 and r.json()["error"]["type"] == "invalid_request_error"


async def test_unknown_names_are_404_json():
    client, _ = make_client()
    for method, path in [("GET", "/v1/task/nope/live?prompt=x"), ("POST", "/v1/model/nope/embedding"), ("GET", "/nowhere")]:
        r = await client.request(method, path)
        assert r.status_code == 404
        assert r.json()["error"]["code"] == "not_found"


async def test_embedding_and_tokenization():
    client, _ = make_client()
    r = await client.post("/v1/model/m/embedding", json={"prompt": "abc"})
    assert r.json() == {"embedding": [3.0, 0.0]}
    r = await client.post("/v1/model/m/embedding", json={"prompt": ["a", "bb"]})
    assert r.json() == {"embeddings": [[1.0, 0.0], [2.0, 0.0]]}
    r = await client.post("/v1/model/m/tokenization", json={"prompt": "a b"})
    assert r.json() == {"tokens": [{"token": 0, "id": 0, "text": "a"}, {"token": 1, "id": 1, "text": "b"}]}


async def test_poly_shapes_as_poly_documents_them():
    """Poly's GET routes and answer shapes, the requests as its clients send them."""
    client, _ = make_client()
    # Poly's TokenResponse is {"text", "token"}; "id" stays beside it.
    r = await client.get("/v1/model/m/tokenization", params={"prompt": "a b"})
    assert r.status_code == 200
    assert [(t["token"], t["text"]) for t in r.json()["tokens"]] == [(0, "a"), (1, "b")]
    r = await client.get("/v1/model/m/embedding?prompt=abc")
    assert r.status_code == 200 and r.json() == {"embedding": [3.0, 0.0]}
    r = await client.get("/v1/model/m/embedding")
    assert r.status_code == 400 and "prompt" in r.json()["error"]["message"]
    r = await client.get("/v1/task/echo/status")
    assert r.status_code == 200 and r.json() == {"status": "ok"}
    assert (await client.get("/v1/task/nope/status")).status_code == 404
    assert (await client.get("/v1/task/echo/status", headers={"Authorization": ""})).status_code == 401
    tok = jwt.encode({"sub": "ann", "exp": time.time() + 60, "tasks": ["secret"]}, SECRET)
    r = await client.get("/v1/task/echo/status", headers={"Authorization": f"Bearer {tok}"})
    assert r.status_code == 403


async def test_credentials():
    client, _ = make_client()
    r = await client.get("/v1/task", headers={"Authorization": ""})
    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
    r = await client.get("/v1/task?api_key=key-1", headers={"Authorization": ""})
    assert r.status_code == 200
    r = await client.get("/v1/task?api_key=key-1", headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401


async def test_jwt_scopes_tasks_and_models():
    client, _ = make_client()
    tok = jwt.encode({"sub": "ann", "exp": time.time() + 60, "tasks": ["echo"], "models": ["m"]}, SECRET)
    auth = {"Authorization": f"Bearer {tok}"}
    assert (await client.get("/v1/task", headers=auth)).json() == {"tasks": ["echo"]}
    assert (await client.get("/v1/model", headers=auth)).json() == {"models": ["m"]}
    assert (await client.get("/v1/task/echo/completion?prompt=x", headers=auth)).status_code == 200
    r = await client.get("/v1/task/secret/completion?prompt=x", headers=auth)
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
    assert (await client.post("/v1/model/other/embedding", json={"prompt": "x"}, headers=auth)).status_code == 403


async def test_public_server_still_refuses_wrong_credentials():
    client, _ = make_client(public=True)
    assert (await client.get("/v1/task", headers={"Authorization": ""})).status_code == 200
    assert (await client.get("/v1/task", headers={"Authorization": "Bearer nope"})).status_code == 401


async def test_max_concurrent_is_enforced_with_503():
    client, model = make_client(max_concurrent=1)
    first = asyncio.create_task(client.get("/v1/task/echo/live", params={"prompt": "WAIT"}))
    while not model.requests:
        await asyncio.sleep(0.01)
    r = await client.get("/v1/task/echo/live", params={"prompt": "x"})
    assert r.status_code == 503 and "limit of 1 concurrent" in r.json()["error"]["message"]
    assert r.headers["retry-after"] == "1"
    model.gate.set()
    assert (await first).status_code == 200
    assert (await client.get("/v1/task/echo/live", params={"prompt": "x"})).status_code == 200


async def test_cors_only_for_configured_origins():
    client, _ = make_client(allowed_origins=["https://app.example"])
    pre = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST"}
    r = await client.options("/v1/task/echo/completion", headers=pre)
    assert r.headers["access-control-allow-origin"] == "https://app.example"
    r = await client.options("/v1/task/echo/completion", headers={**pre, "Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in r.headers
