"""From a task, its model and a request's controls to the thinking the engine keeps apart.

Where the thinking is comes from the config (``reasoning``: markers, detected from the
chat template or the task's text on "auto"); how much of it there may be from the
request (on/off, an effort level, a budget) under the task's ``max_reasoning_tokens``.
Earlier assistant turns' thinking is dropped from the prompt, as the models' templates do.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from poly_ray.config import ModelConfig, TaskConfig
from poly_ray.config.reasoning import EFFORT_BUDGETS, ReasoningMarkers
from poly_ray.errors import BadRequest
from poly_ray.generation import GenerationRequest, Segment, Thinking

from .turn import Overrides

_DEFAULT = ReasoningMarkers()


@dataclass(frozen=True)
class ReasoningPlan:
    thinking: Thinking | None = None
    # The chat template's own switch, where it has one and the request said on or off.
    variables: dict[str, Any] = field(default_factory=dict)


NO_REASONING = ReasoningPlan()


def markers(task: TaskConfig, model: ModelConfig | None, template: str | None) -> ReasoningMarkers | None:
    """The task's thinking markers (None: the output is all answer)."""
    setting = _setting(task, model)
    if setting == "off":
        return None
    if isinstance(setting, ReasoningMarkers):
        return setting
    if template and _DEFAULT.start in template and _DEFAULT.end in template:
        return _DEFAULT
    if any(_DEFAULT.start in text for text in (task.prelude, task.prefix, task.postfix)):
        return _DEFAULT
    return None


def _setting(task: TaskConfig, model: ModelConfig | None):
    return task.reasoning if task.reasoning is not None else model.reasoning if model is not None else "auto"


def plan(task: TaskConfig, model: ModelConfig | None, o: Overrides, template: str | None = None) -> ReasoningPlan:
    """The request's thinking, or BadRequest naming the field: an effort that is not
    documented, a budget below 0 or beyond the context, thinking asked of a model that
    does not think."""
    context = model.context_size if model is not None else None
    on, budget = o.thinking, task.max_reasoning_tokens
    if o.reasoning_effort is not None:
        where = o.reasoning_field or "reasoning_effort"
        if not isinstance(o.reasoning_effort, str) or o.reasoning_effort not in EFFORT_BUDGETS:
            raise BadRequest(f"{where}: unknown reasoning effort {o.reasoning_effort!r} (one of "
                             f"{', '.join(EFFORT_BUDGETS)})", param=where)
        effort = EFFORT_BUDGETS[o.reasoning_effort]
        on = on if on is not None else effort > 0
        budget = effort if budget is None else min(budget, effort)
        if context is not None:
            budget = min(budget, context - 1)
    if o.reasoning_budget is not None:
        where = o.reasoning_field or "reasoning_budget"
        if o.reasoning_budget < 0:
            raise BadRequest(f"{where}: a thinking budget is 0 or more tokens, not {o.reasoning_budget}", param=where)
        if context is not None and o.reasoning_budget >= context:
            raise BadRequest(f"{where}: a thinking budget of {o.reasoning_budget} tokens does not fit the context of "
                             f"model '{task.model}' ({context} tokens)", param=where)
        budget = o.reasoning_budget if budget is None else min(budget, o.reasoning_budget)
    found = markers(task, model, template)
    if found is None:
        # Configured off, asking is an error; a model where "auto" found no markers takes it
        # as a hint (clients such as Claude Code ask every model to think).
        if on and _setting(task, model) == "off":
            where = o.reasoning_field or "thinking"
            raise BadRequest(f"{where}: model '{task.model}' does not think (its `reasoning` is off): leave "
                             "thinking off, or configure `reasoning`", param=where)
        return NO_REASONING
    if on is False:
        budget = 0
    variables = {"enable_thinking": on} if on is not None and template and "enable_thinking" in template else {}
    return ReasoningPlan(Thinking(found.start, found.end, budget), variables)


def drop_thinking(messages: list[tuple[str, str]], thinking: Thinking | None) -> list[tuple[str, str]]:
    """Earlier assistant turns without their thinking, as the models' templates write them."""
    if thinking is None:
        return messages
    block = re.compile(re.escape(thinking.start) + ".*?" + re.escape(thinking.end) + r"\s*", re.DOTALL)
    return [(role, block.sub("", content) if role == "assistant" else content) for role, content in messages]


def replayed(request: GenerationRequest, thought: str) -> tuple[Segment, ...]:
    """A generation's thinking as the model wrote it, closed, for a prompt that goes on
    after it (the bias-prompt flow)."""
    spec = request.thinking
    if spec is None or (not thought and spec.budget == 0):
        return ()
    opened = request.text.rstrip().endswith(spec.start)
    parts = (Segment("" if opened else spec.start, special=True), Segment(thought),
             Segment(spec.end + "\n\n", special=True))
    return tuple(p for p in parts if p.text)
