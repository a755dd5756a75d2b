"""When a stream's text leaves the engine: adaptive flushing.

A token's text goes out at once when the stream's path is idle: its previous
message has been taken by the consumer (the replica's generator, which takes the
next only once the one before has been handed to Ray's stream). While a message
is still in flight, what the following steps produce is held and goes out as one
message when the path frees: on a quiet replica every token is its own message
(the inter-token latency a client sees is the decode step's), and a loaded one
sends fewer, larger messages by itself, so the hops' CPU does not come out of
the decode threads when they need it most.

``window`` (the model's ``stream_interval_ms``) bounds the holding: text held
that long goes out even with a message in flight. A window of 0 sends every
token alone, whatever is in flight.

A decode step sends at most ``per_step`` messages (the model's
``stream_messages_per_step``; by default twice the CPUs the replica sees), the
streams that have held text longest first. Each message costs the hops
(replica, ingress, proxy) a few ms of CPU, which on a small CPU machine comes
out of the decode threads: with 8 streams on 2 cores, a message per stream and
step cost about an eighth of the tokens per second (docs/performance.md). Up to
``per_step`` streams still get every token at once, and every stream its first.
"""

from __future__ import annotations

import asyncio
import math
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass

from poly_ray.generation import Chunk


@dataclass
class Outbox:
    """One stream's messages between the engine's worker and its consumer. Each
    counter has one writer (the worker counts what it sent, the consumer what it
    took), so the difference is safe to read from either thread."""

    sent: int = 0
    taken: int = 0
    held_since: float | None = None  # when the oldest text not yet sent was made

    @property
    def in_flight(self) -> int:
        return self.sent - self.taken

    @property
    def waiting_since(self) -> float:
        """When its oldest unsent text was made (never: infinity), to order the streams by."""
        return math.inf if self.held_since is None else self.held_since

    def due(self, now: float, window: float, step: StepBudget | None = None) -> bool:
        """Whether text made at ``now`` goes out now (the caller sends it, then calls ``sent_one``)."""
        if self.held_since is None:
            self.held_since = now
        if window == 0 or now - self.held_since >= window:
            return True
        # A stream's first text is never held for the step's budget: time to first token counts most.
        return self.in_flight == 0 and (self.sent == 0 or step is None or step.take())

    def sent_one(self) -> None:
        self.sent += 1
        self.held_since = None


class StepBudget:
    """The messages one decode step may still send (``per_step`` 0: any number)."""

    def __init__(self, per_step: int | None = None):
        self.per_step = default_per_step() if per_step is None else per_step
        self.left = self.per_step

    def start(self) -> None:
        self.left = self.per_step

    def take(self) -> bool:
        if self.per_step == 0:
            return True
        if self.left <= 0:
            return False
        self.left -= 1
        return True


def default_per_step() -> int:
    """Twice the CPUs this process may run on: the hops' work is CPU work. (macOS has no
    affinity call: there, every CPU, as the model's ``threads_per_session`` default counts.)"""
    if hasattr(os, "sched_getaffinity"):
        return 2 * len(os.sched_getaffinity(0))
    return 2 * (os.cpu_count() or 1)


def merge(first: Chunk, more: list[Chunk]) -> Chunk:
    """Chunks that queued up behind each other, as one message."""
    if not more:
        return first
    chunks = [first, *more]
    return Chunk("".join(c.text for c in chunks), sum(c.tokens for c in chunks),
                 tuple(lp for c in chunks for lp in c.logprobs))


async def taken(out: asyncio.Queue, box: Outbox) -> AsyncIterator:
    """The worker's items as the consumer takes them, chunks that queued up behind each
    other merged into one; a chunk counts as taken once the consumer comes back for more."""
    later = None
    while True:
        item, later = (later, None) if later is not None else (await out.get(), None)
        count = 0
        if isinstance(item, Chunk):
            more: list[Chunk] = []
            while not out.empty():
                nxt = out.get_nowait()
                if not isinstance(nxt, Chunk):
                    later = nxt
                    break
                more.append(nxt)
            count, item = 1 + len(more), merge(item, more)
        yield item
        box.taken += count
