"""Reasoning through every family with the real Gemma 3 270M over the ASGI app (no Ray),
through the real openai, ollama and anthropic packages. Gemma does not think on its own:
the tasks' prompts open the thinking marker, so its own tokens fill the reasoning until
the budget runs out, the engine writes the end marker, and the answer follows. Greedy,
so nothing flakes."""

import json

import anthropic
import httpx
import httpx2
import jsonschema
import ollama
import openai
import pytest
from starlette.testclient import TestClient

from poly_ray import config
from poly_ray.api import create_app
from poly_ray.state.service import StateService
from poly_ray.state.store import Store
from poly_ray.tasks.runner import TaskRunner

pytestmark = pytest.mark.model

BUDGET = 6
# One worked example, so that the base model answers after its thinking as the example does.
EXAMPLE = "Q: What is one plus one?\nA: <think>One apple and one more apple make two apples, so it is two.</think>\n2\n"
# A chat template with the thinking switch, as Qwen3's has: the generation prompt opens the thinking.
TEMPLATE = (
    EXAMPLE + "{% for m in messages %}{% if m.role == 'user' %}Q: {{ m.content }}\n{% else %}A: {{ m.content }}\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}A: "
    "{% if enable_thinking is defined and not enable_thinking %}<think></think>\n{% else %}<think>{% endif %}"
    "{% endif %}")
SCHEMA = {"type": "object", "properties": {"answer": {"type": "integer", "minimum": 0, "maximum": 100}},
          "required": ["answer"], "additionalProperties": False}
ADD = {"type": "function", "function": {"name": "add", "description": "Add two numbers", "parameters": {
    "type": "object", "properties": {"a": {"type": "integer", "minimum": 0, "maximum": 99},
                                     "b": {"type": "integer", "minimum": 0, "maximum": 99}},
    "required": ["a", "b"], "additionalProperties": False}}}
COMMON = {"model": "g", "temperature": 0, "max_tokens": 64, "max_reasoning_tokens": BUDGET, "stop_sequences": ["Q:"]}


@pytest.fixture(scope="module")
def app(gemma_path, tmp_path_factory):
    from poly_ray.serve.model import LlamaModel

    cfg = config.validate({
        "allowed_keys": ["key-1"],
        "allowed_hosts": ["localhost", "testserver"],  # httpx's and Starlette TestClient's Host
        "models": {"g": {"model_path": str(gemma_path), "context_size": 1024, "slots": 1, "threads_per_session": 2,
                         "stream_interval_ms": 0}},
        "tasks": {
            "think": {**COMMON, "chat_template": TEMPLATE},
            "think-prompt": {**COMMON, "prefix": EXAMPLE + "Q: ", "postfix": "\nA: <think>"},
            "think-biased": {**COMMON, "prefix": EXAMPLE + "Q: ", "postfix": "\nA: <think>",
                             "biaser": {"json_schema": SCHEMA}, "bias_prompt": "\nAs JSON: "},
            "plain": {"model": "g", "max_tokens": 16, "reasoning": "off"},
        },
    }, env={})
    model = LlamaModel("g", cfg.models["g"].model_dump(mode="json"), str(cfg.cache_path))
    runner = TaskRunner(cfg.tasks, cfg.models, {"g": model})
    runner.state = StateService(Store(tmp_path_factory.mktemp("state") / "state.sqlite3"))
    app = create_app(runner, cfg)
    app.state.gemma = model.engine  # the tests count the end marker's tokens with its tokenizer
    yield app
    runner.state.close()
    model.engine.close()


def transport(app):
    return httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url="http://localhost", timeout=600)


@pytest.fixture
def oai(app):
    return openai.AsyncOpenAI(api_key="key-1", base_url="http://localhost/v1", http_client=transport(app),
                              max_retries=0)


@pytest.fixture
def olla(app):
    return ollama.AsyncClient(host="http://localhost", transport=httpx.ASGITransport(app=app),
                              headers={"Authorization": "Bearer key-1"})


