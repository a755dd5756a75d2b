"""Whose request it is, passed down with every generation.

A task with ``store_prompts`` keeps each prompt as its caller's (the credential:
a key's name, a token's subject, an anonymous client's address), and recalls
only the caller's own prompts (documents are everyone's). The caller is known
where the request is authenticated (``Access.principal``); this carries it to
the backend's generation calls as the ``owner`` override, which no client body
can set.
"""

from __future__ import annotations

from contextvars import ContextVar

caller: ContextVar[str | None] = ContextVar("poly_ray_caller", default=None)


def owned(overrides: dict | None) -> dict:
    return {**(overrides or {}), "owner": caller.get()}


class OwnedBackend:
    """A ``Backend`` whose generations carry the caller's credential."""

    def __init__(self, backend):
        self._backend = backend

    def stream(self, task, prompt, overrides):
        return self._backend.stream(task, prompt, owned(overrides))

    def stream_target(self, target, prompt, messages, overrides):
        return self._backend.stream_target(target, prompt, messages, owned(overrides))

    def stream_turn(self, task, context, prompt, overrides, history=None):
        return self._backend.stream_turn(task, context, prompt, owned(overrides), history)

    async def complete(self, task, prompt, overrides):
        return await self._backend.complete(task, prompt, owned(overrides))

    def __getattr__(self, name):
        return getattr(self._backend, name)
