"""Timing several engine streams at once, for the engine benches (kv_types.py, speculative.py)."""

from __future__ import annotations

import asyncio
import time

from poly_ray.engine.llama_engine import Engine
from poly_ray.generation import Chunk, Done, GenerationRequest


async def timed(e: Engine, requests: list[GenerationRequest]) -> list[tuple[float, float, int]]:
    """Each request's (first text at, done at, completion tokens), all of them run at once."""
    async def one(request):
        first = None
        async for ev in e.generate(request):
            if isinstance(ev, Chunk) and first is None:
                first = time.perf_counter()
            elif isinstance(ev, Done):
                return first, time.perf_counter(), ev.completion_tokens
    return await asyncio.gather(*(one(r) for r in requests))
