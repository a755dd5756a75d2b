"""The Assistants API through the real ``openai`` package (``client.beta``) against
the ASGI app with a real state store; the model is the scripted ToolModel (it
writes what the grammar it is given allows), so what is checked is the routes,
the run's life and its events. The real model: tests/serve/test_assistants.py."""

import asyncio

import openai
import pytest
from test_responses_routes import client
from test_responses_tools import app  # noqa: F401 (the fixture)

TOOLS = [{"type": "function", "function": {
    "name": "weather", "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]


async def test_assistants_crud_list_pages_and_owners(app):
    oai = client(app)
    made = [await oai.beta.assistants.create(model="m", name=f"a{i}", instructions="Be brief.") for i in range(3)]
    assert made[0].id.startswith("asst_") and made[0].model == "m" and made[0].instructions == "Be brief."
    page = await oai.beta.assistants.list(limit=2, order="asc")
    assert [a.name for a in page.data] == ["a0", "a1"] and page.has_more
    rest = await oai.beta.assistants.list(limit=2, order="asc", after=page.data[-1].id)
    assert [a.name for a in rest.data] == ["a2"] and not rest.has_more
    updated = await oai.beta.assistants.update(made[0].id, instructions="Be long.", tools=TOOLS)
    assert updated.instructions == "Be long." and updated.tools[0].function.name == "weather"
    assert (await oai.beta.assistants.retrieve(made[0].id)).name == "a0"

    other = client(app, "key-2")
    assert (await other.beta.assistants.list()).data == []
    for attempt in (other.beta.assistants.retrieve(made[0].id), other.beta.assistants.delete(made[0].id)):
        with pytest.raises(openai.NotFoundError):
            await attempt
    assert (await oai.beta.assistants.delete(made[0].id)).deleted
    with pytest.raises(openai.NotFoundError):
        await oai.beta.assistants.retrieve(made[0].id)


async def test_a_run_renders_the_thread_and_writes_the_answer(app):
    oai = client(app)
    assistant = await oai.beta.assistants.create(model="m", instructions="You are terse.")
    thread = await oai.beta.threads.create(messages=[{"role": "user", "content": "Hello there"}])
    run = await oai.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id)
    assert run.status == "completed" and run.usage.completion_tokens > 0
    prompt = app.model.requests[0].text
    assert prompt.index("You are terse.") < prompt.index("Hello there")
    messages = await oai.beta.threads.messages.list(thread.id, order="asc")
    assert [(m.role, m.content[0].text.value) for m in messages.data] == [
        ("user", "Hello there"), ("assistant", "plain answer")]
    assert messages.data[1].run_id == run.id and messages.data[1].assistant_id == assistant.id
    steps = await oai.beta.threads.runs.steps.list(run.id, thread_id=thread.id)
    assert [s.type for s in steps.data] == ["message_creation"]
    assert steps.data[0].step_details.message_creation.message_id == messages.data[1].id

    await oai.beta.threads.messages.create(thread.id, role="user", content="And again?")
    second = await oai.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id)
    assert second.status == "completed"
    # the next run's prompt holds the first exchange, before the new message
    again = app.model.requests[1].text
    assert again.index("Hello there") < again.index("plain answer") < again.index("And again?")
    assert (await oai.beta.threads.runs.list(thread.id)).data[0].id == second.id


async def test_a_streamed_run_sends_the_assistants_events(app):
    oai = client(app)
    assistant = await oai.beta.assistants.create(model="m")
    thread = await oai.beta.threads.create(messages=[{"role": "user", "content": "Hi"}])
    async with oai.beta.threads.runs.stream(thread_id=thread.id, assistant_id=assistant.id) as stream:
        kinds = [event.event async for event in stream]
        final = await stream.get_final_run()
        [message] = await stream.get_final_messages()
    assert kinds[:3] == ["thread.run.created", "thread.run.queued", "thread.run.in_progress"]
    for kind in ("thread.message.created", "thread.message.delta", "thread.message.completed",
                 "thread.run.step.completed"):
        assert kind in kinds
    assert kinds[-1] == "thread.run.completed" and final.status == "completed"
    assert message.content[0].text.value == "plain answer"
    stored = await oai.beta.threads.messages.retrieve(message.id, thread_id=thread.id)
    assert stored.content[0].text.value == "plain answer" and stored.status == "completed"


async def waiting_for_outputs(app):
    """A client, and a thread whose run waits for the weather tool's output."""
    oai = client(app)
    assistant = await oai.beta.assistants.create(model="m", tools=TOOLS)
    thread = await oai.beta.threads.create(messages=[{"role": "user", "content": "Weather in Oslo?"}])
    run = await oai.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id,
                                                      tool_choice="required")
    return oai, thread, run


