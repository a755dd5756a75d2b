"""Sampling a step's sequences on all of the engine's threads.

Sampling a 262k vocabulary takes about as long per sequence as a fifth of an
8-sequence decode step, and the decode threads sit idle meanwhile: the sequences
are sampled on all ``threads`` (llama.cpp's sampler releases the GIL). Each token
comes with the seconds its sampling took, so the engine can end a request whose
grammar has exploded (``llama_engine.SAMPLE_LIMIT_S``).
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor


class SamplingPool:
    def __init__(self, threads: int, name: str):
        self._threads = max(1, threads)
        self._pool = ThreadPoolExecutor(threads - 1, thread_name_prefix=f"sample-{name}") if threads > 1 else None

    def sample(self, ctx, sample_at: list) -> list[tuple[int, float]]:
        """One (token, seconds) per (run, batch index), the runs split over the threads."""

        def some(part):
            out = []
            for run, index in part:
                start = time.perf_counter()
                out.append((run.sampler.sample(ctx, index), time.perf_counter() - start))
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
