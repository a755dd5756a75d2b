"""From a task and a user's request to what the model generates."""

from __future__ import annotations

import hashlib
from typing import TypeVar

from poly_ray.config import TaskConfig
from poly_ray.errors import BadRequest
from poly_ray.generation import NO_SPECULATION, GenerationRequest, Sampling, Segment, Speculation, check_stops

from .turn import NO_OVERRIDES, Overrides

T = TypeVar("T")


def assemble(task: TaskConfig, prompt: str, *, first_turn: bool = True, recalled: str = "") -> tuple[Segment, ...]:
    """What the model sees for one turn: the prelude once per session, then the
    chunks recalled from the task's memory, then prefix + prompt + postfix.

    The task's own text may hold special tokens; the user's prompt and recalled
    documents are kept apart so that they are tokenized as plain text.
    """
    prelude = task.prelude if first_turn else ""
    head: tuple[Segment, ...]
    if recalled:
        head = (Segment(prelude, special=True), Segment(recalled), Segment(task.prefix, special=True))
    else:  # one piece, tokenized as before memories existed
        head = (Segment(prelude + task.prefix, special=True),)
    parts = (*head, Segment(prompt), Segment(task.postfix, special=True))
    return tuple(p for p in parts if p.text)


def replay(task: TaskConfig, history: list[tuple[str, str]]) -> tuple[Segment, ...]:
    """A session's prelude and earlier turns (prompt, answer), as the model saw them."""
    parts = [Segment(task.prelude, special=True)]
    for prompt, answer in history:
        parts += [Segment(task.prefix, special=True), Segment(prompt), Segment(task.postfix, special=True), Segment(answer)]
    return tuple(p for p in parts if p.text)


def recalled_text(chunks: list[dict]) -> str:
    """Recalled chunks as the model reads them: one paragraph each, best first."""
    return "".join(c["text"].strip() + "\n\n" for c in chunks if c["text"].strip())


def render_chat(task: TaskConfig, messages: list[tuple[str, str]], *, recalled: str = "") -> tuple[Segment, ...]:
    """A conversation as the task's model sees it: the prelude, system text, then each
    user turn wrapped in prefix/postfix and each assistant turn as it was said.
    ``recalled`` memory text goes before the last user turn."""
    parts = [Segment(task.prelude, special=True)]
    last_user = max((i for i, (role, _) in enumerate(messages) if role == "user"), default=-1)
    for i, (role, content) in enumerate(messages):
        if role in ("system", "developer"):
            parts.append(Segment(content + "\n"))
        elif role == "user":
            if i == last_user:
                parts.append(Segment(recalled))
            parts += [Segment(task.prefix, special=True), Segment(content), Segment(task.postfix, special=True)]
        else:  # assistant
            parts.append(Segment(content + "\n"))
    if messages and messages[-1][0] == "assistant":  # continue the assistant's unfinished turn
        parts[-1] = Segment(messages[-1][1])
    return tuple(p for p in parts if p.text)


def check_private(task: TaskConfig, user_text: str) -> None:
    """A user's text may not contain the task's private tokens (its signalling)."""
    for token in task.private_tokens:
        if token in user_text:
            raise BadRequest(f"the input contains a private token of this task ({token!r})")


def bare_model_task(model: str, context_size: int, *, chat: bool) -> TaskConfig:
    """A model used without a task: its prompt as given (completions), or a plain
    "User:/Assistant:" conversation (chat), up to its whole context."""
    if chat:
        return TaskConfig(
            model=model, prefix="User: ", postfix="\nAssistant:", stop_sequences=["\nUser:"], max_tokens=context_size
        )
    return TaskConfig(model=model, max_tokens=context_size)


def build_request(
    task_name: str,
    task: TaskConfig,
    prompt: str | tuple[Segment, ...],
    overrides: Overrides = NO_OVERRIDES,
    *,
    user_text: str | None = None,
    grammar: str | None = None,
    owner: str | None = None,
) -> GenerationRequest:
    """The task's settings, with the request's overrides where it may make them.

    ``prompt`` is the user's text (wrapped by the task) or an already rendered
    conversation; the task's max_tokens is a ceiling, not a default to beat.
    ``grammar`` is the task's biaser as a grammar, which the runner converted once with
    the configured schema_limits; a request's own (``overrides.grammar``) replaces it.
    """
    o = overrides
    # What the user wrote may not hold private tokens; text recalled from a memory may
    # (it is tokenized as plain text all the same). Default: every non-template part.
    if user_text is None:
        user_text = prompt if isinstance(prompt, str) else "".join(s.text for s in prompt if not s.special)
    check_private(task, user_text)
    max_tokens = _or(o.max_tokens, task.max_tokens)
    if max_tokens > task.max_tokens:
        raise BadRequest(f"max_tokens {max_tokens} is above the limit of task '{task_name}' ({task.max_tokens})")
    check_stops(list(o.stop))  # the routes bound them too; this holds for every caller of the orchestrator
    sampling = Sampling(
        temperature=_or(o.temperature, task.temperature),
        top_k=_or(o.top_k, task.top_k),
        top_p=_or(o.top_p, task.top_p),
        min_p=_or(o.min_p, task.min_p),
        repeat_penalty=_or(o.repeat_penalty, task.repeat_penalty),
        repeat_last_n=_or(o.repeat_last_n, task.repetition_penalty_last_n),
        frequency_penalty=_or(o.frequency_penalty, task.frequency_penalty),
        presence_penalty=_or(o.presence_penalty, task.presence_penalty),
        mirostat=task.mirostat,
        mirostat_tau=task.mirostat_tau,
        mirostat_eta=task.mirostat_eta,
        mirostat_m=task.mirostat_m,
        mirostat_n_vocab=task.mirostat_n_vocab or 0,
        typical_p=task.typical_p,
        min_keep=task.min_keep,
        seed=_or(o.seed, task.seed),
        logit_bias=o.logit_bias,
    )
    return GenerationRequest(
        prompt=assemble(task, prompt) if isinstance(prompt, str) else prompt,
        max_tokens=max_tokens,
        # Private tokens are for the operator's templates: the model never shows one.
        stop=tuple(dict.fromkeys([*task.stop_sequences, *task.private_tokens, *o.stop])),
        sampling=sampling,
        ignore_eos=o.ignore_eos,
        min_tokens=o.min_tokens or 0,
        min_length=o.min_length,
        max_length=o.max_length,
        grammar=_or(o.grammar, grammar),
        logprobs=o.logprobs,
        session=o.session,
        cache_key=o.cache_key or prelude_key(task_name, task),
        owner=owner,
        speculation=speculation(task),
    )


def speculation(task: TaskConfig) -> Speculation | None:
    """The task's speculative decoding for the engine (None: the model's setting)."""
    spec = task.speculative
    if spec is None:
        return None
    if isinstance(spec, bool):
        return Speculation() if spec else NO_SPECULATION
    return Speculation(spec.ngram, spec.draft_max)


def _or(value: T | None, default: T) -> T:
    return default if value is None else value


def prelude_key(task_name: str, task: TaskConfig) -> str | None:
    """The durable KV snapshot of a task's prelude, so that a replica that starts again
    reads it from disk. Named by its text too: an edited prelude is saved anew, not
    restored from the old one's common start forever."""
    if not task.prelude:
        return None
    return f"prelude/{task_name}/{hashlib.sha256(task.prelude.encode()).hexdigest()[:16]}"