async def test_a_function_tool_run_waits_for_the_outputs(app):
    oai, thread, run = await waiting_for_outputs(app)
    assert run.status == "requires_action"
    [call] = run.required_action.submit_tool_outputs.tool_calls
    assert call.function.name == "weather" and call.function.arguments == '{"city": "Oslo"}'
    with pytest.raises(openai.BadRequestError, match=r"tool_outputs\[0\]\.tool_call_id"):
        await oai.beta.threads.runs.submit_tool_outputs(run.id, thread_id=thread.id,
                                                        tool_outputs=[{"tool_call_id": "call_x", "output": "?"}])
    done = await oai.beta.threads.runs.submit_tool_outputs_and_poll(
        run_id=run.id, thread_id=thread.id, tool_outputs=[{"tool_call_id": call.id, "output": '{"sky": "sunny"}'}])
    assert done.status == "completed"
    assert "Result of the tool weather" in app.model.requests[1].text
    messages = await oai.beta.threads.messages.list(thread.id)
    assert messages.data[0].content[0].text.value == "Sunny in Oslo."
    steps = await oai.beta.threads.runs.steps.list(run.id, thread_id=thread.id, order="asc")
    assert [s.type for s in steps.data] == ["tool_calls", "message_creation"]
    assert steps.data[0].step_details.tool_calls[0].function.output == '{"sky": "sunny"}'


async def test_create_thread_and_run_and_cancel(app):
    oai = client(app)
    assistant = await oai.beta.assistants.create(model="m")
    run = await oai.beta.threads.create_and_run_poll(
        assistant_id=assistant.id, thread={"messages": [{"role": "user", "content": "Hi"}]})
    assert run.status == "completed" and run.thread_id.startswith("thread_")

    app.model.hold = asyncio.Event()  # never set: the run is mid-way when cancelled
    thread = await oai.beta.threads.create(messages=[{"role": "user", "content": "Hi"}])
    run = await oai.beta.threads.runs.create(thread_id=thread.id, assistant_id=assistant.id)
    with pytest.raises(openai.BadRequestError, match="active run"):
        await oai.beta.threads.runs.create(thread_id=thread.id, assistant_id=assistant.id)
    cancelled = await oai.beta.threads.runs.cancel(run.id, thread_id=thread.id)
    assert cancelled.status == "cancelled" and cancelled.cancelled_at
    await asyncio.sleep(0.05)
    assert (await oai.beta.threads.runs.retrieve(run.id, thread_id=thread.id)).status == "cancelled"