@pytest.fixture
def claude(app):
    return anthropic.AsyncAnthropic(api_key="key-1", base_url="http://localhost", http_client=transport(app),
                                    max_retries=0)


@pytest.fixture
def end_tokens(app):
    return len(app.state.gemma.tokenize("</think>", special=True))


ASK = [{"role": "user", "content": "What is two plus three?"}]


def clean(text):
    assert "<think>" not in text and "</think>" not in text
    return text


async def test_openai_chat_whole_and_streamed(oai, end_tokens):
    r = await oai.chat.completions.create(model="think", messages=ASK)
    message = r.choices[0].message
    assert clean(message.model_extra["reasoning_content"]).strip()
    assert clean(message.content).strip()
    assert r.usage.completion_tokens_details.reasoning_tokens == BUDGET + end_tokens
    reasoning, content = "", ""
    async for chunk in await oai.chat.completions.create(model="think", messages=ASK, stream=True):
        if chunk.choices:
            delta = chunk.choices[0].delta
            reasoning += (delta.model_extra or {}).get("reasoning_content") or ""
            content += delta.content or ""
    assert (reasoning, content) == (message.model_extra["reasoning_content"], message.content)


async def test_openai_json_schema_holds_only_for_the_answer(oai):
    fmt = {"type": "json_schema", "json_schema": {"name": "sum", "schema": SCHEMA}}
    r = await oai.chat.completions.create(model="think", messages=ASK, response_format=fmt)
    message = r.choices[0].message
    jsonschema.validate(json.loads(message.content), SCHEMA)
    assert clean(message.model_extra["reasoning_content"]).strip()
    assert "{" not in message.model_extra["reasoning_content"][:1]  # the thinking was free, not the JSON


async def test_openai_tool_call_required_arguments_validate(oai):
    for stream in (False, True):
        r = await oai.chat.completions.create(model="think", messages=ASK, tools=[ADD], tool_choice="required",
                                              parallel_tool_calls=False, stream=stream)
        if stream:
            arguments, reasoning = "", ""
            async for chunk in r:
                delta = chunk.choices[0].delta if chunk.choices else None
                if delta is not None:
                    reasoning += (delta.model_extra or {}).get("reasoning_content") or ""
                    arguments += "".join(c.function.arguments or "" for c in delta.tool_calls or ())
        else:
            [call] = r.choices[0].message.tool_calls
            arguments, reasoning = call.function.arguments, r.choices[0].message.model_extra["reasoning_content"]
        jsonschema.validate(json.loads(arguments), ADD["function"]["parameters"])
        assert clean(reasoning).strip()


async def test_openai_thinking_switched_off(oai):
    for extra in ({"reasoning_effort": "none"}, {"chat_template_kwargs": {"enable_thinking": False}}):
        r = await oai.chat.completions.create(model="think", messages=ASK, max_tokens=8, extra_body=extra)
        assert "reasoning_content" not in (r.choices[0].message.model_extra or {}), extra
        assert r.usage.completion_tokens_details is None or not r.usage.completion_tokens_details.reasoning_tokens
    # An effort's budget is below the task's ceiling only when it is smaller: minimal (256) keeps 6.
    r = await oai.chat.completions.create(model="think", messages=ASK, max_tokens=24, reasoning_effort="minimal")
    assert r.choices[0].message.model_extra["reasoning_content"]


async def test_earlier_thinking_stays_out_of_the_prompt(oai):
    said = [*ASK, {"role": "assistant", "content": "Five.", "reasoning_content": "two and three"},
            {"role": "user", "content": "And plus four?"}]
    r = await oai.chat.completions.create(model="think", messages=said, max_tokens=12)
    assert r.choices[0].message.model_extra["reasoning_content"]


