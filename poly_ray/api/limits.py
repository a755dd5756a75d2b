"""How many generations one ingress replica lets run: in all, and per credential."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from contextlib import asynccontextmanager
from typing import Any

from poly_ray.errors import Busy, TooManyStreams


class StreamLimits:
    """Bounds on generations in flight through one ingress replica: ``max_concurrent``
    in all (503), ``max_streams_per_credential`` per caller (429)."""

    def __init__(self, limit: int, per_credential: int):
        self.limit, self.used = limit, 0
        self.per_credential = per_credential
        self.by_credential: Counter[str] = Counter()

    def take(self, credential: str | None, *, generation: bool = True) -> Callable[[], None]:
        """A place for a generation (unless ``generation`` is false: a WebSocket session
        holds a place of its credential while open), counted against ``credential``
        unless it is None. Returns the place's release, which may be called again."""
        if credential is not None and self.by_credential[credential] >= self.per_credential:
            raise TooManyStreams(
                f"these credentials have {self.by_credential[credential]} streams open;"
                f" the limit (max_streams_per_credential) is {self.per_credential}"
            )
        if generation and self.used >= self.limit:
            raise Busy(f"the server is at its limit of {self.limit} concurrent generations (max_concurrent)", retry_after=1)
        self.used += generation
        if credential is not None:
            self.by_credential[credential] += 1
        released = False

        def release() -> None:
            nonlocal released
            if released:
                return
            released = True
            self.used -= generation
            if credential is not None:
                self.by_credential[credential] -= 1
                if not self.by_credential[credential]:
                    del self.by_credential[credential]

        return release

    async def accepted(self, events, credential: str | None) -> tuple[Any, Callable[[], None]]:
        """Take a place and wait until the model accepts the prompt (its first event),
        so that a refusal (too long, busy) is an HTTP status and not an event in a
        200 stream. Returns the first event and the release, which the caller calls
        when the stream ends."""
        release = self.take(credential)
        try:
            return await anext(events), release
        except BaseException:
            release()
            raise

    @asynccontextmanager
    async def held(self, credential: str | None):
        release = self.take(credential)
        try:
            yield
        finally:
            release()