async def test_another_key_gets_404_everywhere(app):
    mine, theirs = client(app), client(app, "key-2")
    assistant = await mine.beta.assistants.create(model="m")
    thread = await mine.beta.threads.create(messages=[{"role": "user", "content": "secret"}])
    run = await mine.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id)
    attempts = [theirs.beta.threads.retrieve(thread.id), theirs.beta.threads.messages.list(thread.id),
                theirs.beta.threads.runs.retrieve(run.id, thread_id=thread.id),
                theirs.beta.threads.runs.steps.list(run.id, thread_id=thread.id),
                theirs.beta.threads.runs.create(thread_id=thread.id, assistant_id=assistant.id),
                theirs.beta.threads.create_and_run(assistant_id=assistant.id),
                theirs.beta.threads.delete(thread.id)]
    for attempt in attempts:
        with pytest.raises(openai.NotFoundError):
            await attempt
    assert len((await mine.beta.threads.messages.list(thread.id)).data) == 2
    # a message of another thread is not this thread's
    other = await mine.beta.threads.create()
    with pytest.raises(openai.NotFoundError):
        await mine.beta.threads.messages.retrieve((await mine.beta.threads.messages.list(thread.id)).data[0].id,
                                                  thread_id=other.id)
    await mine.beta.threads.delete(thread.id)  # its messages, runs and steps go with it
    with pytest.raises(openai.NotFoundError):
        await mine.beta.threads.runs.retrieve(run.id, thread_id=thread.id)


async def test_bad_requests_name_the_path(app):
    oai = client(app)
    with pytest.raises(openai.BadRequestError, match=r"tools\[1\]\.type: 'function' or 'file_search'"):
        await oai.beta.assistants.create(model="m", tools=[*TOOLS, {"type": "code_interpreter"}])
    with pytest.raises(openai.BadRequestError, match=r"tools\[0\]\.function\.parameters"):
        await oai.beta.assistants.create(model="m", tools=[{"type": "function", "function": {
            "name": "f", "parameters": "x"}}])
    with pytest.raises(openai.BadRequestError, match=r"messages\[0\]\.content\[0\]\.type"):
        await oai.beta.threads.create(messages=[{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "http://x"}}]}])
    with pytest.raises(openai.BadRequestError, match=r"vector_store_ids\[0\]: no memory named 'docs'"):
        await oai.beta.assistants.create(model="m", tools=[{"type": "file_search"}],
                                         tool_resources={"file_search": {"vector_store_ids": ["docs"]}})
    with pytest.raises(openai.NotFoundError, match="model 'nope'"):
        await oai.beta.assistants.create(model="nope")
    with pytest.raises(openai.NotFoundError, match="No assistant"):
        await oai.beta.threads.create_and_run(assistant_id="asst_missing")
    with pytest.raises(openai.BadRequestError, match="limit"):
        await oai.beta.assistants.list(limit=1000)


async def test_a_streamed_function_run_and_streamed_tool_outputs(app):
    oai = client(app)
    assistant = await oai.beta.assistants.create(model="m", tools=TOOLS)
    thread = await oai.beta.threads.create(messages=[{"role": "user", "content": "Weather in Oslo?"}])
    async with oai.beta.threads.runs.stream(thread_id=thread.id, assistant_id=assistant.id,
                                            tool_choice="required") as stream:
        kinds = [event.event async for event in stream]
        run = await stream.get_final_run()
    assert kinds[-1] == "thread.run.requires_action" and "thread.run.step.created" in kinds
    [call] = run.required_action.submit_tool_outputs.tool_calls
    async with oai.beta.threads.runs.submit_tool_outputs_stream(
            run_id=run.id, thread_id=thread.id, tool_outputs=[{"tool_call_id": call.id, "output": "sunny"}]) as stream:
        text = "".join([delta async for delta in stream.text_deltas])
        final = await stream.get_final_run()
    assert text == "Sunny in Oslo." and final.status == "completed"


