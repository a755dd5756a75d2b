"""Calls through DeploymentHandles, with Ray's failures turned into PolyErrors."""

from __future__ import annotations

import asyncio
import builtins
import hashlib
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from contextlib import contextmanager

from ray.exceptions import RayActorError, RayTaskError
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError

from poly_ray.errors import Busy, MemoryLoading, NotFound, PolyError, ReplicaLost
from poly_ray.generation import Started
from poly_ray.state.chains import Chain


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


async def stream(response, callee: str) -> AsyncGenerator:
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
# so the retry goes elsewhere. Waits between tries, in seconds: about 30 s in all,
# as long as Ray may take to declare a lost node dead, because until then the router
# can still send a try there (on a 2-core machine at load 10, tries within 1.7 s and
# then within 8 s all went to a removed node's replica, in 1 run of 3).
_RETRY_WAITS = (0.2, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0)


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


# A request without a chain is routed by its prompt's first PREFIX_CHARS characters
# (about 250 tokens): requests that share a long system prompt or document go to the
# replica that read it. A shorter prompt has little to share and goes anywhere.
PREFIX_CHARS = 1024


def prefix_key(request) -> str | None:
    text = ""
    for segment in request.prompt:  # only the start: a prompt may be megabytes long
        text += segment.text[:PREFIX_CHARS - len(text)]
        if len(text) == PREFIX_CHARS:
            return "prefix:" + hashlib.sha256(text.encode()).hexdigest()[:24]
    return None


class ModelHandle:
    """A model deployment seen as a ``tasks.ModelClient``."""

    def __init__(self, handle, name: str, affinity: bool = True):
        """``affinity``: the model's cache_affinity (route a chain's turns to one replica)."""
        self._handle = handle
        self._streaming = handle.options(stream=True)
        self._callee = f"model '{name}'"
        self._affinity = affinity

    def generate(self, request):
        handle = self._streaming
        if self._affinity and (key := request.session or prefix_key(request)):
            # The model's ChainRouter (serve/routing.py) prefers a replica that has "loaded"
            # this id, within a bounded imbalance: a chain's turns go where its prefix is.
            handle = handle.options(multiplexed_model_id=key)
        # Generation has no side effect until its first token arrives.
        return retried_stream(lambda: handle.generate.remote(request), self._callee)

    async def embed(self, texts):
        return await retried_call(lambda: self._handle.embed.remote(texts), self._callee)

    async def tokenize(self, text):
        return await retried_call(lambda: self._handle.tokenize.remote(text), self._callee)

    async def count_tokens(self, texts):
        return await retried_call(lambda: self._handle.count_tokens.remote(texts), self._callee)

    async def stats(self):
        return await retried_call(lambda: self._handle.stats.remote(), self._callee)

    async def chat_template(self):
        return await retried_call(lambda: self._handle.chat_template.remote(), self._callee)


MEMORY, STATE = "the memory deployment", "the state deployment"


# How long a memory call waits for the memory deployment's first answer. Its replica
# answers once it has opened every memory (serve/memory.py opens them in its constructor,
# an embedded store waiting up to a minute for a replaced replica to let go of it);
# until then a call would wait in Serve's queue, so the caller hears 503 instead. Long
# enough that an open deployment on a loaded machine answers within it (a false 503).
OPEN_WAIT_S = 10.0


