"""Where a request runs in a batched context, and what it can reuse there.

A context holds one sequence per slot. A slot keeps its KV cells after its
request ends, so a later request whose prompt starts the same way (a task's
prelude, the earlier turns of a chat) evaluates only the rest: in place when an
idle slot holds the prefix, or by copying the prefix from a busy slot.

Cells are reused across owners (credentials) only for the operator-written start
of a prompt (BOS, a task's prelude, the template's opening): a prompt of another
owner could otherwise learn from ``cached_tokens`` how far it matches what
somebody else asked. Within an owner, every matching cell is reused.

A prefix shorter than ``MIN_COPY`` tokens is not reused at all: it saves next to
nothing, and cells computed for another prompt were computed in another batch
shape, which llama.cpp's CPU kernels round differently (a seeded request would
then draw another text depending on what the slots held). A short prompt is read
whole, the same way every time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from poly_ray.generation import GenerationRequest

# Reusing a handful of cells saves next to nothing: below this many tokens a
# prompt is evaluated afresh.
MIN_COPY = 16


@dataclass
class Slot:
    seq: int
    tokens: list[int] = field(default_factory=list)  # what its KV cells hold, in order
    busy: bool = False
    last_used: float = 0.0
    chain: str | None = None  # the chain of turns whose cells these are (GenerationRequest.session)
    owner: str | None = None  # whose prompt put them there (GenerationRequest.owner)
    public: int = 0  # how many of them are the operator's text, which any owner may reuse


@dataclass(frozen=True)
class Placement:
    slot: int
    reuse: int  # prompt tokens already in the slot once placed
    copy_from: int | None = None  # copy the first `reuse` cells of this slot first


def common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def public_prefix(request: GenerationRequest, tokenize: Callable[..., list[int]]) -> int:
    """How many first tokens of the request's prompt are the operator's: BOS, then its leading
    special segments (a prelude, the template's opening), tokenized as the engine tokenizes
    the prompt (segment by segment). A session's context is its owner's: 0."""
    if request.context:
        return 0
    n = len(tokenize("", add_bos=True))
    for seg in request.prompt:
        if not seg.special:
            break
        n += len(tokenize(seg.text, special=True))
    return n


def place(slots: list[Slot], prompt: list[int], *, session: bool = False, chain: str | None = None,
          owner: str | None = None, public: int = 0) -> Placement | None:
    """Pick a free slot for ``prompt``; None when every slot is busy. ``session``: the
    prompt continues a chat session's context, whose cells are its own to reuse however
    short; ``chain``: the prompt's chain of turns, whose own cells are reused however
    short too (a short prefix computed for another prompt is not reused: see MIN_COPY).
    ``owner``: whose prompt it is; of another owner's cells only the first ``public``
    (the prompt's operator-written start), as far as the slot's own are public too."""
    free = [s for s in slots if not s.busy]
    if not free:
        return None
    # At least one prompt token is evaluated, so that there are logits to sample.
    limit = max(len(prompt) - 1, 0)
    best, best_n = None, 0
    for s in slots:
        n = min(common_prefix(s.tokens, prompt), limit)
        if s.owner != owner:
            n = min(n, s.public, public)
        if n > best_n:
            best, best_n = s, n
    own = best is not None and ((session and best_n == len(best.tokens)) or (chain is not None and best.chain == chain))
    if best_n < MIN_COPY and not own:
        best, best_n = None, 0
    if best is not None and not best.busy and best_n == len(best.tokens):
        # The prompt continues what an idle slot holds (the next turn of a chat).
        return Placement(best.seq, best_n)
    # Otherwise run in the least valuable free slot: an empty one, else the least
    # recently used; the shared prefix is copied in, leaving its owner intact.
    target = min(free, key=lambda s: (bool(s.tokens), s.last_used))
    if best is None or target is best:
        return Placement(target.seq, best_n)
    return Placement(target.seq, best_n, copy_from=best.seq)
