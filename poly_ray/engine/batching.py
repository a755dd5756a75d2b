"""What one ``llama_decode`` step evaluates, for the runs of one context.

Every generating sequence adds the token it sampled last, with logits; sequences
still reading their prompt add a chunk of it. Alone, a prompt takes the whole
batch; beside streams that are generating it takes a slice, so they keep flowing.

A prompt's last token is never evaluated in the same step as the rest of its
prompt: it waits for the next step and goes in with the generating tokens. That
is how it is evaluated when the rest of the prompt came from cached KV cells (a
repeated request, a task's prelude, a chat's earlier turns), so the logits of the
first token sampled do not depend on whether the prefix was cached. They would
otherwise: llama.cpp's CPU kernels round a row differently depending on the batch
around it (repacked weights take a 4-row GEMM for whole groups of 4 rows and a
GEMV for the rest; in ggml's source flash attention is tiled from 64 query rows
on), and on an AVX2 CPU (ggml's ``haswell`` variant) seeded requests drew another
text when their prompt came back from the cache (a 20-token prompt every time).
It costs a fresh prompt one more decode step of one token (or a share of one,
beside others), and its first token comes that step later: alone, ~25 ms of a
~50 ms time to first token with Gemma 270M on 2 cores; beside 8 streams, a whole
step of theirs. So only a request that can repeat pays it (``repeatable``: a seed,
or greedy); one drawing from a fresh random seed reads its whole prompt in one
step, as llama-server does.

Reproducible therefore means: the same request on the same machine, CPU variant
and engine settings gives the same text, read afresh or from the cache, as long
as the steps it is decoded in hold the same tokens. Best-effort only: requests
decoded beside others (which share a step depends on when each arrived), and a
prefix of 16 tokens or more cached from another prompt (a chat's earlier answer
was evaluated token by token): those cells were computed in another batch shape.
Shorter shared prefixes are never reused (``kv_slots.MIN_COPY``). The tests run
these checks under ``POLY_RAY_CPU_VARIANT=haswell`` too (``backends``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, TypeVar

# A prompt beside generating streams reads at most this share of the batch per step
# (and at least MIN_SLICE tokens).
SLICE_DIVISOR = 4
MIN_SLICE = 32


class Reader(Protocol):
    next_token: int | None  # sampled, to be evaluated next step
    draft: list[int]  # speculative: tokens evaluated behind next_token, each with logits
    pending: list[int]  # prompt tokens not yet evaluated
    repeatable: bool  # its prompt's last token waits for a step of its own (above)


def repeatable(sampling) -> bool:
    """Whether a request's text can repeat: it names a seed, or draws greedily."""
    return sampling.seed is not None or sampling.temperature <= 0


R = TypeVar("R", bound=Reader)


def compose(runs: Sequence[R], batch_size: int) -> list[tuple[R, int, bool]]:
    """The tokens of one step, in batch order, as (run, token, logits wanted).

    Takes them from the runs: ``next_token`` is cleared and ``pending`` shortened.
    """
    out: list[tuple[R, int, bool]] = []
    # Tokens whose logits are sampled: generated ones, and prompts' last tokens.
    for run in runs:
        if run.next_token is not None:
            out.append((run, run.next_token, True))
            out.extend((run, token, True) for token in run.draft)
            run.next_token = None
        elif len(run.pending) == 1:
            out.append((run, run.pending.pop(), True))
    room = batch_size - len(out)
    if out:
        room = min(room, max(MIN_SLICE, batch_size // SLICE_DIVISOR))
    for run in runs:
        if room <= 0:
            break
        if len(run.pending) < 2:
            continue
        # A repeatable run's last token waits for the next step; another's comes with logits.
        take = min(len(run.pending) - (1 if run.repeatable else 0), room)
        out.extend((run, token, False) for token in run.pending[:take])
        if take == len(run.pending):
            out[-1] = (run, out[-1][1], True)
        del run.pending[:take]
        room -= take
    return out
