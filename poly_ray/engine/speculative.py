"""N-gram (prompt lookup) speculative decoding: drafts from the text a stream already holds.

Much of what agents and RAG tasks generate copies their prompt (quotes, fields of a
document, code being edited). After each token the stream's last ``ngram`` tokens
are looked up among its earlier ones (prompt and output); what followed their
latest occurrence, up to ``draft_max`` tokens, is the draft. The draft goes into
the next decode step behind the sampled token, each with its logits, in the same
``llama_decode`` as the other streams; then the stream's own sampler chain draws
at each position in turn, exactly as it would have token by token (seed,
penalties, grammar), and stops at the first draw that differs from the draft.
The draws are the output: a draft token that was not drawn never reaches it, and
its cells are cut from the sequence. A stream whose last tokens are not found
drafts nothing and decodes as without speculation.
"""

from __future__ import annotations

from collections.abc import Sequence

import llama_cpp

from poly_ray.generation import GenerationRequest, Speculation

__all__ = ["Drafter", "Speculation", "chosen", "cut_rejected", "verify"]


def chosen(request: GenerationRequest, model: Speculation | None) -> Speculation | None:
    """The setting a request drafts with: its task's (which may switch it off), else the
    model's; None: no drafting."""
    spec = request.speculation if request.speculation is not None else model
    if spec is None or spec.draft_max <= 0:
        return None
    return spec


class Drafter:
    """One stream's tokens, indexed by n-gram: the latest start of each n-gram that has a
    token after it (so the stream's own last n-gram is found only where it came before)."""

    def __init__(self, spec: Speculation, history: Sequence[int]):
        self.n, self.k = spec.ngram, spec.draft_max
        self.tokens: list[int] = []
        self._index: dict[tuple[int, ...], int] = {}
        self.extend(history)

    def extend(self, tokens: Sequence[int]) -> None:
        for token in tokens:
            self.tokens.append(token)
            start = len(self.tokens) - self.n - 1  # the n-gram that now has a follower
            if start >= 0:
                self._index[tuple(self.tokens[start : start + self.n])] = start

    def draft(self, limit: int) -> list[int]:
        """Up to ``min(draft_max, limit)`` tokens that followed the last n-gram before."""
        if limit <= 0 or len(self.tokens) < self.n:
            return []
        start = self._index.get(tuple(self.tokens[-self.n :]))
        if start is None:
            return []
        begin = start + self.n
        return self.tokens[begin : begin + min(self.k, limit)]


def verify(sampler, ctx, indices: Sequence[int], draft: Sequence[int]) -> list[int]:
    """The stream's draws at its batch entries (the sampled token's, then each draft
    token's), in order, up to the first that differs from the draft; the draws accept
    themselves into the chain, as token-by-token sampling would."""
    drawn: list[int] = []
    for i, index in enumerate(indices):
        token = sampler.sample(ctx, index)
        drawn.append(token)
        if i >= len(draft) or token != draft[i]:
            break
    return drawn


def cut_rejected(mem, slot, draft: Sequence[int], drawn: Sequence[int]) -> int:
    """Removes the cells of the draft tokens that were not drawn (each drawn token but
    the last confirmed one); how many draft tokens were accepted."""
    accepted = len(drawn) - 1
    rejected = len(draft) - accepted
    if rejected > 0:
        del slot.tokens[-rejected:]
        llama_cpp.llama_memory_seq_rm(mem, slot.seq, len(slot.tokens), -1)
    return accepted
