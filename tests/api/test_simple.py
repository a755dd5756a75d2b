"""The simple APIs with the bodies their original servers document (the Rust llm
server's /stream, llm-api's /generate and /agenerate), over the ASGI app with a
scripted model."""

import pytest
from test_ollama_simple import http_client, make_app

# The Rust llm server's documented /stream body, cache id as a positive integer.
RUST_STREAM_BODY = {
    "prompt": "Once upon a time",
    "n_batch": 8,
    "top_k": 40,
    "top_p": 0.95,
    "repeat_penalty": 1.3,
    "temp": 0.8,
    "num_predict": 128,
    "cache": 42,
}


async def test_stream_takes_the_documented_body_with_an_integer_cache_id():
    app, model = make_app(tasks={"echo": {"model": "m", "max_tokens": 256}})
    async with http_client(app) as http:
        r = await http.post("/stream", json=RUST_STREAM_BODY)
        assert r.status_code == 200, r.text
        assert r.text == "Once\nupon\na\ntime\n"
        sent = model.requests[-1]
        assert sent.max_tokens == 128 and sent.sampling.top_k == 40 and sent.sampling.temperature == 0.8
        assert (await http.post("/stream", json={"prompt": "a", "cache": "story-1"})).status_code == 200


@pytest.mark.parametrize("cache", [-1, 1.5, True, "", "x" * 257, [1]])
async def test_stream_refuses_a_cache_id_that_is_neither_a_count_nor_a_name(cache):
    app, _ = make_app()
    async with http_client(app) as http:
        r = await http.post("/stream", json={"prompt": "a", "cache": cache})
        assert r.status_code == 400 and "cache" in r.json()["error"]["message"]


async def test_stream_predicts_32_tokens_by_default_within_the_task_limit():
    app, model = make_app(tasks={"echo": {"model": "m", "max_tokens": 256}, "short": {"model": "m", "max_tokens": 10}})
    async with http_client(app) as http:
        await http.post("/stream", json={"prompt": "a"})
        assert model.requests[-1].max_tokens == 32
    app, model = make_app(tasks={"short": {"model": "m", "max_tokens": 10}})
    async with http_client(app) as http:
        await http.post("/stream", json={"prompt": "a"})
        assert model.requests[-1].max_tokens == 10
    app, model = make_app(default_task="m")  # a bare model: its context is the limit
    async with http_client(app) as http:
        await http.post("/stream", json={"prompt": "a"})
        assert model.requests[-1].max_tokens == 32
