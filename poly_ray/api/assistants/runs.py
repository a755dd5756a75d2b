"""Runs of the Assistants API: a thread's messages rendered as chat turns through
the same chat path as /v1/chat/completions (so the next run's prompt starts
with this one's and the replica's cached prefix is reused), run in this ingress
replica's background. The client polls the run, or reads its events as SSE
(``stream: true``): each is stored first, then sent.

A run that calls a function tool stops in ``requires_action``; the tool outputs
(``submit_tool_outputs``) join its context (``run_context``: the model's calls
as it wrote them and the results as turns) and the run goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import AsyncIterator

from poly_ray import grammars
from poly_ray import tools as tool_calls
from poly_ray.api import sse, streaming
from poly_ray.api.auth import Principal
from poly_ray.api.backend import Backend, StateBackend, require_state
from poly_ray.api.family import OPENAI
from poly_ray.api.limits import StreamLimits
from poly_ray.api.responses.run import keep, watch
from poly_ray.errors import BadRequest, NotFound, PolyError
from poly_ray.generation import Chunk, Done, ToolCallDelta
from poly_ray.state.kinds import ASSISTANT, CONTEXT, MESSAGE, RUN, STEP, THREAD
from poly_ray.tasks.prompts import recalled_text
from poly_ray.tasks.turn import Overrides, TurnRequest, chain_key

from . import protocol as p
from .protocol import ACTIVE

RECALL = 4  # passages file_search puts in a run's context, per memory
WAITING = "waiting"  # a run's context while the run waits on tool outputs
log = logging.getLogger(__name__)


def context_id(run_id: str) -> str:
    return "ctx_" + run_id.removeprefix("run_")


def file_search_memories(assistant: dict, thread: dict) -> list[str]:
    """The memories a run's file_search recalls from: its thread's, else its assistant's."""
    return p.memory_names(thread.get("tool_resources")) or p.memory_names(assistant.get("tool_resources"))


