"""``reasoning``: where a reasoning model's thinking is in its output (per model, a task may
override it), and the documented mapping of effort levels to thinking budgets."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .base import Strict

# Effort levels a request may name (OpenAI's reasoning_effort, Ollama's think, Responses'
# reasoning.effort): the most tokens the model may think before the engine closes the
# thinking, never more than the context holds. "none" switches thinking off.
EFFORT_BUDGETS: dict[str, int] = {"none": 0, "minimal": 256, "low": 1024, "medium": 4096, "high": 16384,
                                  "xhigh": 32768}


class ReasoningMarkers(Strict):
    """The text that opens and closes a model's thinking; what lies between is reasoning,
    shown apart from the answer (``message.reasoning_content``, ``message.thinking``,
    Anthropic's thinking blocks, ...) and never constrained by a grammar."""

    start: str = Field("<think>", min_length=1, max_length=64, description="Opens the thinking.")
    end: str = Field("</think>", min_length=1, max_length=64, description="Closes the thinking.")


Reasoning = Literal["auto", "off"] | ReasoningMarkers

REASONING_DOC = (
    '"auto": `<think>` … `</think>` when the chat template (the task\'s or the GGUF\'s) writes both, or the task\'s '
    "prelude, prefix or postfix writes `<think>`; the template's `enable_thinking` switch follows the request. "
    '`{ start = "...", end = "..." }`: those markers. "off": the output is the answer as it comes, and a request '
    "that asks for thinking is refused (400).")
