"""Plain data that crosses deployment handles: what to generate, and what comes
back; and the two ways every API family turns a stream of events into one answer."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace

from .errors import BadRequest, ModelError

# A request's own stop sequences: each is matched after every token in the decode
# thread, so their number and length are bounded on every route.
MAX_STOPS = 16
MAX_STOP_CHARS = 256


def check_stops(stops: list[str]) -> list[str]:
    """The stop sequences, or BadRequest naming the bound they pass."""
    if len(stops) > MAX_STOPS:
        raise BadRequest(f"stop: at most {MAX_STOPS} stop sequences, not {len(stops)}")
    for s in stops:
        if len(s) > MAX_STOP_CHARS:
            raise BadRequest(f"stop: a stop sequence has at most {MAX_STOP_CHARS} characters, not {len(s)}")
    return stops


@dataclass(frozen=True)
class Sampling:
    temperature: float = 0.8
    top_k: int = 40
    top_p: float = 0.95
    min_p: float = 0.05
    repeat_penalty: float = 1.1
    repeat_last_n: int = 64
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    mirostat: int = 0  # 0 off, 1 or 2: Mirostat v1/v2 (replaces top-k/top-p/min-p)
    mirostat_tau: float = 5.0
    mirostat_eta: float = 0.1
    mirostat_m: int = 100
    mirostat_n_vocab: int = 0  # 0: the model's vocabulary size
    typical_p: float = 1.0  # locally typical sampling; 1.0 is off
    min_keep: int = 1  # the tokens top-k, top-p, min-p and typical keep whatever their probability
    seed: int | None = None
    logit_bias: tuple[tuple[int, float], ...] = ()  # (token id, bias) added to the logits; -inf bans


@dataclass(frozen=True)
class Segment:
    """A piece of prompt. Only the operator's text (prelude, prefix, postfix) may
    spell special tokens such as ``<start_of_turn>``; a user's text never can."""

    text: str
    special: bool = False


@dataclass(frozen=True)
class Thinking:
    """Where a reasoning model's thinking is in its output, and how long it may be: the
    text between ``start`` and ``end`` is reasoning, apart from the answer. ``budget``:
    the reasoning tokens it may write before the engine writes ``end`` itself (None:
    up to max_tokens; 0: none at all). A grammar constrains only the answer."""

    start: str
    end: str
    budget: int | None = None


@dataclass(frozen=True)
class Speculation:
    """N-gram speculative decoding's setting (engine/speculative.py); ``draft_max`` 0: off."""

    ngram: int = 3
    draft_max: int = 8


# A task's ``speculative = false``: no drafting, whatever its model's setting.
NO_SPECULATION = Speculation(draft_max=0)


@dataclass(frozen=True)
class GenerationRequest:
    prompt: tuple[Segment, ...]
    max_tokens: int = 256
    stop: tuple[str, ...] = ()
    sampling: Sampling = field(default_factory=Sampling)
    # Generate max_tokens whatever the model's end-of-text says (benchmarks, tests).
    ignore_eos: bool = False
    # Hugging Face's generate limits: at least min_tokens new tokens before the model
    # may end, and min_length / max_length counting the prompt's tokens too.
    min_tokens: int = 0
    min_length: int | None = None
    max_length: int | None = None
    # A GBNF grammar (root rule "root") that every generated token must follow.
    grammar: str | None = None
    # Log-probabilities of the chosen tokens (None: off), with this many alternatives each.
    logprobs: int | None = None
    # A conversation so far, as the model saw it (BOS included): the prompt
    # continues it instead of starting afresh, and Done returns the new context.
    context: tuple[int, ...] | None = None
    # The key of a chain of turns (a chat session, a Responses chain, a thread, ...): its
    # generations are routed to the model replica that holds its prefix.
    session: str | None = None
    # A durable prompt-state id (`/stream`'s "cache", a task prelude): the sequence's
    # KV cells are saved to disk under it and restored from there after a restart.
    cache_key: str | None = None
    # Whose prompt it is (``Principal.owner``): cells another owner left in a slot are reused
    # only for the prompt's operator-written start (kv_slots.place), so ``cached_tokens`` tells
    # no caller what another one asked.
    owner: str | None = None
    # A reasoning model's thinking, kept apart from the answer (None: the text as it comes).
    thinking: Thinking | None = None
    # The task's speculative decoding (NO_SPECULATION: off); None: the model's own setting.
    speculation: Speculation | None = None

    @property
    def text(self) -> str:
        return "".join(s.text for s in self.prompt)


