"""The store behind an async face: what the HTTP layer calls (``api.backend.StateBackend``),
in-process (tests, one-process servers) or through the state deployment's handle
(serve/state.py serves this class, serve/handles.StateHandle calls it). SQLite calls
are short but blocking, so they run on a worker thread, never on the event loop."""

from __future__ import annotations

import asyncio
import builtins

from poly_ray.state.chains import Chain
from poly_ray.state.store import Store


class StateService:
    def __init__(self, store: Store):
        self.store = store

    async def create(self, owner: str, kind: str, body: dict, *, parent: str | None = None,
                     exclusive: tuple[str, ...] = (), ref: str | None = None) -> dict:
        return await asyncio.to_thread(self.store.create, owner, kind, body, parent=parent, exclusive=exclusive,
                                       ref=ref)

    async def update(self, owner: str, kind: str, oid: str, changes: dict, *,
                     only_if: tuple | list | None = None) -> dict:
        return await asyncio.to_thread(self.store.update, owner, kind, oid, changes, only_if=only_if)

    async def delete(self, owner: str, kind: str, oid: str) -> None:
        await asyncio.to_thread(self.store.delete, owner, kind, oid)

    async def get(self, owner: str, kind: str, oid: str) -> dict:
        return await asyncio.to_thread(self.store.get, owner, kind, oid)

    async def chain(self, owner: str, rid: str, limit: int) -> Chain:
        return await asyncio.to_thread(self.store.chain, owner, rid, limit)

    async def parent_of(self, owner: str, kind: str, oid: str) -> str | None:
        return await asyncio.to_thread(self.store.parent_of, owner, kind, oid)

    async def list(self, owner: str, kind: str, *, parent: str | None = None, limit: int = 20,
                   after: str | None = None, before: str | None = None, order: str = "desc") -> dict:
        """A page as its list body (the shape every route returns; it crosses Ray as that)."""
        page = await asyncio.to_thread(self.store.list, owner, kind, parent=parent, limit=limit, after=after,
                                       before=before, order=order)
        return page.to_body()

    async def all(self, owner: str, kind: str, *, parent: str) -> builtins.list[dict]:  # list: the method above
        return await asyncio.to_thread(self.store.all, owner, kind, parent=parent)

    def close(self) -> None:
        self.store.close()
