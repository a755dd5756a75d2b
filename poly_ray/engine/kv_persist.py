"""What an engine keeps of its KV cells beyond its memory (``Persistence``):

- a `/stream` cache id's sequence, saved after each of its generations, and a task's
  prelude, saved once (kv_snapshots.SnapshotIndex, this replica's folder);
- in a graph, each of those sent to the vault on the head, and fetched from it by a
  replica that lacks one (kv_snapshots.Vault), so any node restores them;
- a chain of turns' cells, handed to the vault when the replica stops (a scale-down):
  the chain's next turn, on whichever replica it lands, restores them instead of
  reading its history again.

``save``, ``restore`` and ``hand_off`` run on the engine's worker thread while the
slots concerned are not decoding; ``prefetch`` on the caller's event loop.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable

import llama_cpp

from poly_ray.generation import GenerationRequest

from .kv_slots import Placement, Slot, common_prefix
from .kv_snapshots import SharedSnapshots, SnapshotIndex, SnapshotTooLarge

log = logging.getLogger(__name__)

CHAIN = "chain/"  # the vault's key of a chain's handed-off cells: CHAIN + the chain's key


def key_of(request: GenerationRequest) -> str | None:
    """The snapshot a request may restore: its cache id, else its chain's hand-off."""
    return request.cache_key or (CHAIN + request.session if request.session else None)


class Persistence:
    def __init__(self, name: str, index: SnapshotIndex, shared: SharedSnapshots | None, ctx, mem,
                 context_size: int, tokenize: Callable):
        self.name, self.index, self.shared = name, index, shared
        self._ctx, self._mem, self._context_size, self._tokenize = ctx, mem, context_size, tokenize
        self.saved = self.restored = self.handed_off = 0

    def stats(self) -> dict:
        return {"saved": self.saved, "restored": self.restored, "handed_off": self.handed_off,
                "bytes": self.index.total(), "budget": self.index.budget}

    async def prefetch(self, request: GenerationRequest, slots: list[Slot]) -> tuple[list[int], bytes] | None:
        """The request's snapshot from the vault, when this replica has neither it nor,
        for a chain, the chain's cells (a read of the index: the worker thread owns it)."""
        key = key_of(request)
        if self.shared is None or key is None or key in self.index.entries:
            return None
        if request.cache_key is None and any(slot.chain == request.session for slot in slots):
            return None
        return await self.shared.fetch(self.index.fp, key)

    def save(self, request: GenerationRequest, slot: Slot, slots: list[Slot]) -> None:
        """A cache id is saved each time, with what its sequence holds now; a task's
        prelude once, and only the operator's text: the cells of the leading special
        segments are copied into a spare idle slot and saved from there, so a caller's
        prompt and answer are never written to disk and stay in the caller's slot (its
        next turn reads them from the cache). With no spare slot, a later request saves it."""
        key = request.cache_key
        if key is None:
            return
        if key.startswith("prelude/"):
            if self.index.lookup(key) or request.context is not None:
                return
            head = tuple(itertools.takewhile(lambda seg: seg.special, request.prompt))
            kept = self._tokenize(head)
            spare = min((s for s in slots if not s.busy and s is not slot),
                        key=lambda s: (bool(s.tokens), s.last_used), default=None)
            if slot.tokens[:len(kept)] != kept or spare is None:
                return
            llama_cpp.llama_memory_seq_rm(self._mem, spare.seq, -1, -1)
            llama_cpp.llama_memory_seq_cp(self._mem, slot.seq, spare.seq, 0, len(kept))
            spare.tokens, spare.chain = list(kept), None
            slot = spare  # it holds the prelude alone: where the next new conversation starts
        if self._save(slot, key):
            self.saved += 1

    def hand_off(self, slots: list[Slot]) -> int:
        """Send every idle slot's chain to the vault; how many were sent."""
        if self.shared is None:
            return 0
        sent = sum(self._save(slot, CHAIN + slot.chain) for slot in slots
                   if slot.chain and slot.tokens and not slot.busy)
        self.handed_off += sent
        return sent

    def _save(self, slot: Slot, key: str) -> bool:
        try:
            self.index.save(self._ctx.ctx, slot.seq, slot.tokens, key)
            if self.shared is not None:
                self.shared.publish(self.index.fp, key, list(slot.tokens), self.index.file_for(key).read_bytes())
            return True
        except (SnapshotTooLarge, OSError) as e:
            # The answer stands; the size learnt here refuses such prompts up front.
            log.warning("model %s: KV snapshot not saved: %s", self.name, e)
            return False

    def restore(self, request: GenerationRequest, tokens: list[int], fetched, slot: Slot, placement) -> Placement:
        """Load the request's snapshot into ``slot`` when it gives a longer prefix than
        the cells in memory; the placement to use then."""
        key = key_of(request)
        if key is None:
            return placement
        if fetched is not None and self.index.lookup(key) is None:
            try:
                self.index.store(key, *fetched)
            except (SnapshotTooLarge, OSError) as e:
                log.warning("model %s: a KV snapshot from the vault not kept: %s", self.name, e)
        entry = self.index.lookup(key)
        limit = len(tokens) - 1  # at least one token is evaluated, for logits
        if entry is None or min(common_prefix(entry.tokens, tokens), limit) <= placement.reuse:
            return placement
        llama_cpp.llama_memory_seq_rm(self._mem, slot.seq, -1, -1)
        saved = self.index.load(self._ctx.ctx, slot.seq, key, self._context_size)
        n = min(common_prefix(saved or [], tokens), limit)
        self.restored += n > 0
        llama_cpp.llama_memory_seq_rm(self._mem, slot.seq, n, -1)
        slot.tokens = tokens[:n]
        return Placement(slot.seq, n)
