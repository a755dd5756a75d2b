"""The store behind an async face: what the HTTP layer calls, in-process (tests,
one-process servers) or through the state deployment's handle (serve/state.py
offers the same methods). SQLite calls are short but blocking, so they run on
a worker thread, never on the event loop."""

from __future__ import annotations

import asyncio

from poly_ray.state.store import Store

METHODS = frozenset({"create", "update", "delete", "get", "parent_of", "list", "all"})


class StateService:
    def __init__(self, store: Store):
        self.store = store

    async def call(self, method: str, *args, **kwargs):
        if method not in METHODS:  # only the store's CRUD crosses the boundary
            raise AttributeError(f"the state store has no method {method!r}")
        result = await asyncio.to_thread(getattr(self.store, method), *args, **kwargs)
        # a Page crosses Ray as its list body, the shape every route returns
        return result.to_body() if method == "list" else result

    def __getattr__(self, method: str):
        if method not in METHODS:
            raise AttributeError(method)

        async def bound(*args, **kwargs):
            return await self.call(method, *args, **kwargs)

        return bound

    def close(self) -> None:
        self.store.close()
