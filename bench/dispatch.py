"""The dispatched llama.cpp build against another build: raw decode speed, interleaved.

Each round runs one child process per Python (each with its own llama-cpp-python
build, e.g. this checkout's .venv and a venv with the old AVX-512 build), in
alternating order, so drift in the machine's load hits both. A child measures,
straight on llama.cpp with 2 threads: one stream through ``Llama.generate``
(top-k/top-p/min-p sampling, 128 tokens), with the CPU time it took per token,
and the raw batched decode of 4 and 8 sequences (bench/concurrency.py). Prints
medians, ranges and ratios. On a machine others load, wall-time tokens/s swing
widely; ``--threads 1`` and the CPU ms per token is the steadier comparison.

    .venv/bin/python bench/dispatch.py --other /path/to/other/venv/bin/python --rounds 5
    .venv/bin/python bench/dispatch.py --other /path/to/other/venv/bin/python --rounds 5 --threads 1
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROMPT = "Once upon a time, in a small village by the sea, there lived"


def child(threads: int, tokens: int) -> dict:
    sys.path.insert(0, str(HERE))
    import llama_cpp
    from benchcfg import gemma_only
    from concurrency import raw_batched

    from poly_ray.engine import backends
    from poly_ray.engine.sources import resolve

    cpu = backends.load()
    cfg, model = gemma_only(threads_per_session=threads)
    path = str(resolve("gemma", model, cfg.cache_path))
    llm = llama_cpp.Llama(path, n_ctx=1024, n_threads=threads, n_threads_batch=threads, verbose=False)
    llm.set_seed(7)
    prompt = llm.tokenize(PROMPT.encode(), add_bos=True)
    n, first, cpu0 = 0, None, time.process_time()
    for _ in llm.generate(prompt, top_k=40, top_p=0.95, min_p=0.05, temp=0.8, repeat_penalty=1.0):
        now = time.perf_counter()
        first = first or now
        n += 1
        if n >= tokens:
            break
    single = (n - 1) / (time.perf_counter() - first)
    # CPU seconds this process spent per token: unlike wall time, others' load on a
    # shared machine hardly moves it (with 1 thread: no thread spins waiting for another).
    cpu_ms = (time.process_time() - cpu0) / n * 1000
    llm.close()
    raw = raw_batched(path, threads, steps=48)
    return {"variant": cpu.variant, "single": single, "cpu_ms": cpu_ms, "batched4": raw[4], "batched8": raw[8]}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--other", required=False, help="the Python of the build to compare with")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--child", action="store_true")
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.threads, args.tokens)))
        return 0
    pythons = {"this": sys.executable, "other": args.other}
    env = {**os.environ, "PYTHONPATH": str(HERE.parent)}  # this checkout's poly_ray for both
    rows: dict[str, list[dict]] = {k: [] for k in pythons}
    for rnd in range(args.rounds):
        for name in (list(pythons) if rnd % 2 == 0 else list(reversed(pythons))):
            out = subprocess.run([pythons[name], __file__, "--child", "--threads", str(args.threads),
                                  "--tokens", str(args.tokens)], env=env, check=True, capture_output=True, text=True)
            rows[name].append(json.loads(out.stdout.strip().splitlines()[-1]))
            r = rows[name][-1]
            print(f"round {rnd + 1}: {name:5} ({r['variant']}): single {r['single']:.1f}, "
                  f"batched 4: {r['batched4']:.0f}, batched 8: {r['batched8']:.0f} tok/s", flush=True)
    print(f"\n{args.rounds} rounds, {args.threads} threads; this = {pythons['this']} ({rows['this'][0]['variant']}), "
          f"other = {pythons['other']} ({rows['other'][0]['variant']})\n")
    print("| tokens/s | this build | other build | this/other (median of rounds) |")
    print("|---|---|---|---|")
    for key, label in (("single", "one stream, Llama.generate"), ("batched4", "raw batched, 4 seqs"),
                       ("batched8", "raw batched, 8 seqs"), ("cpu_ms", "one stream: CPU ms per token (lower is faster)")):
        a, b = [r[key] for r in rows["this"]], [r[key] for r in rows["other"]]
        ratios = [x / y for x, y in zip(a, b)]
        print(f"| {label} | {statistics.median(a):.1f} ({min(a):.1f}-{max(a):.1f}) "
              f"| {statistics.median(b):.1f} ({min(b):.1f}-{max(b):.1f}) "
              f"| {statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f}) |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
