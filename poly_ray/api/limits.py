"""How many generations run at once: in all (``max_concurrent``) and per credential
(``max_streams_per_credential``), across every ingress replica.

A place is a lease in a ``LeaseBook``. With one ingress replica the book is in the
replica (``LocalLedger``, no cost); with several, the one book is in the coordinator
deployment (serve/coordinator.py) and each take is a call to it, so a limit holds
across replicas exactly. Routes see only ``StreamLimits``.
"""

from __future__ import annotations

import itertools
import time
from collections import Counter
from collections.abc import Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Protocol

from poly_ray.errors import Busy, TooManyStreams


@dataclass(frozen=True)
class Lease:
    """A place held: ``credential`` (None: counted in all only) and whether it is a
    generation (False: an open WebSocket chat holds its credential's place)."""

    credential: str | None
    generation: bool


class LeaseBook:
    """The counts, and each holder's leases by id. A holder (an ingress replica) that
    stops renewing for ``expire_s`` is taken to be gone and its leases freed (None:
    holders never go, as the one in this process)."""

    def __init__(self, limit: int, per_credential: int, expire_s: float | None = None):
        self.limit, self.per_credential, self.expire_s = limit, per_credential, expire_s
        self.used = 0
        self.by_credential: Counter[str] = Counter()
        self._held: dict[str, dict[str, Lease]] = {}
        self._seen: dict[str, float] = {}

    def take(self, holder: str, lease_id: str, lease: Lease) -> None:
        """Record ``lease`` or raise TooManyStreams (429) / Busy (503) naming the key. A
        lease the holder has already (its renewal arrived first) is kept as it is."""
        self._forget_silent()
        if lease_id in self._held.get(holder, {}):
            return
        credential = lease.credential
        if credential is not None and self.by_credential[credential] >= self.per_credential:
            raise TooManyStreams(
                f"these credentials have {self.by_credential[credential]} streams open;"
                f" the limit (max_streams_per_credential) is {self.per_credential}"
            )
        if lease.generation and self.used >= self.limit:
            raise Busy(f"the server is at its limit of {self.limit} concurrent generations (max_concurrent)",
                       retry_after=1)
        self._add(holder, lease_id, lease)

    def release(self, holder: str, lease_id: str) -> None:
        lease = self._held.get(holder, {}).pop(lease_id, None)
        if lease is None:
            return
        self.used -= lease.generation
        if lease.credential is not None:
            self.by_credential[lease.credential] -= 1
            if not self.by_credential[lease.credential]:
                del self.by_credential[lease.credential]

    def renew(self, holder: str, leases: dict[str, Lease]) -> None:
        """``holder`` holds exactly ``leases``: a release lost on the way is made good, and
        a book that started afresh (its process restarted) learns what is held."""
        for lease_id in set(self._held.get(holder, {})) - set(leases):
            self.release(holder, lease_id)
        for lease_id, lease in leases.items():
            if lease_id not in self._held.get(holder, {}):
                self._add(holder, lease_id, lease)
        self._seen[holder] = time.monotonic()

    def _add(self, holder: str, lease_id: str, lease: Lease) -> None:
        self._held.setdefault(holder, {})[lease_id] = lease
        self._seen[holder] = time.monotonic()
        self.used += lease.generation
        if lease.credential is not None:
            self.by_credential[lease.credential] += 1

    def _forget_silent(self) -> None:
        if self.expire_s is None:
            return
        deadline = time.monotonic() - self.expire_s
        for holder in [h for h, seen in self._seen.items() if seen < deadline]:
            for lease_id in list(self._held.get(holder, {})):
                self.release(holder, lease_id)
            self._held.pop(holder, None)
            del self._seen[holder]


class Ledger(Protocol):
    """Where the leases are recorded: this process (LocalLedger) or the coordinator."""

    async def take(self, lease_id: str, lease: Lease) -> None: ...

    def release(self, lease_id: str) -> None: ...


class LocalLedger:
    """The book in this process: one ingress replica, or the tests."""

    HOLDER = "local"

    def __init__(self, limit: int, per_credential: int):
        self.book = LeaseBook(limit, per_credential)

    async def take(self, lease_id: str, lease: Lease) -> None:
        self.book.take(self.HOLDER, lease_id, lease)

    def release(self, lease_id: str) -> None:
        self.book.release(self.HOLDER, lease_id)


class StreamLimits:
    """The places of generations and WebSocket chats, as the routes take them."""

    def __init__(self, ledger: Ledger):
        self.ledger = ledger
        self._ids = itertools.count()

    @classmethod
    def local(cls, limit: int, per_credential: int) -> StreamLimits:
        return cls(LocalLedger(limit, per_credential))

    async def take(self, credential: str | None, *, generation: bool = True) -> Callable[[], None]:
        """A place for a generation (unless ``generation`` is false: a WebSocket session
        holds a place of its credential while open), counted against ``credential``
        unless it is None. Returns the place's release, which may be called again."""
        lease_id = str(next(self._ids))
        await self.ledger.take(lease_id, Lease(credential, generation))
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self.ledger.release(lease_id)

        return release

    async def accepted(self, events, credential: str | None) -> tuple[Any, Callable[[], None]]:
        """Take a place and wait until the model accepts the prompt (its first event),
        so that a refusal (too long, busy) is an HTTP status and not an event in a
        200 stream. Returns the first event and the release, which the caller calls
        when the stream ends."""
        release = await self.take(credential)
        try:
            return await anext(events), release
        except BaseException:
            release()
            raise

    @asynccontextmanager
    async def held(self, credential: str | None):
        release = await self.take(credential)
        try:
            yield
        finally:
            release()
