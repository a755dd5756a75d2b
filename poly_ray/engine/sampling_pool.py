"""Sampling a step's sequences on all of the engine's threads.

Sampling a 262k vocabulary takes about as long per sequence as a fifth of an
8-sequence decode step, and the decode threads sit idle meanwhile: the sequences
are sampled on all ``threads`` (llama.cpp's sampler releases the GIL). Each run's
draws (one token, or a draft's: ``speculative.verify``) come with the seconds they
took, so the engine can end a request whose grammar has exploded
(``llama_engine.SAMPLE_LIMIT_S``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any


class SamplingPool:
    def __init__(self, threads: int, name: str):
        self._threads = max(1, threads)
        self._pool = ThreadPoolExecutor(threads - 1, thread_name_prefix=f"sample-{name}") if threads > 1 else None

    def sample(self, sample_at: list, draw: Callable[[Any, Any], list[int]]) -> list[tuple[list[int], float]]:
        """``draw(run, indices)`` for each (run, its batch indices), with the seconds it took,
        the runs split over the threads."""

        def some(part):
            out = []
            for run, indices in part:
                start = time.perf_counter()
                out.append((draw(run, indices), time.perf_counter() - start))
            return out

        if self._pool is None or len(sample_at) < 2:
            return some(sample_at)
        size = -(-len(sample_at) // self._threads)
        chunks = [sample_at[i : i + size] for i in range(0, len(sample_at), size)]
        futures = [self._pool.submit(some, chunk) for chunk in chunks[1:]]
        tokens = some(chunks[0])
        for f in futures:
            tokens += f.result()
        return tokens

    def shutdown(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
