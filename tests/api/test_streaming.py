"""The one stream driver, seen through every family's streamed routes: the same
keep-alives, headers and endings everywhere (scripted model, no Ray)."""

import asyncio
import json

import pytest
from scripted import make_client, sse_events

from poly_ray.state.service import StateService
from poly_ray.state.store import Store

# (route, body with the prompt in it): every streamed generation route.
ROUTES = {
    "live": ("/v1/task/echo/live", lambda p: {"prompt": p}),
    "openai-completions": ("/v1/completions", lambda p: {"model": "echo", "prompt": p, "stream": True}),
    "openai-chat": ("/v1/chat/completions",
                    lambda p: {"model": "echo", "messages": [{"role": "user", "content": p}], "stream": True}),
    "responses": ("/v1/responses", lambda p: {"model": "echo", "input": p, "stream": True}),
    "ollama-generate": ("/api/generate", lambda p: {"model": "echo", "prompt": p}),
    "ollama-chat": ("/api/chat", lambda p: {"model": "echo", "messages": [{"role": "user", "content": p}]}),
    "agenerate": ("/agenerate", lambda p: {"prompt": p}),
    "stream": ("/stream", lambda p: {"prompt": p}),
}
SSE = {"live", "openai-completions", "openai-chat", "responses", "agenerate"}


@pytest.fixture
def state(tmp_path):
    service = StateService(Store(tmp_path / "state.sqlite3"))
    yield service
    service.close()


async def post(route: str, prompt: str, client):
    path, body = ROUTES[route]
    return await client.post(path, json=body(prompt))


def last_error(route: str, text: str) -> dict | str:
    """The error the stream ended with, in its family's shape; fails if it ended otherwise."""
    if route in ("ollama-generate", "ollama-chat"):
        last = json.loads(text.strip().split("\n")[-1])
        assert set(last) == {"error"}, last
        return last["error"]
    if route == "stream":
        assert "\n[error: " in text, text
        return text.rsplit("\n[error: ", 1)[1].rstrip("]")
    events = sse_events(text)
    if route.startswith("openai"):
        assert events[-1] == (None, "[DONE]")  # after the error, as vLLM and llama-server end
        return json.loads(events[-2][1])["error"]["message"]
    if route == "responses":
        name, data = events[-1]
        assert name == "response.failed", events[-1]
        return json.loads(data)["response"]["error"]["message"]
    name, data = events[-1]
    assert name == "error", events[-1]
    return json.loads(data)["message"]


@pytest.mark.parametrize("route", ROUTES)
async def test_every_stream_sends_the_no_buffering_headers(route, state):
    r = await post(route, "one two", make_client(state, default_task="echo")[0])
    assert r.status_code == 200
    assert r.headers["x-accel-buffering"] == "no" and r.headers["cache-control"] == "no-cache"


@pytest.mark.parametrize("route", ROUTES)
async def test_a_stream_that_ends_without_done_ends_with_an_error(route, state):
    r = await post(route, "one CUT two", make_client(state, default_task="echo")[0])
    assert r.status_code == 200
    assert "ended before" in last_error(route, r.text)


@pytest.mark.parametrize("route", ROUTES)
async def test_an_unexpected_failure_is_an_internal_error_not_a_dropped_stream(route, state):
    r = await post(route, "one CRASH two", make_client(state, default_task="echo")[0])
    assert r.status_code == 200
    message = last_error(route, r.text)
    assert message == "internal server error" and "secret" not in r.text


@pytest.mark.parametrize("route", ROUTES)
async def test_a_model_error_is_said_in_the_family_shape(route, state):
    r = await post(route, "one FAIL two", make_client(state, default_task="echo")[0])
    assert last_error(route, r.text) == "model 'm' failed while generating"


@pytest.mark.parametrize("route", sorted(ROUTES))
async def test_keep_alives_only_where_the_format_has_them(route, state, monkeypatch):
    from poly_ray.api import streaming

    monkeypatch.setattr(streaming, "KEEP_ALIVE_S", 0.02)
    client, model = make_client(state, default_task="echo")
    pending = asyncio.create_task(post(route, "WAIT here", client))
    await model.waiting.wait()
    await asyncio.sleep(0.2)
    model.gate.set()
    body = (await pending).text
    if route in SSE:
        assert body.count(": keep-alive\n\n") >= 3
    else:  # NDJSON and plain text have no frame that says nothing
        assert "keep-alive" not in body
    assert "here" in body
