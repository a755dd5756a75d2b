"""/ready's answer, shared by the calls that come close together."""

from __future__ import annotations

import asyncio
import time

# /ready needs no credentials, and each check asks every model: one answer is
# shared by the calls within this many seconds (and by those that arrive meanwhile).
READY_CACHE_S = 2.0


class ReadyCache:
    """The app's one readiness answer, shared (``Services.readiness``)."""

    def __init__(self, backend):
        self._backend = backend
        self._lock = asyncio.Lock()
        self._answer: dict | None = None
        self._at = 0.0

    async def get(self) -> dict:
        async with self._lock:
            if self._answer is None or time.monotonic() - self._at > READY_CACHE_S:
                self._answer, self._at = await self._backend.ready(), time.monotonic()
            return self._answer
