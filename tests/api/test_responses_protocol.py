"""Responses API shapes without a server: items checked with the path named,
turned into turns, and the stream events accepted by the real ``openai``
package's types and its ``responses.stream()`` accumulator."""

import json

import openai
import pydantic
import pytest
from openai.lib.streaming.responses._responses import ResponseStreamState
from openai.types.responses import Response, ResponseStreamEvent

from poly_ray.api.responses import protocol as p
from poly_ray.api.responses.events import EventStream
from poly_ray.errors import BadRequest
from poly_ray.generation import ToolCallDelta


def test_a_string_input_is_one_user_message():
    [item] = p.input_items("hi")
    assert item["type"] == "message" and item["role"] == "user" and item["id"].startswith("msg_")
    assert p.to_turns([item]) == [("user", "hi")]


def test_items_become_turns_with_calls_in_the_models_own_format():
    items = p.input_items([
        {"role": "system", "content": "be brief"},
        {"type": "message", "role": "user",
         "content": [{"type": "input_text", "text": "weather "}, {"type": "input_text", "text": "in Oslo?"}]},
        {"type": "function_call", "call_id": "c1", "name": "weather", "arguments": '{"city": "Oslo"}'},
        {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
    ])
    turns = p.to_turns(items)
    assert turns[0] == ("system", "be brief") and turns[1] == ("user", "weather in Oslo?")
    assert turns[2][0] == "assistant"
    assert json.loads(turns[2][1]) == {"tool_calls": [{"name": "weather", "arguments": {"city": "Oslo"}}]}
    assert turns[3] == ("user", "Result of the tool weather: sunny")


@pytest.mark.parametrize("value, path", [
    (42, "input:"),
    ([1], "input[0]:"),
    ([{"role": "robot", "content": "x"}], "input[0].role:"),
    ([{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}], "input[0].content[0].type:"),
    ([{"role": "user", "content": [{"type": "input_text", "text": 3}]}], "input[0].content[0].text"),
    ([{"role": "user", "content": "ok"}, {"type": "function_call", "call_id": "c", "name": "f"}], "input[1].arguments"),
    ([{"type": "function_call", "call_id": "c", "name": "f", "arguments": "{nope"}], "input[0].arguments:"),
    ([{"type": "function_call_output", "output": "x"}], "input[0].call_id"),
    ([{"type": "image_generation_call"}], "input[0].type:"),  # a reasoning item is taken, and dropped
])
def test_malformed_items_name_the_path(value, path):
    with pytest.raises(BadRequest) as err:
        p.input_items(value)
    assert err.value.message.startswith(path), err.value.message


def test_flat_tools_are_checked_with_flat_paths():
    schema = {"type": "object", "properties": {"city": {"type": "string"}}}
    [tool] = p.flat_tools([{"type": "function", "name": "weather", "parameters": schema}])
    assert tool.name == "weather"
    with pytest.raises(BadRequest, match=r"^tools\[0\]\.name:"):
        p.flat_tools([{"type": "function", "name": "no spaces allowed"}])
    with pytest.raises(BadRequest, match=r"^tools\[0\]\.type: .*'web_search'"):
        p.flat_tools([{"type": "web_search"}])


def test_response_object_is_a_valid_openai_response():
    out = p.response_object("resp_1", "gemma", status="completed", output=[p.output_message("hello")],
                            usage=p.usage(10, 2, 8))
    parsed = Response.model_validate(out)
    assert parsed.output_text == "hello" and parsed.usage.input_tokens_details.cached_tokens == 8


def fold(events, tools=()):
    """The events through the openai helper, as responses.stream() folds them."""
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    adapter = pydantic.TypeAdapter(ResponseStreamEvent)
    state = ResponseStreamState(input_tools=list(tools), text_format=openai.omit)
    for raw in events:
        state.handle_event(adapter.validate_python(raw))  # every field the openai types require is there
    return state._completed_response


def test_stream_events_fold_into_the_final_response_in_the_openai_helper():
    start = p.response_object("resp_1", "gemma", status="in_progress", output=[])
    stream = EventStream(start)
    events = [*stream.start(), *stream.delta("Hel"), *stream.delta("lo"), *stream.end()]
    final = p.response_object("resp_1", "gemma", status="completed", output=stream.items, usage=p.usage(5, 2))
    events.append(stream.finish(final))
    assert [e["type"] for e in events] == [
        "response.created", "response.in_progress", "response.output_item.added", "response.content_part.added",
        "response.output_text.delta", "response.output_text.delta", "response.output_text.done",
        "response.content_part.done", "response.output_item.done", "response.completed",
    ]
    assert fold(events).output_text == "Hello"


def test_function_calls_stream_as_their_own_items():
    tools = [{"type": "function", "name": "weather", "parameters": {"type": "object"}}]
    start = p.response_object("resp_1", "gemma", status="in_progress", output=[], tools=tools)
    stream = EventStream(start)
    events = [*stream.start(), *stream.call(ToolCallDelta(0, "call_1", "weather")),
              *stream.call(ToolCallDelta(0, arguments='{"city":')), *stream.call(ToolCallDelta(0, arguments='"Oslo"}')),
              *stream.call(ToolCallDelta(1, "call_2", "weather", '{"city":"Rome"}')), *stream.end()]
    kinds = [e["type"] for e in events]
    assert kinds[2:7] == ["response.output_item.added", "response.function_call_arguments.delta",
                          "response.function_call_arguments.delta", "response.function_call_arguments.done",
                          "response.output_item.done"]
    assert kinds.count("response.output_item.added") == 2 and "response.content_part.added" not in kinds
    final = p.response_object("resp_1", "gemma", status="completed", output=stream.items, usage=p.usage(5, 9),
                              tools=tools)
    done = fold([*events, stream.finish(final)], tools)
    calls = [(o.type, o.call_id, o.name, o.arguments) for o in done.output]
    assert calls == [("function_call", "call_1", "weather", '{"city":"Oslo"}'),
                     ("function_call", "call_2", "weather", '{"city":"Rome"}')]
    assert [o["output_index"] for o in events if o["type"] == "response.output_item.done"] == [0, 1]


def test_an_answer_with_nothing_written_is_one_empty_message():
    stream = EventStream(p.response_object("resp_1", "gemma", status="in_progress", output=[]))
    events = [*stream.start(), *stream.end()]
    assert [i["type"] for i in stream.items] == ["message"]
    final = p.response_object("resp_1", "gemma", status="completed", output=stream.items, usage=p.usage(5, 0))
    assert fold([*events, stream.finish(final)]).output_text == ""


def test_tool_choice_and_text_format_map_to_the_chat_path():
    tools = [{"type": "function", "name": "weather"}]
    assert p.chat_tool_choice({"type": "function", "name": "weather"}, tools) == {
        "type": "function", "function": {"name": "weather"}}
    assert p.chat_tool_choice("required", tools) == "required"
    with pytest.raises(BadRequest, match=r"^tool_choice\.name: 'nope' is not an offered tool"):
        p.chat_tool_choice({"type": "function", "name": "nope"}, tools)
    assert p.chat_tools(tools) == [{"type": "function", "function": {"name": "weather"}}]
    assert p.format_grammar({"format": {"type": "text"}}) is None
    assert "root" in p.format_grammar({"format": {"type": "json_schema", "name": "x", "schema": {
        "type": "object", "properties": {"a": {"type": "integer"}}}}})
    with pytest.raises(BadRequest, match=r"^text\.format\.schema"):
        p.format_grammar({"format": {"type": "json_schema", "name": "x"}})
    with pytest.raises(BadRequest, match=r"^text\.format\.type"):
        p.format_grammar({"format": {"type": "yaml"}})
