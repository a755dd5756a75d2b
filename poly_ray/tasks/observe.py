"""What each generation leaves behind: one log line, metrics, and Poly's per-task stats.

No Ray import. ``observe`` wraps a generation's events and, when it ends, hands
an ``Outcome`` to sinks: a ``Tally`` (the counts of ``GET /v1/stats``) and, in
the orchestrator deployment, the Ray metrics of ``serve/ops.py``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import asdict, dataclass
from typing import Protocol

from poly_ray.errors import PolyError
from poly_ray.generation import Chunk, Done, Event, Reasoning, Started

log = logging.getLogger("poly_ray.requests")


@dataclass(frozen=True)
class Outcome:
    task: str  # a task, or a model used bare
    model: str
    # "ok", an error's code (busy, prompt_too_long, replica_lost, ...), or
    # "cancelled" when the caller went away first.
    status: str
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    ttft_s: float | None = None  # to the first text, as the orchestrator saw it
    total_s: float = 0.0
    # From the engine's timings: reading the prompt, and generating after the first token.
    prompt_s: float | None = None
    decode_s: float | None = None

    @property
    def time_per_token_s(self) -> float | None:
        if self.decode_s is None or self.completion_tokens < 2:
            return None
        return self.decode_s / (self.completion_tokens - 1)

    @property
    def tokens_per_s(self) -> float | None:
        per_token = self.time_per_token_s
        return 1 / per_token if per_token else None


class Sink(Protocol):
    def record(self, outcome: Outcome) -> None: ...


async def observe(
    events: AsyncIterator[Event], *, task: str, model: str, sinks: Iterable[Sink], prompt: str | None = None
) -> AsyncIterator[Event]:
    """Pass ``events`` through; when they end (done, failed or abandoned), record the
    outcome in every sink and log one line. ``prompt`` is logged when given."""
    start = time.perf_counter()
    first_at, started, done = None, None, None
    recorded = False

    def finish(status: str) -> None:
        nonlocal recorded
        if recorded:
            return
        recorded = True
        outcome = _outcome(task, model, status, start, first_at, started, done)
        for sink in sinks:
            sink.record(outcome)
        log.info("%s", log_line(outcome, prompt))

    try:
        async for event in events:
            if isinstance(event, Started):
                started = event
            elif isinstance(event, (Chunk, Reasoning)) and event.text and first_at is None:  # thinking is output too
                first_at = time.perf_counter()
            elif isinstance(event, Done):
                # Now, not when the caller closes this generator (a caller that
                # stops at Done may leave that to the garbage collector).
                done = event
                finish("ok")
            yield event
    except PolyError as e:
        finish(e.code)
        raise
    except Exception:
        finish("internal_error")
        raise
    finally:
        finish("cancelled")


def _outcome(task, model, status, start, first_at, started: Started | None, done: Done | None) -> Outcome:
    timings = done.timings if done else {}

    def seconds(key: str) -> float | None:
        ms = timings.get(key)
        return None if ms is None else ms / 1000

    return Outcome(
        task=task,
        model=model,
        status=status,
        finish_reason=done.finish_reason if done else None,
        prompt_tokens=done.prompt_tokens if done else (started.prompt_tokens if started else 0),
        completion_tokens=done.completion_tokens if done else 0,
        ttft_s=None if first_at is None else first_at - start,
        total_s=time.perf_counter() - start,
        prompt_s=seconds("prompt_ms"),
        decode_s=seconds("decode_ms"),
    )


def log_line(o: Outcome, prompt: str | None = None) -> str:
    """``task=qa model=gemma status=ok finish=stop prompt_tokens=14 ...``; the prompt
    only when given (the config's log_prompts), JSON-quoted so it stays on one line."""
    parts = [f"task={o.task}", f"model={o.model}", f"status={o.status}"]
    if o.finish_reason:
        parts.append(f"finish={o.finish_reason}")
    parts += [f"prompt_tokens={o.prompt_tokens}", f"completion_tokens={o.completion_tokens}"]
    if o.ttft_s is not None:
        parts.append(f"ttft_ms={o.ttft_s * 1000:.1f}")
    parts.append(f"total_ms={o.total_s * 1000:.1f}")
    if prompt is not None:
        parts.append(f"prompt={json.dumps(prompt, ensure_ascii=False)}")
    return " ".join(parts)


@dataclass
class TaskStats:
    """Poly's per-task stats (cycles, prompt/predict tokens and durations), with
    requests by how they ended."""

    requests: int = 0
    cycles: int = 0  # generations that completed
    errors: int = 0
    cancelled: int = 0
    prompt_tokens: int = 0
    predict_tokens: int = 0
    prompt_duration_s: float = 0.0
    predict_duration_s: float = 0.0


class Tally:
    """Counts per task since start (of this process: one orchestrator replica)."""

    def __init__(self):
        self._tasks: dict[str, TaskStats] = {}

    def record(self, o: Outcome) -> None:
        s = self._tasks.setdefault(o.task, TaskStats())
        s.requests += 1
        if o.status == "ok":
            s.cycles += 1
        elif o.status == "cancelled":
            s.cancelled += 1
        else:
            s.errors += 1
        s.prompt_tokens += o.prompt_tokens
        s.predict_tokens += o.completion_tokens
        s.prompt_duration_s += o.prompt_s or 0.0
        s.predict_duration_s += o.decode_s or 0.0

    def snapshot(self) -> dict[str, dict]:
        return {task: asdict(s) for task, s in self._tasks.items()}
