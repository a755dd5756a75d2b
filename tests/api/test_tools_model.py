"""Tool calls from the real Gemma 3 270M through the real openai and ollama clients
over the ASGI app (no Ray). Gemma is a base model without tool tokens: the grammar
is what makes its calls valid, so every argument object is validated with jsonschema."""

import json

import httpx
import jsonschema
import ollama
import openai
import pytest

from poly_ray import config
from poly_ray.api import create_app
from poly_ray.tasks.runner import TaskRunner

pytestmark = pytest.mark.model

TOOLS = [
    {"type": "function", "function": {
        "name": "get_weather", "description": "The current weather in a city",
        "parameters": {"type": "object", "properties": {
            "city": {"type": "string", "maxLength": 30},
            "unit": {"enum": ["celsius", "fahrenheit"]}}, "required": ["city", "unit"]}}},
    {"type": "function", "function": {
        "name": "book_table", "description": "Book a table at a restaurant",
        "parameters": {"type": "object", "properties": {
            "restaurant": {"type": "string", "maxLength": 30},
            "people": {"type": "integer", "minimum": 1, "maximum": 12},
            "outdoor": {"type": "boolean"},
            "tags": {"type": "array", "items": {"type": "string", "maxLength": 12}, "maxItems": 2}},
            "required": ["restaurant", "people"], "additionalProperties": False}}},
    {"type": "function", "function": {"name": "get_time", "description": "The current time"}},
]
SCHEMAS = {t["function"]["name"]: t["function"].get("parameters", {"type": "object", "properties": {}}) for t in TOOLS}
QUESTIONS = ["What is the weather in Paris?", "Book a table for four at Chez Marie.",
             "What time is it?", "Is it cold in Oslo today?", "Reserve a table outside for 2 at Luigi's."]


@pytest.fixture(scope="module")
def app(gemma_path):
    from poly_ray.serve.model import LlamaModel

    cfg = config.validate({
        "allowed_keys": ["key-1"],
        "models": {"g": {"model_path": str(gemma_path), "context_size": 1024, "slots": 1, "threads_per_session": 2}},
        "tasks": {"agent": {"model": "g", "max_tokens": 80, "tools": TOOLS[:1], "tool_choice": "required"}},
    }, env={})
    model = LlamaModel("g", cfg.models["g"].model_dump(mode="json"), str(cfg.cache_path))
    yield create_app(TaskRunner(cfg.tasks, cfg.models, {"g": model}), cfg)
    model.engine.close()


@pytest.fixture
def client(app):
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost/v1", timeout=600)
    return openai.AsyncOpenAI(api_key="key-1", base_url="http://localhost/v1", http_client=http, max_retries=0)


def valid(name: str, arguments: str) -> bool:
    try:
        jsonschema.validate(json.loads(arguments), SCHEMAS[name])
        return True
    except (json.JSONDecodeError, jsonschema.ValidationError):
        return False


async def test_required_and_named_calls_always_follow_their_schema(client):
    """24 seeded calls (12 required, 12 named), one call each: 100% valid."""
    outcomes = []
    for seed in range(24):
        named = TOOLS[seed % 3]["function"]["name"]
        choice = "required" if seed < 12 else {"type": "function", "function": {"name": named}}
        r = await client.chat.completions.create(
            model="g", messages=[{"role": "user", "content": QUESTIONS[seed % len(QUESTIONS)]}], tools=TOOLS,
            tool_choice=choice, parallel_tool_calls=False, seed=seed, max_tokens=96, temperature=0.8)
        c = r.choices[0]
        assert c.finish_reason == "tool_calls", c
        assert len(c.message.tool_calls) == 1 and c.message.content is None
        call = c.message.tool_calls[0]
        assert call.type == "function" and call.id.startswith("call_")
        if seed >= 12:
            assert call.function.name == named
        outcomes.append(valid(call.function.name, call.function.arguments))
    print(f"\nrequired/named: {sum(outcomes)}/{len(outcomes)} argument objects valid")
    assert all(outcomes)


