"""Running tasks: from a task name and a prompt to a stream of model events.

Plain Python over injected model clients: the orchestrator deployment gives it
clients that call model deployments through handles; tests give it anything
with the same methods (a LlamaModel instance works directly).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import replace
from typing import Any, Protocol

from poly_ray import chat_template, grammars, tools
from poly_ray.config import ModelConfig, TaskConfig
from poly_ray.errors import BadRequest, ConfigError, NotFound
from poly_ray.generation import Chunk, Done, Event, GenerationRequest, Reasoning, Segment, Started, collect

from . import reasoning
from .observe import Sink, Tally, observe
from .prompts import assemble, bare_model_task, build_request, recalled_text, render_chat, replay
from .turn import ModelInfo, Overrides, TaskInfo, TurnRequest

log = logging.getLogger(__name__)

# How long readiness and stats wait for each model's answer.
READY_TIMEOUT_S = 1.0


class ModelClient(Protocol):
    def generate(self, request: GenerationRequest) -> AsyncIterator[Event]: ...
    async def embed(self, texts: list[str]) -> list[list[float]]: ...
    async def tokenize(self, text: str) -> list[dict]: ...
    async def count_tokens(self, texts: list[str]) -> int: ...
    # The GGUF's chat template with its BOS/EOS text ({"template", "bos", "eos"}), or None.
    async def chat_template(self) -> dict | None: ...
    async def stats(self) -> dict: ...


class MemoryClient(Protocol):
    """What the runner asks of the memories (``api.backend.MemoryBackend`` is the whole surface)."""

    async def recall(self, memory: str, prompt: str, n: int, mode: str | None = None, *,
                     owner: str | None = None) -> list[dict]: ...
    async def remember(self, memory: str, text: str, *, owner: str | None = None) -> dict: ...
    async def names(self) -> dict: ...


class TaskRunner:
    def __init__(
        self,
        tasks: dict[str, TaskConfig],
        models: dict[str, ModelConfig],
        clients: dict[str, ModelClient],
        memories: MemoryClient | None = None,
        *,
        sinks: tuple[Sink, ...] = (),
        log_prompts: bool = False,
        caps: grammars.Caps = grammars.DEFAULT_CAPS,
    ):
        """``caps``: the config's schema_limits (``Config.schema_limits.caps()``), which the
        tasks' biasers and tools and the requests' tools are held to."""
        self._caps = caps
        self._tasks = tasks
        self._grammars = _biaser_grammars(tasks, caps)
        self._models = models
        self._clients = clients
        # When this runner is the HTTP layer's backend itself (one process, tests), what its
        # memory and stateful routes call (api.backend.Backend); the graph sets neither here.
        self.memories = memories
        self.state: Any = None
        self._storing: set[asyncio.Task] = set()  # prompts being stored, kept from the GC
        self._templates: dict[str, dict | None] = {}  # per model, asked once
        self.tally = Tally()
        self._sinks = (self.tally, *sinks)
        self._log_prompts = log_prompts

    def client(self, model: str) -> ModelClient:
        try:
            return self._clients[model]
        except KeyError:
            raise NotFound(f"model '{model}' does not exist") from None

    def _observed(self, target: str, task: TaskConfig, prompt, events: AsyncIterator[Event]) -> AsyncIterator[Event]:
        """``events`` with their outcome counted, measured and logged (the prompt only with log_prompts)."""
        logged = (prompt if isinstance(prompt, str) else json.dumps(prompt)) if self._log_prompts else None
        return observe(events, task=target, model=task.model, sinks=self._sinks, prompt=logged)

    async def stream(self, req: TurnRequest) -> AsyncGenerator[Event, None]:
        """The events of one generation: ``Started``, then ``Chunk`` and ``ToolCallDelta``
        events, then ``Done``; a refusal (``PolyError``) is raised before ``Started``."""
        task = self._resolve(req.target, chat=req.messages is not None)
        said = req.prompt if req.messages is None else [list(m) for m in req.messages]
        async for event in self._observed(req.target, task, said, self._generate(req, task)):
            yield event

    async def complete(self, req: TurnRequest) -> dict:
        return await collect(self.stream(req))

    def _resolve(self, target: str, *, chat: bool) -> TaskConfig:
        """A task, or a model used bare by its name."""
        if target in self._tasks:
            return self._tasks[target]
        if target in self._models:
            return bare_model_task(target, self._models[target].context_size, chat=chat)
        raise NotFound(f"model '{target}' does not exist (neither a task nor a model)")

    def _generate(self, req: TurnRequest, task: TaskConfig) -> AsyncIterator[Event]:
        if req.messages is not None:
            return self._chat(req, task)
        if req.is_turn:
            return self._turn(req, task)
        return self._prompt(req, task)

    async def _prompt(self, req: TurnRequest, task: TaskConfig) -> AsyncIterator[Event]:
        """A prompt wrapped by the task: recall, tools (their description first, the answer
        their envelope) and the bias-prompt flow; with Ollama's raw, the prompt as it is (still
        as text: it spells no special token), without the task's prelude, prefix, postfix,
        recall or bias prompt, while its limits and stop sequences hold."""
        o, prompt, biaser = req.overrides, req.prompt, self._grammars.get(req.target)
        if o.raw:
            request = build_request(req.target, task, (Segment(prompt),), o, user_text=prompt, grammar=biaser,
                                    owner=req.owner)
            events = self.client(task.model).generate(replace(request, thinking=self._thinking(task, o)))
        else:
            request = build_request(req.target, task, prompt, o, grammar=biaser, owner=req.owner)
            if recalled := await self._recall(task, prompt, req.owner):
                request = replace(request, prompt=assemble(task, prompt, recalled=recalled))
            plan, grammar = await self._tools(task, o)
            if plan.active:  # the tools' description first, the answer their envelope
                request = replace(request, prompt=(Segment(plan.instructions() + "\n\n"), *request.prompt),
                                  grammar=grammar)
            events = self._answer(task, replace(request, thinking=self._thinking(task, o)), plan)
        async for event in self._remembering(task, prompt, events, req.owner):
            yield event

    async def _turn(self, req: TurnRequest, task: TaskConfig) -> AsyncIterator[Event]:
        """One turn of a chat session. ``context`` is what the model saw so far (``()``: a
        new session, which starts with the prelude); ``Done.context`` is the next one.
        With ``history`` (earlier turns' prompts and answers) instead of a context, the
        session is written out anew: the prelude, those turns, then this one."""
        prompt = req.prompt
        recalled = await self._recall(task, prompt, req.owner)
        first = not req.context and req.history is None
        turn = assemble(task, prompt, first_turn=first, recalled=recalled)
        if req.history is not None:
            turn = (*replay(task, list(req.history)), *turn)
        request = build_request(req.target, task, turn, req.overrides, user_text=prompt,
                                grammar=self._grammars.get(req.target), owner=req.owner)
        events = self._run(task, replace(request, context=req.context or (),
                                         thinking=self._thinking(task, req.overrides)))
        async for event in self._remembering(task, prompt, events, req.owner):
            yield event

    async def _chat(self, req: TurnRequest, task: TaskConfig) -> AsyncIterator[Event]:
        """Chat messages (``(role, content)`` pairs) through the chat template, with recall
        for the last user message and the tools in the system turn."""
        messages, o = list(req.messages or ()), req.overrides  # _generate sends only chats here
        model = await self._model_template(task.model)
        think = reasoning.plan(task, self._models.get(task.model), o,
                               task.chat_template or (model or {}).get("template"))
        messages = reasoning.drop_thinking(messages, think.thinking)
        question = next((content for role, content in reversed(messages) if role == "user"), "")
        recalled = await self._recall(task, question, req.owner) if question else ""
        plan, grammar = await self._tools(task, o)
        if plan.active:
            messages = tools.with_instructions(plan, messages)
            o = replace(o, grammar=grammar)
        said = "\n".join(content for _, content in messages)
        request = build_request(req.target, task, await self._render(task, messages, recalled, think.variables), o,
                                user_text=said, grammar=self._grammars.get(req.target), owner=req.owner)
        request = replace(request, thinking=think.thinking)
        async for event in self._remembering(task, question, self._answer(task, request, plan), req.owner):
            yield event

    def _answer(self, task: TaskConfig, request: GenerationRequest, plan: tools.Plan) -> AsyncIterator[Event]:
        """With active tools, the envelope decoded into text and calls (the grammar ends the
        envelope, and a stop sequence inside its strings would cut it: only the private
        tokens stop it); else the task's own flow."""
        if plan.active:
            request = replace(request, stop=tuple(task.private_tokens))
            return tools.decode(self.client(task.model).generate(request), plan)
        return self._run(task, request)

    async def _run(self, task: TaskConfig, request: GenerationRequest) -> AsyncIterator[Event]:
        """Generate, with Poly's bias-prompt flow when the task has one: the free
        answer first (not returned), then the bias prompt, then the biased answer."""
        client = self.client(task.model)
        if task.bias_prompt is None or request.grammar is None:
            async for event in client.generate(request):
                yield event
            return
        free: list[str] = []
        thought, thinking = 0, ""
        async for event in client.generate(replace(request, grammar=None)):
            if isinstance(event, Chunk):
                free.append(event.text)
            elif isinstance(event, Done):
                thought = event.reasoning_tokens
            else:
                if isinstance(event, Reasoning):
                    thinking += event.text
                yield event  # Started (the prompt was accepted), and the thinking
        biased = replace(  # the free answer as the model wrote it, thinking closed: no thinking again
            request,
            thinking=None,
            prompt=(*request.prompt, *reasoning.replayed(request, thinking), Segment("".join(free)),
                    Segment(task.bias_prompt, special=True)),
            max_tokens=task.max_tokens,
        )
        async for event in client.generate(biased):
            if isinstance(event, Done) and thought:  # the free answer's thinking is the answer's too
                event = replace(event, reasoning_tokens=event.reasoning_tokens + thought)
            if not isinstance(event, Started):
                yield event

    async def _render(self, task: TaskConfig, messages: list[tuple[str, str]], recalled: str,
                      variables: dict | None = None) -> tuple[Segment, ...]:
        """Messages as the model sees them: through the task's chat template, else the
        model's own (GGUF), else prefix/postfix around each user message. Recalled
        memory text goes in as a system message."""
        model = await self._model_template(task.model)
        template = task.chat_template or (model or {}).get("template")
        if template is None:
            return render_chat(task, messages, recalled=recalled)
        if recalled:
            messages = [("system", recalled.strip()), *messages]
        segments = chat_template.render(template, messages, bos=(model or {}).get("bos", ""),
                                        eos=(model or {}).get("eos", ""), variables=variables)
        return (Segment(task.prelude, special=True), *segments) if task.prelude else segments

    def _thinking(self, task: TaskConfig, overrides: Overrides):
        """The thinking of a prompt that no chat template writes (refusals raised here, before Started)."""
        return reasoning.plan(task, self._models.get(task.model), overrides).thinking

    async def _model_template(self, model: str) -> dict | None:
        if model not in self._templates:
            ask = getattr(self.client(model), "chat_template", None)
            self._templates[model] = await ask() if ask else None
        return self._templates[model]

    async def _tools(self, task: TaskConfig, overrides: Overrides) -> tuple[tools.Plan, str | None]:
        """The request's tool plan and its envelope's grammar, held to the config's
        schema_limits; converted on a thread, cut off after schema_limits.timeout_s."""
        caps = self._caps
        if not (overrides.tools or task.tools) or overrides.tool_choice == "none":
            return _tool_plan(task, overrides, caps), None

        def work():
            plan = _tool_plan(task, overrides, caps)
            return plan, plan.grammar() if plan.active else None

        try:
            return await asyncio.wait_for(asyncio.to_thread(work), caps.timeout_s)
        except TimeoutError:
            raise grammars.SchemaError(f"the tools' schemas took longer than {caps.timeout_s} s to convert "
                                       "(schema_limits.timeout_s)") from None

    async def _recall(self, task: TaskConfig, prompt: str, owner: str | None) -> str:
        """The text recalled from the task's memory for this prompt ("" without one).
        Of the stored prompts, only the caller's."""
        m = task.memorization
        if m is None or self.memories is None or not m.retrieve:
            return ""
        return recalled_text(await self.memories.recall(m.memory, prompt, m.retrieve, owner=owner))

    async def _remembering(
        self, task: TaskConfig, prompt: str, events: AsyncIterator[Event], owner: str | None
    ) -> AsyncIterator[Event]:
        """``events``; with store_prompts, the prompt is stored (as the caller's) once the
        model has accepted it (a refused prompt is not), beside the generation."""
        m, memories = task.memorization, self.memories
        memory = m.memory if m is not None and m.store_prompts and prompt.strip() else None
        async for event in events:
            if memory is not None and memories is not None and isinstance(event, Started):
                stored = asyncio.create_task(memories.remember(memory, prompt, owner=owner))
                self._storing.add(stored)
                stored.add_done_callback(self._stored)
            yield event

    def _stored(self, task: asyncio.Task) -> None:
        self._storing.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("storing a prompt failed: %s", task.exception())

    async def embed(self, model: str, texts: list[str]) -> list[list[float]]:
        return await self.client(model).embed(texts)

    async def tokenize(self, model: str, text: str) -> list[dict]:
        return await self.client(model).tokenize(text)

    async def count_tokens(self, model: str, texts: list[str]) -> int:
        return await self.client(model).count_tokens(texts)

    async def tasks(self) -> dict[str, TaskInfo]:
        return {name: TaskInfo(t.model, t.max_tokens, t.context_overflow) for name, t in self._tasks.items()}

    async def models(self) -> dict[str, ModelInfo]:
        return {name: ModelInfo(m.context_size, m.source) for name, m in self._models.items()}

    async def stats(self) -> dict:
        """Poly's ``/v1/stats``: counts per task (of this runner) and each model's engine
        stats (None for a model that does not answer within READY_TIMEOUT_S)."""
        names = list(self._clients)
        answers = await asyncio.gather(*(_within(self._clients[n].stats(), READY_TIMEOUT_S) for n in names))
        return {"tasks": self.tally.snapshot(), "models": dict(zip(names, answers))}

    async def ready(self) -> dict[str, bool]:
        """Whether each model (and the memories) answers within READY_TIMEOUT_S."""
        checks = {f"model {n}": c.stats() for n, c in self._clients.items()}
        if self.memories is not None:
            checks["memories"] = self.memories.names()
        answers = await asyncio.gather(*(_within(c, READY_TIMEOUT_S) for c in checks.values()))
        return {name: answer is not None for name, answer in zip(checks, answers)}


def _biaser_grammars(tasks: dict[str, TaskConfig], caps: grammars.Caps) -> dict[str, str]:
    """Each biased task's grammar, converted once. Start-up (config.loading) has checked
    them against the same caps, so a failure here means the runner was given others."""
    converted = {}
    for name, task in tasks.items():
        try:
            if (grammar := task.biaser_grammar(caps)) is not None:
                converted[name] = grammar
        except grammars.SchemaError as e:
            raise ConfigError(f"tasks.{name}.{e.message}") from None
    return converted


def _tool_plan(task: TaskConfig, overrides: Overrides, caps: grammars.Caps) -> tools.Plan:
    """The request's tools, else the task's; the request's tool_choice, else the task's."""
    choice = overrides.tool_choice if overrides.tool_choice is not None else task.tool_choice
    plan = tools.plan(list(overrides.tools or ()) or task.tools, choice, overrides.parallel_tool_calls, caps)
    if plan.active and overrides.grammar is not None:
        raise BadRequest("a response format (response_format, format) cannot be combined with tools "
                         "unless tool_choice is 'none'")
    if plan.active and overrides.logprobs is not None:
        raise BadRequest("logprobs: not supported with tools")
    return plan


async def _within(call, timeout: float):
    """The call's answer, or None when it fails or takes longer than ``timeout`` (a
    model deployment answers once a replica has loaded it)."""
    try:
        return await asyncio.wait_for(call, timeout)
    except Exception as e:
        log.info("no answer within %s s: %s", timeout, e or type(e).__name__)
        return None
