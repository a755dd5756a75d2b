"""What the HTTP layer asks of the task layer, as typed plain data that crosses
deployment handles: one ``TurnRequest`` per generation, its ``Overrides`` (every
key a request may set, named here once), and what a task or a model is
(``TaskInfo``, ``ModelInfo``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Overrides:
    """What one request changes of its task. ``None`` (or the empty default) keeps the
    task's own setting; the task's ``max_tokens`` is a ceiling, not a default to beat.

    A new sampler setting a client may send is one field here, one line in
    ``tasks.prompts.build_request``, and the fields of the families that take it.
    """

    max_tokens: int | None = None
    temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    min_p: float | None = None
    repeat_penalty: float | None = None
    repeat_last_n: int | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    seed: int | None = None
    # (token id, bias) pairs added to the logits: OpenAI's logit_bias.
    logit_bias: tuple[tuple[int, float], ...] = ()
    stop: tuple[str, ...] = ()
    # Generate max_tokens whatever the model's end-of-text says.
    ignore_eos: bool = False
    # Hugging Face's generate limits (min_length/max_length count the prompt too).
    min_tokens: int | None = None
    min_length: int | None = None
    max_length: int | None = None
    # A GBNF grammar the answer must follow (a response format or a schema, converted).
    grammar: str | None = None
    # Log-probabilities of the chosen tokens, with this many alternatives each.
    logprobs: int | None = None
    # Function tools in OpenAI's shape (they replace the task's), the choice among them,
    # and whether several calls may come at once.
    tools: tuple[dict[str, Any], ...] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    # Ollama's raw: the prompt as it is, without the task's prelude, prefix, postfix or recall.
    raw: bool = False
    # A reasoning model's thinking (tasks/reasoning.py): on or off, an effort level
    # (config.reasoning.EFFORT_BUDGETS), a budget of tokens; and the request field they
    # came from, which a refusal names (set by routes).
    thinking: bool | None = None
    reasoning_effort: str | None = None
    reasoning_budget: int | None = None
    reasoning_field: str | None = None
    # Set by routes, never by a client's body: the key that routes a chain's turns to the
    # model replica holding its prefix (a chat session, a Responses chain or conversation,
    # an Assistants thread, a cache id, a prompt_cache_key; always the owner's), and a
    # durable prompt-state id (`/stream`'s "cache").
    session: str | None = None
    cache_key: str | None = None

    @classmethod
    def of(cls, fields: Mapping[str, Any]) -> Overrides:
        """From a request body's fields (a key left out or None: not set; a list becomes a
        tuple). A key that is not a field here is a bug, and raises TypeError."""
        given: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in fields.items() if v is not None}
        if isinstance(given.get("stop"), str):
            given["stop"] = (given["stop"],)
        return cls(**given)


def chain_key(owner: str, kind: str, key: str | None) -> str | None:
    """The routing key of a chain of turns (``Overrides.session``), the owner's own: two
    credentials' equal keys are two chains, and no key reaches another's."""
    return None if key is None else f"{owner}/{kind}/{key}"


NO_OVERRIDES = Overrides()


@dataclass(frozen=True)
class TurnRequest:
    """One generation: a task (or a model used bare, by its name) and what to say to it.

    Exactly one of three shapes: a ``prompt`` wrapped by the task (prefix, postfix,
    recall, tools); chat ``messages`` rendered by a chat template; or a session's next
    turn (``context``: the tokens the model saw so far, ``()`` for a new session, whose
    ``Done.context`` is the next; or ``history``: the earlier (prompt, answer) turns,
    written out anew).
    """

    target: str
    prompt: str = ""
    messages: tuple[tuple[str, str], ...] | None = None
    context: tuple[int, ...] | None = None
    history: tuple[tuple[str, str], ...] | None = None
    overrides: Overrides = NO_OVERRIDES
    # Whose request it is (``Principal.owner``): recall reads, and store_prompts writes,
    # that owner's prompts.
    owner: str | None = None

    @property
    def is_turn(self) -> bool:
        return self.context is not None or self.history is not None


@dataclass(frozen=True)
class TaskInfo:
    model: str
    max_tokens: int
    context_overflow: str


@dataclass(frozen=True)
class ModelInfo:
    context_size: int
    source: str | None
