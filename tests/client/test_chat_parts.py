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