async def test_ollama_chat_and_generate_with_think(olla, end_tokens):
    r = await olla.chat(model="think", messages=ASK, think=True)
    assert clean(r.message.thinking).strip() and clean(r.message.content).strip()
    thinking, content = "", ""
    async for part in await olla.chat(model="think", messages=ASK, think=True, stream=True):
        thinking += part.message.thinking or ""
        content += part.message.content or ""
    assert (thinking, content) == (r.message.thinking, r.message.content)
    g = await olla.generate(model="think-prompt", prompt="What is two plus three?", think=True)
    assert clean(g.thinking).strip() and clean(g.response).strip()
    streamed = [p async for p in await olla.generate(model="think-prompt", prompt="What is two plus three?",
                                                     think="low", stream=True)]
    assert "".join(p.thinking or "" for p in streamed) == g.thinking
    off = await olla.chat(model="think", messages=ASK, think=False, options={"num_predict": 8})
    assert not off.message.thinking
    formatted = await olla.chat(model="think", messages=ASK, think=True, format=SCHEMA)
    jsonschema.validate(json.loads(formatted.message.content), SCHEMA)
    assert formatted.message.thinking


async def test_anthropic_thinking_blocks_whole_and_streamed(claude):
    thinking = {"type": "enabled", "budget_tokens": 8}  # the task's 6 is the ceiling
    m = await claude.messages.create(model="think", max_tokens=40, messages=ASK, thinking=thinking)
    assert [b.type for b in m.content] == ["thinking", "text"]
    assert clean(m.content[0].thinking).strip() and clean(m.content[1].text).strip()
    async with claude.messages.stream(model="think", max_tokens=40, messages=ASK, thinking=thinking) as stream:
        deltas = [e.delta.type async for e in stream if e.type == "content_block_delta"]
        final = await stream.get_final_message()
    assert "thinking_delta" in deltas and deltas.index("text_delta") > deltas.index("thinking_delta")
    assert [(b.type, getattr(b, "thinking", None) or getattr(b, "text", None)) for b in final.content] == \
        [(b.type, getattr(b, "thinking", None) or getattr(b, "text", None)) for b in m.content]
    # A thinking block sent back is left out of the prompt; thinking disabled is no thinking.
    again = [*ASK, {"role": "assistant", "content": [{"type": "thinking", "thinking": "hm", "signature": ""},
                                                     {"type": "text", "text": "Five."}]},
             {"role": "user", "content": "And plus four?"}]
    off = await claude.messages.create(model="think", max_tokens=8, messages=again, thinking={"type": "disabled"})
    assert [b.type for b in off.content] == ["text"]


async def test_bad_reasoning_controls_are_400_naming_the_field(oai, olla, claude):
    with pytest.raises(openai.BadRequestError) as e:
        await oai.chat.completions.create(model="think", messages=ASK, reasoning_effort="extreme")
    assert e.value.body["param"] == "reasoning_effort" and "extreme" in e.value.message
    for budget in (-1, 5000):
        with pytest.raises(anthropic.BadRequestError, match="thinking.budget_tokens"):
            await claude.messages.create(model="think", max_tokens=40, messages=ASK,
                                         thinking={"type": "enabled", "budget_tokens": budget})
    with pytest.raises(ollama.ResponseError, match="think: unknown reasoning effort 'extreme'"):
        await olla.chat(model="think", messages=ASK, think="extreme")
    with pytest.raises(ollama.ResponseError, match="think: model 'g' does not think") as o:
        await olla.chat(model="plain", messages=ASK, think=True)
    assert o.value.status_code == 400
    with pytest.raises(openai.BadRequestError) as e:
        await oai.chat.completions.create(model="plain", messages=ASK, extra_body={
            "chat_template_kwargs": {"enable_thinking": True}})
    assert e.value.body["param"] == "chat_template_kwargs.enable_thinking"


