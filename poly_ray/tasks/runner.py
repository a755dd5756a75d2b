"""Running tasks: from a task name and a prompt to a stream of model events.

Plain Python over injected model clients: the orchestrator deployment gives it
clients that call model deployments through handles; tests give it anything
with the same methods (a LlamaModel instance works directly).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Protocol

from poly_ray import chat_template, grammars, tools
from poly_ray.config import ModelConfig, TaskConfig
from poly_ray.errors import BadRequest, ConfigError, NotFound
from poly_ray.generation import Chunk, Done, Event, GenerationRequest, Segment, Started, collect

from .observe import Sink, Tally, observe
from .prompts import assemble, bare_model_task, build_request, recalled_text, render_chat, replay

log = logging.getLogger(__name__)

# How long readiness and stats wait for each model's answer.
READY_TIMEOUT_S = 1.0


class ModelClient(Protocol):
    def generate(self, request: GenerationRequest) -> AsyncIterator[Event]: ...
    async def embed(self, texts: list[str]) -> list[list[float]]: ...
    async def tokenize(self, text: str) -> list[dict]: ...
    # The GGUF's chat template with its BOS/EOS text ({"template", "bos", "eos"}), or None.
    async def chat_template(self) -> dict | None: ...
    async def stats(self) -> dict: ...


class MemoryClient(Protocol):
    async def recall(self, memory: str, prompt: str, n: int) -> list[dict]: ...
    async def remember(self, memory: str, text: str) -> dict: ...
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
        # Also what the HTTP layer's memory routes call, when this runner is its backend.
        self.memories = memories
        self._storing: set[asyncio.Task] = set()  # prompts being stored, kept from the GC
        self._templates: dict[str, dict | None] = {}  # per model, asked once
        self._tally = Tally()
        self._sinks = (self._tally, *sinks)
        self._log_prompts = log_prompts

    def task(self, name: str) -> TaskConfig:
        try:
            return self._tasks[name]
        except KeyError:
            raise NotFound(f"task '{name}' does not exist") from None

    def client(self, model: str) -> ModelClient:
        try:
            return self._clients[model]
        except KeyError:
            raise NotFound(f"model '{model}' does not exist") from None

    def _observed(self, target: str, task: TaskConfig, prompt, events: AsyncIterator[Event]) -> AsyncIterator[Event]:
        """``events`` with their outcome counted, measured and logged (the prompt only with log_prompts)."""
        logged = (prompt if isinstance(prompt, str) else json.dumps(prompt)) if self._log_prompts else None
        return observe(events, task=target, model=task.model, sinks=self._sinks, prompt=logged)

    async def stream(self, task: str, prompt: str, overrides: dict) -> AsyncIterator[Event]:
        cfg = self.task(task)
        async for event in self._observed(task, cfg, prompt, self._stream(task, cfg, prompt, overrides)):
            yield event

    async def _stream(self, task: str, cfg: TaskConfig, prompt: str, overrides: dict) -> AsyncIterator[Event]:
        request = build_request(task, cfg, prompt, overrides, grammar=self._grammars.get(task))
        if recalled := await self._recall(cfg, prompt, overrides):
            request = replace(request, prompt=assemble(cfg, prompt, recalled=recalled))
        plan, grammar = await self._tools(cfg, overrides)
        if plan.active:  # the task's tools: their description goes first, the answer is the envelope
            request = replace(request, prompt=(Segment(plan.instructions() + "\n\n"), *request.prompt),
                              grammar=grammar, stop=tuple(cfg.private_tokens))
            events = tools.decode(self.client(cfg.model).generate(request), plan)
        else:
            events = self._run(cfg, request)
        async for event in self._remembering(cfg, prompt, events, overrides):
            yield event

    async def complete(self, task: str, prompt: str, overrides: dict) -> dict:
        return await collect(self.stream(task, prompt, overrides))

    async def stream_turn(
        self,
        task: str,
        context: tuple[int, ...] | None,
        prompt: str,
        overrides: dict,
        history: list[tuple[str, str]] | None = None,
    ) -> AsyncIterator[Event]:
        """One turn of a chat session. ``context`` is what the model saw so far (None:
        a new session, which starts with the prelude); ``Done.context`` is the next one.
        With ``history`` (earlier turns' prompts and answers) instead of a context, the
        session is written out anew: the prelude, those turns, then this one."""
        cfg = self.task(task)
        async for event in self._observed(task, cfg, prompt, self._turn(task, cfg, context, prompt, overrides, history)):
            yield event

    async def _turn(self, task: str, cfg: TaskConfig, context, prompt: str, overrides: dict, history) -> AsyncIterator[Event]:
        recalled = await self._recall(cfg, prompt, overrides)
        turn = assemble(cfg, prompt, first_turn=context is None and history is None, recalled=recalled)
        if history is not None:
            turn = (*replay(cfg, history), *turn)
        request = build_request(task, cfg, turn, overrides, user_text=prompt, grammar=self._grammars.get(task))
        async for event in self._remembering(cfg, prompt, self._run(cfg, replace(request, context=context or ())), overrides):
            yield event

    async def _run(self, task: TaskConfig, request: GenerationRequest) -> AsyncIterator[Event]:
        """Generate, with Poly's bias-prompt flow when the task has one: the free
        answer first (not returned), then the bias prompt, then the biased answer."""
        client = self.client(task.model)
        if task.bias_prompt is None or request.grammar is None:
            async for event in client.generate(request):
                yield event
            return
        free: list[str] = []
        async for event in client.generate(replace(request, grammar=None)):
            if isinstance(event, Chunk):
                free.append(event.text)
            elif not isinstance(event, Done):
                yield event  # Started: the prompt was accepted
        biased = replace(
            request,
            prompt=(*request.prompt, Segment("".join(free)), Segment(task.bias_prompt, special=True)),
            max_tokens=task.max_tokens,
        )
        async for event in client.generate(biased):
            if not isinstance(event, Started):
                yield event

    async def stream_target(
        self, target: str, prompt: str | None, messages: list[tuple[str, str]] | None, overrides: dict
    ) -> AsyncIterator[Event]:
        """Generate for a task or, by its name, a bare model: from a prompt, or
        from chat messages (``(role, content)`` pairs)."""
        if target in self._tasks:
            task = self._tasks[target]
        elif target in self._models:
            task = bare_model_task(target, self._models[target].context_size, chat=messages is not None)  # no biaser, no _grammars entry
        else:
            raise NotFound(f"model '{target}' does not exist (neither a task nor a model)")
        events = self._target(target, task, prompt, messages, overrides)
        async for event in self._observed(target, task, prompt if messages is None else messages, events):
            yield event

    async def _target(self, target: str, task: TaskConfig, prompt, messages, overrides: dict) -> AsyncIterator[Event]:
        if messages is None and overrides.get("raw"):
            # Ollama's raw: the prompt as it is (still as text: it spells no special token), without
            # the task's prelude, prefix, postfix, recall or bias prompt; its limits and stop sequences hold.
            request = build_request(target, task, (Segment(prompt),), overrides, user_text=prompt,
                                    grammar=self._grammars.get(target))
            async for event in self._remembering(task, prompt, self.client(task.model).generate(request), overrides):
                yield event
            return
        if messages is None:
            question = prompt
            request = build_request(target, task, prompt, overrides, grammar=self._grammars.get(target))
            if recalled := await self._recall(task, prompt, overrides):
                request = replace(request, prompt=assemble(task, prompt, recalled=recalled))
        else:
            question = next((content for role, content in reversed(messages) if role == "user"), "")
            recalled = await self._recall(task, question, overrides) if question else ""
            plan, grammar = await self._tools(task, overrides)
            if plan.active:
                messages = tools.with_instructions(plan, messages)
                overrides = {**overrides, "grammar": grammar}
            said = "\n".join(content for _, content in messages)
            request = build_request(target, task, await self._render(task, messages, recalled), overrides, user_text=said,
                                    grammar=self._grammars.get(target))
            if plan.active:
                # The grammar ends the envelope; a stop sequence inside its strings would cut it.
                request = replace(request, stop=tuple(task.private_tokens))
                events = tools.decode(self.client(task.model).generate(request), plan)
                async for event in self._remembering(task, question, events, overrides):
                    yield event
                return
        async for event in self._remembering(task, question, self._run(task, request), overrides):
            yield event

    async def _render(self, task: TaskConfig, messages: list[tuple[str, str]], recalled: str) -> tuple[Segment, ...]:
        """Messages as the model sees them: through the task's chat template, else the
        model's own (GGUF), else prefix/postfix around each user message. Recalled
        memory text goes in as a system message."""
        model = await self._model_template(task.model)
        template = task.chat_template or (model or {}).get("template")
        if template is None:
            return render_chat(task, messages, recalled=recalled)
        if recalled:
            messages = [("system", recalled.strip()), *messages]
        segments = chat_template.render(template, messages, bos=(model or {}).get("bos", ""), eos=(model or {}).get("eos", ""))
        return (Segment(task.prelude, special=True), *segments) if task.prelude else segments

    async def _model_template(self, model: str) -> dict | None:
        if model not in self._templates:
            ask = getattr(self.client(model), "chat_template", None)
            self._templates[model] = await ask() if ask else None
        return self._templates[model]

    async def _tools(self, task: TaskConfig, overrides: dict) -> tuple[tools.Plan, str | None]:
        """The request's tool plan and its envelope's grammar, held to the config's
        schema_limits; converted on a thread, cut off after schema_limits.timeout_s."""
        caps = self._caps
        if not (overrides.get("tools") or task.tools):
            return _tool_plan(task, overrides, caps), None

        def work():
            plan = _tool_plan(task, overrides, caps)
            return plan, plan.grammar() if plan.active else None

        try:
            return await asyncio.wait_for(asyncio.to_thread(work), caps.timeout_s)
        except TimeoutError:
            raise grammars.SchemaError(f"the tools' schemas took longer than {caps.timeout_s} s to convert "
                                       "(schema_limits.timeout_s)") from None

    async def _recall(self, task: TaskConfig, prompt: str, overrides: dict) -> str:
        """The text recalled from the task's memory for this prompt ("" without one).
        Of the stored prompts, only the caller's (the ``owner`` the ingress sets)."""
        m = task.memorization
        if m is None or self.memories is None or not m.retrieve:
            return ""
        return recalled_text(await self.memories.recall(m.memory, prompt, m.retrieve, owner=overrides.get("owner")))

    async def _remembering(
        self, task: TaskConfig, prompt: str, events: AsyncIterator[Event], overrides: dict
    ) -> AsyncIterator[Event]:
        """``events``; with store_prompts, the prompt is stored (as the caller's) once the
        model has accepted it (a refused prompt is not), beside the generation."""
        m = task.memorization
        remember = m is not None and m.store_prompts and self.memories is not None and prompt.strip()
        async for event in events:
            if remember and isinstance(event, Started):
                stored = asyncio.create_task(self.memories.remember(m.memory, prompt, owner=overrides.get("owner")))
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

    async def tasks(self) -> dict[str, dict]:
        return {
            name: {"model": t.model, "max_tokens": t.max_tokens, "context_overflow": t.context_overflow}
            for name, t in self._tasks.items()
        }

    async def models(self) -> dict[str, dict]:
        return {name: {"context_size": m.context_size, "source": m.source} for name, m in self._models.items()}

    async def stats_tasks(self) -> dict[str, dict]:
        """The per-task counts of this runner alone."""
        return self._tally.snapshot()

    async def stats(self) -> dict:
        """Poly's ``/v1/stats``: counts per task (of this runner) and each model's engine
        stats (None for a model that does not answer within READY_TIMEOUT_S)."""
        names = list(self._clients)
        answers = await asyncio.gather(*(_within(self._clients[n].stats(), READY_TIMEOUT_S) for n in names))
        return {"tasks": self._tally.snapshot(), "models": dict(zip(names, answers))}

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


def _tool_plan(task: TaskConfig, overrides: dict, caps: grammars.Caps) -> tools.Plan:
    """The request's tools, else the task's; the request's tool_choice, else the task's."""
    plan = tools.plan(overrides.get("tools") or task.tools, overrides.get("tool_choice", task.tool_choice),
                      overrides.get("parallel_tool_calls"), caps)
    if plan.active and "grammar" in overrides:
        raise BadRequest("a response format (response_format, format) cannot be combined with tools "
                         "unless tool_choice is 'none'")
    if plan.active and overrides.get("logprobs") is not None:
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
