"""Admission of embedding requests on one model replica.

An embedding request was free: no cap on its texts (an 8 MiB body asks for
millions of vectors, tens of GB in the replica), no place in the model's
admission, and while it ran, a memory's recall (which embeds its query on the same
model) waited behind it. Here a request is held to ``max_embedding_inputs`` texts
and ``max_embedding_tokens`` tokens, requests embed one at a time in arrival
order, and past ``max_queued_requests`` waiting ones the next gets Busy (503).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from poly_ray.errors import BadRequest, Busy

Embed = Callable[[list[str], int], list[list[float]]]  # (texts, max total tokens) → vectors; blocking


class EmbeddingGate:
    def __init__(self, name: str, embed: Embed, *, serves: bool, max_inputs: int, max_tokens: int, max_queued: int):
        self.name = name
        self._embed = embed
        self.serves = serves
        self.max_inputs, self.max_tokens, self.max_queued = max_inputs, max_tokens, max_queued
        self._turn = asyncio.Lock()  # FIFO: one embedding at a time
        self.waiting = 0

    async def embed(self, texts: list[str]) -> list[list[float]]:
        if not self.serves:
            raise BadRequest(f"model '{self.name}' does not serve embeddings (a generative model embeds only with "
                             f"models.{self.name}.embeddings = true)")
        if len(texts) > self.max_inputs:
            raise BadRequest(f"{len(texts)} inputs; model '{self.name}' embeds at most {self.max_inputs} per request "
                             f"(models.{self.name}.max_embedding_inputs)")
        if self.waiting > self.max_queued:
            raise Busy(f"model '{self.name}' is busy embedding: {self.waiting} requests are waiting "
                       f"(max_queued_requests = {self.max_queued})", retry_after=1)
        self.waiting += 1
        try:
            async with self._turn:
                return await asyncio.to_thread(self._embed, texts, self.max_tokens)
        finally:
            self.waiting -= 1

    def stats(self) -> dict:
        return {"embedding_waiting": self.waiting}