class MemoryHandle:
    """The memory deployment (serve/memory.MemoryActor, a MemoryService) seen as an
    ``api.backend.MemoryBackend``. ``configured``: the config's memories (the names the
    deployment was built with) where the caller knows them: a name outside them is 404 at
    once, and ``names()`` needs no call."""

    def __init__(self, handle, configured: dict[str, dict] | None = None):
        self._handle = handle
        self._configured = configured
        self._open = False  # the deployment has answered once: every memory is open
        self._probe: asyncio.Future | None = None  # the one call that asks, shared by the waiting callers

    async def names(self) -> dict[str, dict]:
        if self._configured is not None:
            return dict(self._configured)
        return await call(self._handle.names.remote(), MEMORY)

    async def _opened(self, name: str) -> None:
        """NotFound for a memory that is not configured; MemoryLoading (503, Retry-After)
        for one the deployment has not opened yet."""
        if self._configured is not None and name not in self._configured:
            raise NotFound(f"memory '{name}' does not exist")
        if self._open:
            return
        if self._probe is None or (self._probe.done() and (self._probe.cancelled() or self._probe.exception())):
            self._probe = asyncio.ensure_future(call(self._handle.names.remote(), MEMORY))
        try:  # shielded: a caller that gives up leaves the probe to the next one
            await asyncio.wait_for(asyncio.shield(self._probe), OPEN_WAIT_S)
        except TimeoutError:
            raise MemoryLoading(f"memory '{name}' is still loading (the memory deployment is opening the "
                                "memories); retry shortly", retry_after=5) from None
        self._open = True

    async def info(self, name: str) -> dict:
        await self._opened(name)
        return await call(self._handle.info.remote(name), MEMORY)

    async def ingest(self, name: str, uploads: list, *, wait: bool = True, owner: str | None = None) -> dict:
        await self._opened(name)
        return await call(self._handle.ingest.remote(name, uploads, wait=wait, owner=owner), MEMORY)

    async def job(self, name: str, job_id: str) -> dict:
        await self._opened(name)
        return await call(self._handle.job.remote(name, job_id), MEMORY)

    async def recall(self, name: str, prompt: str, n: int, mode: str | None = None, *,
                     owner: str | None = None) -> list[dict]:
        await self._opened(name)
        return await call(self._handle.recall.remote(name, prompt, n, mode, owner=owner), MEMORY)

    async def remember(self, name: str, text: str, *, owner: str | None = None) -> dict:
        await self._opened(name)
        return await call(self._handle.remember.remote(name, text, owner=owner), MEMORY)

    async def documents(self, name: str, *, owner: str | None = None) -> list[dict]:
        await self._opened(name)
        return await call(self._handle.documents.remote(name, owner=owner), MEMORY)

    async def delete(self, name: str, document: str, *, owner: str | None = None) -> dict:
        await self._opened(name)
        return await call(self._handle.delete.remote(name, document, owner=owner), MEMORY)

    async def clear(self, name: str) -> dict:
        await self._opened(name)
        return await call(self._handle.clear.remote(name), MEMORY)


class StateHandle:
    """The state deployment (serve/state.StateActor, a StateService) seen as an
    ``api.backend.StateBackend``."""

    def __init__(self, handle):
        self._handle = handle

    async def create(self, owner: str, kind: str, body: dict, *, parent: str | None = None,
                     exclusive: tuple[str, ...] = (), ref: str | None = None) -> dict:
        return await call(self._handle.create.remote(owner, kind, body, parent=parent, exclusive=exclusive, ref=ref),
                          STATE)

    async def update(self, owner: str, kind: str, oid: str, changes: dict, *,
                     only_if: tuple | list | None = None) -> dict:
        return await call(self._handle.update.remote(owner, kind, oid, changes, only_if=only_if), STATE)

    async def delete(self, owner: str, kind: str, oid: str) -> None:
        await call(self._handle.delete.remote(owner, kind, oid), STATE)

    async def get(self, owner: str, kind: str, oid: str) -> dict:
        return await call(self._handle.get.remote(owner, kind, oid), STATE)

    async def chain(self, owner: str, rid: str, limit: int) -> Chain:
        return await call(self._handle.chain.remote(owner, rid, limit), STATE)

    async def parent_of(self, owner: str, kind: str, oid: str) -> str | None:
        return await call(self._handle.parent_of.remote(owner, kind, oid), STATE)

    async def list(self, owner: str, kind: str, *, parent: str | None = None, limit: int = 20,
                   after: str | None = None, before: str | None = None, order: str = "desc") -> dict:
        return await call(self._handle.list.remote(owner, kind, parent=parent, limit=limit, after=after,
                                                   before=before, order=order), STATE)

    async def all(self, owner: str, kind: str, *, parent: str) -> builtins.list[dict]:  # list: the method above
        return await call(self._handle.all.remote(owner, kind, parent=parent), STATE)
