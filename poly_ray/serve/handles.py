"""Calls through DeploymentHandles, with Ray's failures turned into PolyErrors."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable
from contextlib import contextmanager

from ray.exceptions import RayTaskError
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError

from ..errors import Busy, PolyError


@contextmanager
def _translated():
    try:
        yield
    except PolyError:
        raise
    except RayTaskError as e:
        # An error raised in another replica arrives wrapped; its cause is ours.
        if isinstance(e.cause, PolyError):
            raise e.cause from None
        raise
    except BackPressureError:
        raise Busy("the server is busy: too many requests are waiting; retry shortly", retry_after=1) from None
    except DeploymentUnavailableError:
        raise Busy("the model is not available right now; retry shortly", retry_after=5) from None


async def call(response: Awaitable):
    with _translated():
        return await response


async def stream(response) -> AsyncIterator:
    """Iterate a streaming handle response; closing this iterator cancels the remote call."""
    finished = False
    try:
        with _translated():
            async for item in response:
                yield item
        finished = True
    finally:
        if not finished:
            response.cancel()


class ModelHandle:
    """A model deployment seen as a ``tasks.ModelClient``."""

    def __init__(self, handle):
        self._handle = handle
        self._streaming = handle.options(stream=True)

    def generate(self, request):
        return stream(self._streaming.generate.remote(request))

    async def embed(self, texts):
        return await call(self._handle.embed.remote(texts))

    async def tokenize(self, text):
        return await call(self._handle.tokenize.remote(text))

    async def chat_template(self):
        return await call(self._handle.chat_template.remote())


class MemoryHandle:
    """The memory deployment seen as a ``memories.Memories`` (every method async)."""

    def __init__(self, handle):
        self._handle = handle

    def __getattr__(self, method: str):
        async def remote(*args, **kwargs):
            return await call(self._handle.call.remote(method, *args, **kwargs))

        return remote
