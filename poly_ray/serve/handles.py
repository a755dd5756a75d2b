"""Calls through DeploymentHandles, with Ray's failures turned into PolyErrors."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import contextmanager

from ray.exceptions import RayActorError, RayTaskError
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError

from poly_ray.errors import Busy, PolyError, ReplicaLost
from poly_ray.generation import Started


@contextmanager
def _translated(callee: str):
    """Ray's errors from a call to ``callee`` (e.g. "model 'gemma'") as PolyErrors."""
    try:
        yield
    except PolyError:
        raise
    except RayTaskError as e:
        # An error raised in another replica arrives wrapped; its cause is ours.
        if isinstance(e.cause, PolyError):
            raise e.cause from None
        raise
    except RayActorError:
        # The replica's process or node died (or cannot be reached) mid-call. Serve
        # starts another one; the caller may retry.
        raise ReplicaLost(
            f"{callee}: the replica answering this request stopped (its process or node died); retry the request",
            retry_after=1,
        ) from None
    except BackPressureError:
        raise Busy("the server is busy: too many requests are waiting; retry shortly", retry_after=1) from None
    except DeploymentUnavailableError:
        raise Busy(f"{callee} is not available right now; retry shortly", retry_after=5) from None


async def call(response: Awaitable, callee: str):
    with _translated(callee):
        return await response


async def stream(response, callee: str) -> AsyncIterator:
    """Iterate a streaming handle response; closing this iterator cancels the remote call."""
    finished = False
    try:
        with _translated(callee):
            async for item in response:
                yield item
        finished = True
    finally:
        if not finished:
            response.cancel()


# A replica that dies before it generated anything is tried again on another one:
# Serve's router drops a replica from its set once a call to it fails that way,
# so the retry goes elsewhere. Waits between tries, in seconds.
_RETRY_WAITS = (0.2, 0.5, 1.0)


async def retried_stream(start: Callable, callee: str) -> AsyncIterator:
    """``stream(start(), callee)``, started again while the replica was lost before
    its first generated item. ``Started`` (the prompt was accepted) is passed on once:
    a retry's own is the same news."""
    started = False
    for wait in (*_RETRY_WAITS, None):
        generated = False
        try:
            async for item in stream(start(), callee):
                if isinstance(item, Started):
                    if started:
                        continue
                    started = True
                else:
                    generated = True
                yield item
            return
        except ReplicaLost:
            if generated or wait is None:
                raise
        await asyncio.sleep(wait)


async def retried_call(start: Callable, callee: str):
    """``call(start(), callee)`` for a call without side effects, tried again on a lost replica."""
    for wait in (*_RETRY_WAITS, None):
        try:
            return await call(start(), callee)
        except ReplicaLost:
            if wait is None:
                raise
        await asyncio.sleep(wait)


class ModelHandle:
    """A model deployment seen as a ``tasks.ModelClient``."""

    def __init__(self, handle, name: str):
        self._handle = handle
        self._streaming = handle.options(stream=True)
        self._callee = f"model '{name}'"

    def generate(self, request):
        handle = self._streaming
        if request.session:
            # Serve's multiplexing routes a model id to a replica that has "loaded" it:
            # a session's turns go where its cells are (anywhere else still works, slower).
            handle = handle.options(multiplexed_model_id=request.session)
        # Generation has no side effect until its first token arrives.
        return retried_stream(lambda: handle.generate.remote(request), self._callee)

    async def embed(self, texts):
        return await retried_call(lambda: self._handle.embed.remote(texts), self._callee)

    async def tokenize(self, text):
        return await retried_call(lambda: self._handle.tokenize.remote(text), self._callee)

    async def stats(self):
        return await retried_call(lambda: self._handle.stats.remote(), self._callee)

    async def chat_template(self):
        return await retried_call(lambda: self._handle.chat_template.remote(), self._callee)


class MemoryHandle:
    """The memory deployment seen as a ``memory.service.MemoryService`` (every method async)."""

    def __init__(self, handle):
        self._handle = handle

    def __getattr__(self, method: str):
        async def remote(*args, **kwargs):
            return await call(self._handle.call.remote(method, *args, **kwargs), "the memory deployment")

        return remote


class StateHandle:
    """The state deployment seen as a ``state.service.StateService`` (every method async)."""

    def __init__(self, handle):
        self._handle = handle

    async def call(self, method: str, *args, **kwargs):
        return await call(self._handle.call.remote(method, *args, **kwargs), "the state deployment")

    def __getattr__(self, method: str):
        async def remote(*args, **kwargs):
            return await self.call(method, *args, **kwargs)

        return remote