async def test_parallel_calls_stream_as_deltas_the_client_reassembles(client):
    for seed in range(3):
        stream = await client.chat.completions.create(
            model="g", messages=[{"role": "user", "content": "Weather in Rome and in Lima?"}], tools=TOOLS,
            tool_choice="required", seed=seed, max_tokens=120, stream=True)
        calls, finish = {}, None
        async for chunk in stream:
            for d in chunk.choices[0].delta.tool_calls or []:
                if d.id:
                    calls[d.index] = [d.function.name, d.function.arguments or ""]
                else:
                    calls[d.index][1] += d.function.arguments
            finish = chunk.choices[0].finish_reason or finish
        if finish == "length":  # parallel calls may outgrow max_tokens; the complete ones still hold
            calls.pop(max(calls))
        else:
            assert finish == "tool_calls"
        assert calls and all(valid(name, args) for name, args in calls.values()), calls


async def test_auto_answers_in_text_or_in_a_valid_call(client):
    """``auto`` lets Gemma choose; its choice is measured (questions a tool answers, and
    questions none does), and any call it makes is valid."""
    chat = ["Say hello to me.", "What is two plus two?", "Tell me a short joke."]
    counts = {}
    for seed in range(12):
        kind = "tool" if seed % 2 == 0 else "chat"
        question = QUESTIONS[seed // 2 % len(QUESTIONS)] if kind == "tool" else chat[seed // 2 % len(chat)]
        r = await client.chat.completions.create(
            model="g", messages=[{"role": "user", "content": question}], tools=TOOLS, seed=seed, max_tokens=96)
        c = r.choices[0]
        made = c.message.tool_calls or []
        if c.finish_reason == "length":  # as OpenAI does: a call cut by max_tokens is returned cut
            made, outcome = made[:-1], "cut"
        elif made:
            assert c.finish_reason == "tool_calls"
            outcome = "call"
        else:
            assert c.finish_reason == "stop" and isinstance(c.message.content, str)
            outcome = "text"
        assert all(valid(t.function.name, t.function.arguments) for t in made)
        counts[kind, outcome] = counts.get((kind, outcome), 0) + 1
    print(f"\nauto (question kind, outcome): {sorted(counts.items())}")


async def test_none_answers_in_text(client):
    r = await client.chat.completions.create(
        model="g", messages=[{"role": "user", "content": "What is the weather in Paris?"}], tools=TOOLS,
        tool_choice="none", seed=1, max_tokens=16)
    assert r.choices[0].message.tool_calls is None and r.choices[0].message.content
    assert not r.choices[0].message.content.lstrip().startswith('{"tool_calls"')


async def test_the_round_trip_call_result_answer(client):
    messages = [{"role": "user", "content": "What is the weather in Paris?"}]
    r = await client.chat.completions.create(model="agent", messages=messages, seed=3, max_tokens=64)  # the task's tools
    call = r.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather" and valid("get_weather", call.function.arguments)
    messages += [r.choices[0].message.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": call.id, "content": '{"temperature": 18, "sky": "clear"}'}]
    r = await client.chat.completions.create(model="g", messages=messages, tools=TOOLS, tool_choice="none",
                                             seed=3, max_tokens=24)
    assert r.choices[0].finish_reason in ("stop", "length") and r.choices[0].message.content.strip()


async def test_ollama_calls_and_round_trip(app):
    client = ollama.AsyncClient(host="http://localhost", transport=httpx.ASGITransport(app=app), timeout=600,
                                headers={"Authorization": "Bearer key-1"})
    made = 0
    for seed in range(4):
        parts = [p async for p in await client.chat(
            model="agent", messages=[{"role": "user", "content": "Is it raining in Oslo?"}], stream=True,
            options={"seed": seed, "num_predict": 64})]
        assert parts[-1].done
        calls = [c for p in parts for c in p.message.tool_calls or []]
        assert calls and all(c.function.name == "get_weather" for c in calls)  # the task's required tool
        for c in calls:
            jsonschema.validate(dict(c.function.arguments), SCHEMAS["get_weather"])
        made += len(calls)
    # The result goes back without tools: the history (call, result) is rendered, the answer is text.
    r = await client.chat(model="g", options={"seed": 1, "num_predict": 24}, messages=[
        {"role": "user", "content": "Is it raining in Oslo?"},
        {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "get_weather",
                                                                           "arguments": {"city": "Oslo", "unit": "celsius"}}}]},
        {"role": "tool", "content": "light rain, 6 degrees", "tool_name": "get_weather"}])
    assert r.done and r.message.content.strip() and not r.message.tool_calls
    assert made >= 4