async def test_responses_reasoning_item_whole_and_streamed(oai, end_tokens):
    r = await oai.responses.create(model="think", input="What is two plus three?", reasoning={"effort": "low"})
    assert [item.type for item in r.output] == ["reasoning", "message"]
    thought = r.output[0].content[0].text
    assert clean(thought).strip() and clean(r.output_text).strip()
    assert r.usage.output_tokens_details.reasoning_tokens == BUDGET + end_tokens
    kinds, deltas, final = [], "", None
    async for event in await oai.responses.create(model="think", input="What is two plus three?", stream=True):
        kinds.append(event.type)
        if event.type == "response.reasoning_text.delta":
            deltas += event.delta
        if event.type == "response.completed":
            final = event.response
    assert deltas == thought
    assert kinds.index("response.reasoning_text.done") < kinds.index("response.output_text.delta")
    assert [item.type for item in final.output] == ["reasoning", "message"]
    assert final.output[0].content[0].text == thought and final.output_text == r.output_text
    # The reasoning item sent back as input is taken, and left out of the prompt.
    again = await oai.responses.create(model="think", max_output_tokens=12, input=[
        {"role": "user", "content": "What is two plus three?"}, *[item.model_dump() for item in r.output],
        {"role": "user", "content": "And plus four?"}])
    assert again.output[0].type == "reasoning"
    with pytest.raises(openai.BadRequestError) as e:
        await oai.responses.create(model="think", input="hi", reasoning={"effort": "loads"})
    assert e.value.body["param"] == "reasoning.effort"


async def test_native_completion_and_live(app, end_tokens):
    async with transport(app) as http:
        auth = {"Authorization": "Bearer key-1"}
        whole = (await http.post("/v1/task/think-prompt/completion", json={"prompt": "What is two plus three?"},
                                 headers=auth)).json()
        assert clean(whole["reasoning"]).strip() and clean(whole["text"]).strip()
        assert whole["usage"]["completion_tokens_details"] == {"reasoning_tokens": BUDGET + end_tokens}
        live = (await http.post("/v1/task/think-prompt/live", json={"prompt": "What is two plus three?"},
                                headers=auth)).text
        none = (await http.post("/v1/task/think-prompt/completion", headers=auth, json={
            "prompt": "What is two plus three?", "reasoning_effort": "none", "max_tokens": 6})).json()
    events = [block for block in live.split("\n\n") if block]
    reasoning = [b for b in events if b.startswith("event: reasoning\n")]
    assert reasoning and events.index(reasoning[-1]) < next(i for i, b in enumerate(events) if b.startswith("data:"))
    # An event's data lines join with newlines; the events' texts follow each other.
    assert "".join("\n".join(line[len("data: "):] for line in b.split("\n")[1:]) for b in reasoning) == \
        whole["reasoning"]
    assert "reasoning" not in none


def test_websocket_json_frames(app):
    with TestClient(app) as client, client.websocket_connect(
            "/v1/task/think-prompt/chat?api_key=key-1&protocol=json") as ws:
        ws.send_text("What is two plus three?")
        frames = []
        while (frame := ws.receive_json())["type"] != "done":
            frames.append(frame)
    kinds = [f["type"] for f in frames]
    assert kinds[0] == "reasoning" and "token" in kinds
    assert kinds.index("token") > max(i for i, k in enumerate(kinds) if k == "reasoning")
    assert clean("".join(f["text"] for f in frames if f["type"] == "token")).strip()


async def test_the_bias_prompt_flow_thinks_once_and_the_biased_answer_validates(app, end_tokens):
    async with transport(app) as http:
        r = (await http.post("/v1/task/think-biased/completion", json={"prompt": "What is two plus three?"},
                             headers={"Authorization": "Bearer key-1"})).json()
    jsonschema.validate(json.loads(r["text"]), SCHEMA)
    assert clean(r["reasoning"]).strip() and "{" not in r["reasoning"]
    assert r["usage"]["completion_tokens_details"] == {"reasoning_tokens": BUDGET + end_tokens}
