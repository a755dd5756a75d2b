"""The Anthropic Messages API with the real Gemma 3 270M through the real anthropic
package over the ASGI app (no Ray): a forced tool call whose input validates against
the tool's schema (the grammar makes it so), streamed and whole; a stop sequence the
engine reports; count_tokens by the model's tokenizer."""

import anthropic
import httpx2
import jsonschema
import pytest

from poly_ray import config
from poly_ray.api import create_app
from poly_ray.tasks.runner import TaskRunner

pytestmark = pytest.mark.model

BOOK = {"name": "book_table", "description": "Book a table at a restaurant", "input_schema": {
    "type": "object", "properties": {
        "restaurant": {"type": "string", "maxLength": 30},
        "people": {"type": "integer", "minimum": 1, "maximum": 12},
        "outdoor": {"type": "boolean"}},
    "required": ["restaurant", "people"], "additionalProperties": False}}
WEATHER = {"name": "get_weather", "description": "The current weather in a city", "input_schema": {
    "type": "object", "properties": {"city": {"type": "string", "maxLength": 30}}, "required": ["city"]}}


@pytest.fixture(scope="module")
def app(gemma_path):
    from poly_ray.serve.model import LlamaModel

    cfg = config.validate({
        "allowed_keys": ["key-1"],
        "models": {"g": {"model_path": str(gemma_path), "context_size": 1024, "slots": 1, "threads_per_session": 2}},
    }, env={})
    model = LlamaModel("g", cfg.models["g"].model_dump(mode="json"), str(cfg.cache_path))
    yield create_app(TaskRunner(cfg.tasks, cfg.models, {"g": model}), cfg)
    model.engine.close()


@pytest.fixture
def client(app):
    http = httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url="http://localhost", timeout=600)
    return anthropic.AsyncAnthropic(api_key="key-1", base_url="http://localhost", http_client=http, max_retries=0)


async def test_a_forced_tool_call_follows_its_schema(client):
    ask = [{"role": "user", "content": "Book a table for four at Chez Marie, outside please."}]
    # Greedy, so that the test cannot flake; the grammar bounds the call's length (strings
    # of at most 30 characters, bounded whitespace), so 256 tokens always close it.
    async with client.messages.stream(
            model="g", max_tokens=256, messages=ask, tools=[WEATHER, BOOK],
            tool_choice={"type": "tool", "name": "book_table"}, extra_body={"temperature": 0}) as stream:
        final = await stream.get_final_message()
    assert final.stop_reason == "tool_use", final
    [call] = [b for b in final.content if b.type == "tool_use"]
    assert call.name == "book_table"
    jsonschema.validate(call.input, BOOK["input_schema"])
    # One call: a greedy small model repeats parallel calls (the same booking) until max_tokens.
    whole = await client.messages.create(model="g", max_tokens=256, messages=ask, tools=[WEATHER, BOOK],
                                         tool_choice={"type": "any", "disable_parallel_tool_use": True},
                                         extra_body={"temperature": 0})
    assert whole.stop_reason == "tool_use" and whole.usage.input_tokens + whole.usage.cache_read_input_tokens > 0
    for call in whole.content:
        jsonschema.validate(call.input, {b["name"]: b for b in (WEATHER, BOOK)}[call.name]["input_schema"])


async def test_a_stop_sequence_and_count_tokens(client):
    r = await client.messages.create(model="g", max_tokens=40, stop_sequences=["2"],
                                     messages=[{"role": "user", "content": "Count: 0 1"}],
                                     extra_body={"temperature": 0})
    if r.stop_reason == "stop_sequence":  # a base model may wander off; when it stops, it says why
        assert r.stop_sequence == "2" and "2" not in r.content[0].text
    else:
        assert r.stop_reason in ("end_turn", "max_tokens")
    counted = await client.messages.count_tokens(model="g", messages=[{"role": "user", "content": "Hello there"}])
    assert 1 <= counted.input_tokens <= 4


SYSTEM = [{"type": "text", "text": "You are the harbour master's assistant. You answer questions about ships, "
           "tides, berths and the harbour's rules, briefly and exactly. " * 4, "cache_control": {"type": "ephemeral"}}]


async def test_a_cache_breakpoint_keeps_the_conversation_for_the_next_turn_after_a_restart(gemma_path, tmp_path):
    """cache_control: the prompt up to the first breakpoint names a durable KV snapshot of the
    conversation, so the next turn (its own breakpoint moved forward, as Claude Code does) reads
    the earlier one from the cache, on a replica that started afresh too."""
    from live_server import EngineClient

    from poly_ray.engine.llama_engine import Engine

    cfg = config.validate({"allowed_keys": ["key-1"], "models": {"g": {"model_path": str(gemma_path)}}}, env={})

    async def turn(messages):
        engine = Engine(gemma_path, context_size=1024, slots=1, threads=2, flush_interval=0, name="g",
                        snapshot_dir=tmp_path)
        try:
            app = create_app(TaskRunner(cfg.tasks, cfg.models, {"g": EngineClient(engine)}), cfg)
            http = httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url="http://localhost", timeout=600)
            client = anthropic.AsyncAnthropic(api_key="key-1", base_url="http://localhost", http_client=http)
            return await client.messages.create(model="g", max_tokens=8, system=SYSTEM,
                                                messages=messages)
        finally:
            engine.close()

    first = [{"role": "user", "content": [{"type": "text", "text": "When is high tide?",
                                            "cache_control": {"type": "ephemeral"}}]}]
    answer = await turn(first)
    assert answer.usage.cache_read_input_tokens == 0 and answer.usage.cache_creation_input_tokens > 100
    written = answer.usage.cache_creation_input_tokens
    nxt = [{"role": "user", "content": "When is high tide?"},
           {"role": "assistant", "content": answer.content[0].text},
           {"role": "user", "content": [{"type": "text", "text": "And low tide?", "cache_control": {"type": "ephemeral"}}]}]
    again = await turn(nxt)  # a new engine: read from the snapshot on disk
    assert again.usage.cache_read_input_tokens >= written - 8  # the system and the first question at least
    assert again.usage.input_tokens == 0 and again.usage.cache_creation_input_tokens > 0