async def test_a_run_cancelled_in_the_store_by_another_replica_stops(app, monkeypatch):
    from poly_ray.api.responses import run as watching

    monkeypatch.setattr(watching, "WATCH_S", 0.01)
    oai = client(app)
    assistant = await oai.beta.assistants.create(model="m")
    thread = await oai.beta.threads.create(messages=[{"role": "user", "content": "Hi"}])
    app.model.hold = asyncio.Event()  # never set
    run = await oai.beta.threads.runs.create(thread_id=thread.id, assistant_id=assistant.id)
    for _ in range(200):
        if (await oai.beta.threads.runs.retrieve(run.id, thread_id=thread.id)).status == "in_progress":
            break
        await asyncio.sleep(0.01)
    [(owner,)] = app.store._db.execute("SELECT owner FROM objects WHERE id = ?", (run.id,)).fetchall()
    app.store.update(owner, "run", run.id, {"status": "cancelled"})  # as the cancel route of another replica
    for _ in range(200):
        if app.model.released:
            break
        await asyncio.sleep(0.01)
    assert app.model.released == 1
    assert (await oai.beta.threads.runs.retrieve(run.id, thread_id=thread.id)).status == "cancelled"


async def test_tool_outputs_submitted_twice_at_once_drive_the_run_once(app):
    """N15: both submits passed the status check, added the outputs and started the run."""
    oai, thread, run = await waiting_for_outputs(app)
    [call] = run.required_action.submit_tool_outputs.tool_calls
    outputs = [{"tool_call_id": call.id, "output": '{"sky": "sunny"}'}]
    answers = await asyncio.gather(*(oai.beta.threads.runs.submit_tool_outputs(run.id, thread_id=thread.id,
                                                                               tool_outputs=outputs) for _ in range(2)),
                                   return_exceptions=True)
    refused = [a for a in answers if isinstance(a, Exception)]
    assert len(refused) == 1 and isinstance(refused[0], openai.BadRequestError), answers
    assert "submitted already" in str(refused[0]) or "not waiting" in str(refused[0])
    done = await oai.beta.threads.runs.poll(run.id, thread_id=thread.id)
    assert done.status == "completed" and len(app.model.requests) == 2  # the call, then one answer
    assert app.model.requests[1].text.count("Result of the tool weather") == 1


async def test_a_thread_deleted_while_its_run_generates_stops_it_and_leaves_nothing(app, monkeypatch, caplog):
    """N15: the run went on to its end, logging every second, and wrote rows under a thread that was gone."""
    from poly_ray.api.responses import run as watching

    monkeypatch.setattr(watching, "WATCH_S", 0.01)
    oai = client(app)
    assistant = await oai.beta.assistants.create(model="m")
    thread = await oai.beta.threads.create(messages=[{"role": "user", "content": "Hi"}])
    app.model.hold = asyncio.Event()  # never set
    run = await oai.beta.threads.runs.create(thread_id=thread.id, assistant_id=assistant.id)
    for _ in range(200):
        if app.model.requests:
            break
        await asyncio.sleep(0.01)
    await oai.beta.threads.delete(thread.id)
    for _ in range(200):
        if app.model.released:
            break
        await asyncio.sleep(0.01)
    assert app.model.released == 1  # the generation was closed
    await asyncio.sleep(0.05)
    kinds = [r[0] for r in app.store._db.execute("SELECT kind FROM objects")]
    assert kinds == ["assistant"], kinds  # the thread's run, messages and context went with it
    assert run.id not in app.state.services.runs.running
    assert "could not read" not in caplog.text and "Traceback" not in caplog.text


async def test_two_runs_started_at_once_on_a_thread_make_one(app):
    """N15: "one active run per thread" was a list, then a create: both starts found the thread idle."""
    oai = client(app)
    assistant = await oai.beta.assistants.create(model="m")
    thread = await oai.beta.threads.create(messages=[{"role": "user", "content": "Hi"}])
    app.model.hold = asyncio.Event()
    answers = await asyncio.gather(*(oai.beta.threads.runs.create(thread_id=thread.id, assistant_id=assistant.id)
                                     for _ in range(3)), return_exceptions=True)
    refused = [a for a in answers if isinstance(a, openai.BadRequestError)]
    assert len(refused) == 2 and all("already has an active run" in str(a) for a in refused), answers
    app.model.hold.set()
    [run] = [a for a in answers if not isinstance(a, Exception)]
    assert (await oai.beta.threads.runs.poll(run.id, thread_id=thread.id)).status == "completed"