class Runs:
    def __init__(self, backend: Backend, slots: StreamLimits, caps: grammars.Caps, *, max_memories: int,
                 max_query_chars: int):
        """``caps``: the config's schema_limits, which a run's response_format is held to;
        ``max_memories`` and ``max_query_chars``: max_file_search_memories and
        max_recall_chars, which bound a run's recalls."""
        self.backend, self.slots, self.caps = backend, slots, caps
        self.max_memories, self.max_query_chars = max_memories, max_query_chars
        self.running: dict[str, asyncio.Task] = {}

    def _state(self) -> StateBackend:
        return require_state(self.backend)

    async def create(self, owner: str, run: dict) -> dict:
        """Store a new run; a thread with an active run refuses it (400), in one step of the store."""
        state = self._state()
        run = await state.create(owner, RUN, run, parent=run["thread_id"], exclusive=ACTIVE)
        await state.create(owner, CONTEXT, {"id": context_id(run["id"]), "turns": []}, parent=run["id"])
        return run

    def start(self, who: Principal, run: dict, first: list[tuple[str, dict]],
              stream: bool) -> AsyncIterator[tuple[str, dict]] | None:
        """Run it in the background for ``who``; with ``stream``, the SSE events as they come
        (``first``: the events that announce it), else None (the client polls)."""
        owner = who.owner
        queue: asyncio.Queue | None = asyncio.Queue() if stream else None

        def emit(name: str, data: dict) -> None:
            if queue is not None:
                queue.put_nowait((name, data))

        for name, data in first:
            emit(name, data)
        task = keep(self._drive(who, run, emit))
        self.running[run["id"]] = task

        async def cancelled() -> bool:
            return (await self._state().get(owner, RUN, run["id"]))["status"] == "cancelled"

        keep(watch(task, cancelled))

        def ended(_):
            self.running.pop(run["id"], None)
            if queue is not None:
                queue.put_nowait(None)

        task.add_done_callback(ended)
        return None if queue is None else _events(queue)

    async def cancel(self, owner: str, run: dict) -> dict:
        if run["status"] in ACTIVE:
            run = await self._state().update(owner, RUN, run["id"], {"status": "cancelled", "cancelled_at": p.now()},
                                               only_if=ACTIVE)
            task = self.running.pop(run["id"], None)
            if task is not None:
                task.cancel()
        return run

    async def submit(self, owner: str, run: dict, outputs: list[p.ToolOutput]) -> dict:
        """Check the outputs against the calls the run waits on, add them to its context."""
        if run["status"] != "requires_action":
            raise BadRequest(f"the run is not waiting for tool outputs (its status is '{run['status']}')")
        calls = run["required_action"]["submit_tool_outputs"]["tool_calls"]
        by_id = {c["id"]: c for c in calls}
        for i, out in enumerate(outputs):
            if out.tool_call_id not in by_id:
                raise BadRequest(f"tool_outputs[{i}].tool_call_id: '{out.tool_call_id}' is not a call this run waits on")
        given = {o.tool_call_id: o.output for o in outputs}
        if missing := [c for c in by_id if c not in given]:
            raise BadRequest(f"tool_outputs: the outputs of {', '.join(missing)} are missing")
        state = self._state()
        context = await state.get(owner, CONTEXT, context_id(run["id"]))
        said = tool_calls.envelope([(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in calls])
        turns = [*context["turns"], ["assistant", said],
                 *(list(tool_calls.tool_result(c["function"]["name"], given[c["id"]])) for c in calls)]
        # Claimed in one store update: of two submits at once (on any ingress replica) only the
        # one whose mark is stored goes on; the other would add the outputs again and drive the
        # run twice. The context is internal, so the mark is never shown.
        mark = f"submitted {uuid.uuid4().hex}"
        claimed = await state.update(owner, CONTEXT, context["id"], {"turns": turns, "status": mark},
                                     only_if=(WAITING, None))  # None: a context saved before the mark
        if claimed.get("status") != mark:
            raise BadRequest("the run is not waiting for tool outputs (they were submitted already)")
        if step_id := context.get("step_id"):
            done = [dict(c, function=dict(c["function"], output=given[c["id"]])) for c in calls]
            await state.update(owner, STEP, step_id, {"status": "completed", "completed_at": p.now(),
                                                      "step_details": p.calls_step(done)})
        return await state.update(owner, RUN, run["id"], {"status": "queued", "required_action": None},
                                  only_if=("requires_action",))

    async def _save(self, owner: str, rid: str, changes: dict) -> dict:
        return await self._state().update(owner, RUN, rid, changes, only_if=ACTIVE)

    async def _prompt(self, who: Principal, run: dict) -> tuple[list[tuple[str, str]], dict]:
        """The run's turns (instructions, the thread's messages, recalled passages,
        the tool rounds so far) and the chat path's overrides."""
        state, owner = self._state(), who.owner
        assistant = await state.get(owner, ASSISTANT, run["assistant_id"])
        thread = await state.get(owner, THREAD, run["thread_id"])
        messages = await state.all(owner, MESSAGE, parent=thread["id"])
        turns = [(m["role"], "".join(c["text"]["value"] for c in m["content"] if c["type"] == "text"))
                 for m in messages if m["status"] == "completed"]
        if any(t.get("type") == "file_search" for t in run["tools"]) and turns and turns[-1][0] == "user":
            passages = await self._recall(file_search_memories(assistant, thread), turns[-1][1], who)
            if passages:  # beside the question, so the earlier turns stay a cached prefix
                turns[-1] = ("user", f"Passages that may help:\n\n{passages}{turns[-1][1]}")
        if run["instructions"]:
            turns.insert(0, ("system", run["instructions"]))
        context = await state.get(owner, CONTEXT, context_id(run["id"]))
        turns += [tuple(t) for t in context["turns"]]
        o = {"max_tokens": run["max_completion_tokens"], "temperature": run["temperature"], "top_p": run["top_p"]}
        functions = p.function_tools(run["tools"])
        choice = run["tool_choice"]
        if context["turns"] and choice != "none":
            choice = "auto"  # "required" (or a named tool) asks for a call before the answer: it was made
        if functions:
            o.update(tools=functions, tool_choice=choice, parallel_tool_calls=run["parallel_tool_calls"])
        if not functions or choice == "none":
            o["grammar"] = await asyncio.to_thread(p.format_grammar, run["response_format"], "response_format",
                                                   self.caps)
        return turns, {k: v for k, v in o.items() if v is not None}

    async def _recall(self, names: list[str], query: str, who: Principal) -> str:
        memories = self.backend.memories
        if not names or memories is None:
            return ""
        # Checked again here: the names were stored by an earlier request, maybe under other
        # scopes (a JWT's claims change, a config lowered the cap).
        names = list(dict.fromkeys(names))
        if len(names) > self.max_memories:
            raise BadRequest(f"file_search names {len(names)} memories; at most {self.max_memories} "
                             "(max_file_search_memories)")
        for name in names:
            who.check("memory", name)
        query = query[-self.max_query_chars:]  # the end of the message, where its question usually is
        found = await asyncio.gather(*(memories.recall(n, query, RECALL, owner=who.owner) for n in names))
        return recalled_text([c for chunks in found for c in chunks])

    async def _drive(self, who: Principal, run: dict, emit) -> None:
        state, rid, owner = self._state(), run["id"], who.owner
        message: dict | None = None
        step: dict | None = None  # set with message
        parts: list[str] = []
        try:
            run = await self._save(owner, rid, {"status": "in_progress", "started_at": run["started_at"] or p.now()})
            if run["status"] != "in_progress":
                return  # cancelled while queued
            emit("thread.run.in_progress", run)
            turns, overrides = await self._prompt(who, run)
            calls: dict[int, dict[str, str]] = {}
            done: Done | None = None
            # A thread's runs go to the model replica that holds its prefix.
            overrides["session"] = chain_key(owner, "thread", run["thread_id"])
            turn = TurnRequest(run["model"], messages=tuple(turns), overrides=Overrides.of(overrides), owner=owner)
            events = self.backend.stream(turn)
            try:
                _, release = await self.slots.accepted(events, who.credential)
                try:
                    async for ev in events:
                        if isinstance(ev, Chunk) and ev.text:
                            if message is None:
                                message, step = await self._message(owner, run, emit)
                            parts.append(ev.text)
                            emit("thread.message.delta", p.message_delta(message["id"], ev.text))
                        elif isinstance(ev, ToolCallDelta):
                            call = calls.setdefault(ev.index, {"id": ev.id, "name": ev.name, "arguments": ""})
                            call["arguments"] += ev.arguments
                        elif isinstance(ev, Done):
                            done = ev
                            break
                finally:
                    release()
            finally:
                await events.aclose()
            if done is None:
                raise PolyError("the generation ended without finishing")
            used = _add_usage(run["usage"], done)
            if calls and done.finish_reason == "tool_calls":
                await self._requires_action(owner, run, [calls[i] for i in sorted(calls)], used, emit)
                return
            if message is None or step is None:
                message, step = await self._message(owner, run, emit)
            await self._answered(owner, run, message, step, "".join(parts), used, done, emit)
        except asyncio.CancelledError:
            emit("thread.run.cancelled", dict(run, status="cancelled"))  # the cancel route has stored it
            # What was written so far stays, marked cut short (unless the thread was deleted: the watch's cancel).
            if message is not None and step is not None:
                with contextlib.suppress(NotFound):
                    await state.update(owner, MESSAGE, message["id"], {
                        "status": "incomplete", "incomplete_at": p.now(),
                        "incomplete_details": {"reason": "run_cancelled"}, "content": [p.text_part("".join(parts))]})
                    await state.update(owner, STEP, step["id"], {"status": "cancelled", "cancelled_at": p.now()})
        except Exception as err:
            if not isinstance(err, PolyError):
                log.exception("a run failed")
                err = PolyError("internal server error")
            try:
                run = await self._save(owner, rid, {"status": "failed", "failed_at": p.now(),
                                                    "last_error": {"code": "server_error", "message": err.message}})
            except NotFound:  # its thread was deleted meanwhile
                return
            emit("thread.run.failed", run)

    async def _answered(self, owner: str, run: dict, message: dict, step: dict, text: str, used: dict, done: Done,
                        emit) -> None:
        """The run answered in text: its message and step complete, then the run (incomplete when cut)."""
        state = self._state()
        message = await state.update(owner, MESSAGE, message["id"], {
            "status": "completed", "content": [p.text_part(text)], "completed_at": p.now()})
        emit("thread.message.completed", message)
        step = await state.update(owner, STEP, step["id"], {"status": "completed", "completed_at": p.now(),
                                                            "usage": used})
        emit("thread.run.step.completed", step)
        cut = done.finish_reason == "length"
        run = await self._save(owner, run["id"], {
            "status": "incomplete" if cut else "completed", "completed_at": p.now(), "usage": used,
            "incomplete_details": {"reason": "max_completion_tokens"} if cut else None})
        emit(f"thread.run.{run['status']}", run)

    async def _message(self, owner: str, run: dict, emit) -> tuple[dict, dict]:
        """The assistant message the run writes, and its message_creation step."""
        state = self._state()
        message = await state.create(owner, MESSAGE, p.message_object(
            run["thread_id"], "assistant", "", run_id=run["id"], assistant_id=run["assistant_id"],
            status="in_progress"), parent=run["thread_id"])
        step = await state.create(owner, STEP, p.step_object(run, p.message_step(message["id"])), parent=run["id"])
        emit("thread.run.step.created", step)
        emit("thread.message.created", message)
        emit("thread.message.in_progress", message)
        return message, step

    async def _requires_action(self, owner: str, run: dict, calls: list[dict], used: dict, emit) -> None:
        state = self._state()
        wanted = [{"id": c["id"], "type": "function", "function": {"name": c["name"], "arguments": c["arguments"]}}
                  for c in calls]
        step = await state.create(owner, STEP, p.step_object(run, p.calls_step(wanted)), parent=run["id"])
        emit("thread.run.step.created", step)
        await state.update(owner, CONTEXT, context_id(run["id"]), {"step_id": step["id"], "status": WAITING})
        run = await self._save(owner, run["id"], {"status": "requires_action", "usage": used, "required_action": {
            "type": "submit_tool_outputs", "submit_tool_outputs": {"tool_calls": wanted}}})
        emit("thread.run.requires_action", run)


def _add_usage(before: dict | None, done: Done) -> dict:
    """A run's usage over its rounds (each tool round is another generation)."""
    cached = int(done.timings.get("cached_tokens") or 0)
    now = p.usage(done.prompt_tokens, done.completion_tokens, cached)
    if not before:
        return now
    return p.usage(before["prompt_tokens"] + now["prompt_tokens"], before["completion_tokens"] + now["completion_tokens"],
                   before["prompt_tokens_details"]["cached_tokens"] + cached)


async def _events(queue: asyncio.Queue) -> AsyncIterator[tuple[str, dict]]:
    while (item := await queue.get()) is not None:
        yield item


class Framer(streaming.Framer):
    """A run's stored events as they come; the run's own last event (completed, failed,
    requires_action, …) says how it ended, so the stream ends with ``done`` when they do."""

    family = OPENAI

    def event(self, item: tuple[str, dict]) -> list[bytes]:
        return [sse.json_event(*item)]

    async def exhausted(self) -> list[bytes]:
        return [b"event: done\ndata: [DONE]\n\n"]
