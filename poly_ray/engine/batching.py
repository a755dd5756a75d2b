"""What one ``llama_decode`` step evaluates, for the runs of one context.

Every generating sequence adds the token it sampled last, with logits; sequences
still reading their prompt add a chunk of it. Alone, a prompt takes the whole
batch; beside streams that are generating it takes a slice, so they keep flowing.

A prompt's last token is never evaluated in the same step as the rest of its
prompt: it waits for the next step and goes in with the generating tokens. That
is how it is evaluated when the rest of the prompt came from cached KV cells (a
repeated request, a task's prelude, a chat's earlier turns), so the logits of the
first token sampled do not depend on whether the prefix was cached. They would
otherwise: llama.cpp's CPU matrix products take one path for a batch of one token
(ggml's dot products) and another for several (llamafile's tinyBLAS), which round
differently, and on an AVX2 CPU (ggml's ``haswell`` variant) a seeded mirostat
request was seen to give another text when repeated from the cache. It costs a
fresh prompt one more decode step of one token (or a share of one, beside others).

Reproducible therefore means: the same request on the same machine, CPU variant
and engine settings gives the same text whether or not its prefix is cached, as
long as the steps it is decoded in hold the same tokens. Requests decoded beside
others share steps whose shape depends on what else is running, and a prefix
cached from another prompt (a chat's earlier answer, evaluated token by token)
holds cells that were computed another way: seeded generations are best-effort
there (llama.cpp's CPU kernels are not batch-invariant).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

# A prompt beside generating streams reads at most this share of the batch per step
# (and at least MIN_SLICE tokens).
SLICE_DIVISOR = 4
MIN_SLICE = 32


class Reader(Protocol):
    next_token: int | None  # sampled, to be evaluated next step
    pending: list[int]  # prompt tokens not yet evaluated


def compose(runs: Sequence[Reader], batch_size: int) -> list[tuple[Reader, int, bool]]:
    """The tokens of one step, in batch order, as (run, token, logits wanted).

    Takes them from the runs: ``next_token`` is cleared and ``pending`` shortened.
    """
    out: list[tuple[Reader, int, bool]] = []
    # Tokens whose logits are sampled: generated ones, and prompts' last tokens.
    for run in runs:
        if run.next_token is not None:
            out.append((run, run.next_token, True))
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
        take = min(len(run.pending) - 1, room)  # the last token waits for the next step
        out.extend((run, token, False) for token in run.pending[:take])
        del run.pending[:take]
        room -= take
    return out
