"""Tool definitions, tool_choice, the envelope grammar and its streaming decoder (no model)."""

import json

import pytest
from llama_cpp import LlamaGrammar

from poly_ray import tools
from poly_ray.errors import BadRequest
from poly_ray.generation import ToolCallDelta

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "unit": {"enum": ["c", "f"]}},
                   "required": ["city", "unit"]}}}
CLOCK = {"type": "function", "function": {"name": "now"}}


def test_definitions_are_checked_field_by_field():
    assert [t.name for t in tools.check_tools([WEATHER, CLOCK])] == ["get_weather", "now"]
    assert tools.check_tools([CLOCK])[0].parameters == {"type": "object", "properties": {}}
    cases = {
        "tools[0].type: only 'function'": [{"type": "code_interpreter"}],
        "tools[1].function.name: 'now' is offered twice": [CLOCK, CLOCK],
        "tools[0].function.name: 1-64": [{"type": "function", "function": {"name": "a b"}}],
        "tools[0].function.parameters.properties.x.multipleOf cannot be enforced":
            [{"type": "function", "function": {"name": "f", "parameters": {
                "type": "object", "properties": {"x": {"type": "number", "multipleOf": 0.5}}}}}],
        "tools[0].function.parameters must be a JSON schema of an object": [{"type": "function", "function": {
            "name": "f", "parameters": {"type": "string"}}}],
        "tools[0].function.color: unknown field": [{"type": "function", "function": {"name": "f", "color": 1}}],
        "at most 128 tools, not 129": [{"type": "function", "function": {"name": f"f{i}"}} for i in range(129)],
    }
    for message, given in cases.items():
        with pytest.raises(BadRequest, match=message.replace("(", r"\(").replace("[", r"\[")):
            tools.check_tools(given)


def test_tool_choice():
    assert tools.plan([WEATHER]).mode == "auto"
    assert not tools.plan(None).active
    assert not tools.plan([WEATHER], "none").active
    named = tools.plan([WEATHER, CLOCK], {"type": "function", "function": {"name": "now"}})
    assert (named.mode, named.forced, [t.name for t in named.callable()]) == ("required", "now", ["now"])
    # One call of a named function, unless more are asked for.
    assert not named.parallel and tools.plan([CLOCK], {"type": "function", "function": {"name": "now"}}, True).parallel
    with pytest.raises(BadRequest, match=r"tool_choice.function.name: 'nope' is not an offered tool \(tools: get_weather\)"):
        tools.plan([WEATHER], {"type": "function", "function": {"name": "nope"}})
    with pytest.raises(BadRequest, match="'required' needs tools"):
        tools.plan(None, "required")
    with pytest.raises(BadRequest, match="tool_choice: 'auto', 'none'"):
        tools.plan([WEATHER], "sometimes")


@pytest.mark.parametrize("choice", ["auto", "required", {"type": "function", "function": {"name": "get_weather"}}])
@pytest.mark.parametrize("parallel", [True, False])
def test_grammars_parse_in_llama_cpp(choice, parallel):
    grammar = tools.plan([WEATHER, CLOCK], choice, parallel).grammar()
    LlamaGrammar.from_string(grammar, verbose=False)
    assert ("content ::=" in grammar) == (choice == "auto")
    assert ('( "," space call ){0,15}' in grammar) == parallel
    assert ('"\\"now\\""' in grammar) == (not isinstance(choice, dict))


def test_instructions_name_the_tools_and_the_envelope():
    text = tools.plan([WEATHER], "required", False).instructions()
    assert '"name": "get_weather"' in text and "exactly one call" in text and '{"content"' not in text
    messages = tools.with_instructions(tools.plan([WEATHER]), [("system", "Be brief."), ("user", "hi")])
    assert messages[0][1].startswith("Be brief.\n\nYou can call these tools") and '{"content"' in messages[0][1]
    assert tools.with_instructions(tools.plan([WEATHER]), [("user", "hi")])[0][0] == "system"


def test_the_decoder_streams_calls_as_the_text_arrives():
    text = ('{"tool_calls": [{"name": "get_weather", "arguments": {"city": "Pa\\"ris \\u00e9\\ud83d\\ude00", '
            '"unit": "c"}}, {"name": "now", "arguments": {}}]} ')
    for size in (1, 3, 7, len(text)):
        decoder = tools.EnvelopeDecoder()
        out = [d for i in range(0, len(text), size) for d in decoder.feed(text[i : i + size])]
        assert all(isinstance(d, ToolCallDelta) for d in out)
        firsts = [d for d in out if d.id]
        assert [(d.index, d.name) for d in firsts] == [(0, "get_weather"), (1, "now")]
        assert out[0].id.startswith("call_") and out[0].id != firsts[1].id
        args = ["".join(d.arguments for d in out if d.index == i) for i in (0, 1)]
        assert [json.loads(a) for a in args] == [{"city": 'Pa"ris é😀', "unit": "c"}, {}]
        assert decoder.complete and decoder.calls == 2


def test_the_decoder_streams_content_decoded():
    decoder = tools.EnvelopeDecoder()
    text = '{"content": "Hi \\"you\\"\\n\\u00e9"}'
    assert "".join(p for i in range(0, len(text), 2) for p in decoder.feed(text[i : i + 2])) == 'Hi "you"\né'
    assert decoder.complete and decoder.calls == 0
    cut = tools.EnvelopeDecoder()
    cut.feed('{"tool_calls": [{"name": "now", "arguments": {')
    assert not cut.complete and cut.calls == 1


def test_earlier_calls_and_results_as_the_model_reads_them():
    assert json.loads(tools.envelope([("now", {})])) == {"tool_calls": [{"name": "now", "arguments": {}}]}
    assert tools.tool_result("now", "12:00") == ("user", "Result of the tool now: 12:00")