@dataclass(frozen=True)
class Started:
    """First event of every stream: the prompt was accepted (so errors before it are 4xx/5xx)."""

    prompt_tokens: int


@dataclass(frozen=True)
class TokenLogprob:
    token: str
    logprob: float
    top: tuple[tuple[str, float], ...] = ()  # the most likely tokens at this step


@dataclass(frozen=True)
class Chunk:
    text: str
    tokens: int  # generated tokens this chunk covers
    logprobs: tuple[TokenLogprob, ...] = ()  # per token, when the request asked for them


@dataclass(frozen=True)
class Reasoning:
    """A piece of a reasoning model's thinking: never part of the answer's text."""

    text: str
    tokens: int  # generated tokens this piece covers


@dataclass(frozen=True)
class ToolCallDelta:
    """A piece of a tool call: its first carries the call's id and name, the
    following ones fragments of its arguments' JSON text (they concatenate)."""

    index: int
    id: str = ""
    name: str = ""
    arguments: str = ""


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # JSON text


@dataclass(frozen=True)
class Done:
    finish_reason: str  # "stop" (end of text or a stop sequence), "length", or "tool_calls"
    prompt_tokens: int
    completion_tokens: int
    timings: dict = field(default_factory=dict)
    context: tuple[int, ...] | None = None  # prompt + generated tokens, when the request had a context
    stop_sequence: str | None = None  # the stop sequence that ended the text, if one did
    reasoning_tokens: int = 0  # of completion_tokens, those the model thought with
    reasoning: str = ""  # the whole thinking, set by gather_calls (streams carry it as Reasoning events)

    @property
    def usage(self) -> dict:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
            **({"completion_tokens_details": {"reasoning_tokens": self.reasoning_tokens}}
               if self.reasoning_tokens else {}),
        }

    def to_dict(self) -> dict:
        """What clients see (the context stays on the server)."""
        return {"finish_reason": self.finish_reason, "usage": self.usage, "timings": self.timings}


Event = Started | Chunk | Reasoning | ToolCallDelta | Done


async def gather(events: AsyncIterator[Event]) -> tuple[str, list[TokenLogprob], Done]:
    """A whole generation from its stream: its text, log-probabilities and Done."""
    text, logprobs, _, done = await gather_calls(events)
    return text, logprobs, done


async def gather_calls(events: AsyncIterator[Event]) -> tuple[str, list[TokenLogprob], list[ToolCall], Done]:
    """The same, with the tool calls the stream's deltas make up (and ``Done.reasoning``
    the thinking its Reasoning events make up)."""
    parts: list[str] = []
    thought: list[str] = []
    logprobs: list[TokenLogprob] = []
    calls: dict[int, list[str]] = {}  # index → [id, name, arguments]
    async for event in events:
        if isinstance(event, Chunk):
            parts.append(event.text)
            logprobs += event.logprobs
        elif isinstance(event, Reasoning):
            thought.append(event.text)
        elif isinstance(event, ToolCallDelta):
            call = calls.setdefault(event.index, ["", "", ""])
            call[0] = call[0] or event.id
            call[1] = call[1] or event.name
            call[2] += event.arguments
        elif isinstance(event, Done):
            if thought:
                event = replace(event, reasoning="".join(thought))
            return "".join(parts), logprobs, [ToolCall(*calls[i]) for i in sorted(calls)], event
    raise ModelError("the model's stream ended before it was done")


async def collect(events: AsyncIterator[Event]) -> dict:
    """A whole completion: ``{"text", "finish_reason", "usage", "timings"}``, and
    ``tool_calls`` (``{"id", "name", "arguments"}``, the arguments as an object) when
    a task's tools were called; a call cut by max_tokens is left out."""
    text, _, calls, done = await gather_calls(events)
    answer = {"text": text, **done.to_dict()}
    if done.reasoning:
        answer["reasoning"] = done.reasoning
    whole = []
    for c in calls:
        try:
            whole.append({"id": c.id, "name": c.name, "arguments": json.loads(c.arguments)})
        except json.JSONDecodeError:
            pass
    if whole:
        answer["tool_calls"] = whole
    return answer
