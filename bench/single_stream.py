"""Single-stream speed: the served /live endpoint against raw in-process llama-cpp-python.

One run, same model, prompt, sampling, seed, thread count and token count for
both. Prints decode tokens/s, time to first token (p50) and served/raw ratios.

    make bench            # or: .venv/bin/python bench/single_stream.py --runs 5 --tokens 128
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import httpx

PROMPT = "Once upon a time, in a small village by the sea, there lived"


def raw_run(llm, tokens: int, seed: int) -> tuple[float, float, int]:
    """(ttft_s, decode tokens/s, tokens) for one generation straight on llama-cpp-python."""
    import llama_cpp

    llm.reset()  # no prefix reuse: the served side evaluates its prompt too
    llm.set_seed(seed)
    start = time.perf_counter()
    prompt = llm.tokenize(PROMPT.encode(), add_bos=True)
    first = last = None
    n = 0
    for tok in llm.generate(prompt, top_k=40, top_p=0.95, min_p=0.05, temp=0.8, repeat_penalty=1.1):
        now = time.perf_counter()
        if llama_cpp.llama_vocab_is_eog(llm._model.vocab, tok):
            break
        llm.detokenize([tok])
        first = first or now
        last = now
        n += 1
        if n >= tokens:
            break
    return first - start, (n - 1) / (last - first), n


def served_run(client: httpx.Client, url: str, tokens: int, seed: int) -> tuple[float, float, int]:
    """(ttft_s, decode tokens/s, tokens) for one request to /live, timed at the client."""
    params = {"prompt": PROMPT, "max_tokens": tokens, "seed": seed, "temperature": 0.8}
    start = time.perf_counter()
    first = last = None
    n = 0
    with client.stream("GET", url, params=params) as resp:
        resp.raise_for_status()
        event = None
        for line in resp.iter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: ") and event is None:
                now = time.perf_counter()
                first = first or now
                last = now
            elif line.startswith("data: ") and event == "done":
                import json

                n = json.loads(line[6:])["usage"]["completion_tokens"]
            elif line == "":
                event = None if event != "done" else event
    return first - start, (n - 1) / (last - first), n


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--interval-ms", type=float, default=None, help="the model's stream_interval_ms")
    args = ap.parse_args()

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    # Ray starts its workers (the model replica among them) at niceness 15; the
    # reference here runs at 0, and on a shared machine the other load would take
    # the served graph's CPU first. Same priority for both.
    os.environ.setdefault("RAY_worker_niceness", "0")
    import llama_cpp
    import ray
    from benchcfg import gemma_only
    from ray import serve

    from poly_ray.engine.sources import resolve
    from poly_ray.serve.builder import build_app

    updates = {"threads_per_session": args.threads}
    if args.interval_ms is not None:
        updates["stream_interval_ms"] = args.interval_ms
    cfg, model = gemma_only(**updates)
    path = resolve("gemma", model, cfg.cache_path)

    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": 8123})
    serve.run(build_app(cfg), name="bench", route_prefix="/")
    url = "http://127.0.0.1:8123/v1/task/complete/live"

    from poly_ray.engine import backends

    backends.load()
    llm = llama_cpp.Llama(
        str(path), n_ctx=model.context_size, n_threads=args.threads, n_threads_batch=args.threads,
        n_batch=model.batch_size, verbose=False,
    )
    raw, served = [], []
    with httpx.Client(timeout=120) as client:
        served_run(client, url, 8, 0)  # warm-up both paths
        raw_run(llm, 8, 0)
        for i in range(args.runs):  # interleaved, so drift in machine load hits both
            raw.append(raw_run(llm, args.tokens, 1000 + i))
            served.append(served_run(client, url, args.tokens, 1000 + i))
    serve.shutdown()
    ray.shutdown()

    def p50(rows, i):
        return statistics.median(r[i] for r in rows)

    r_ttft, s_ttft = p50(raw, 0) * 1000, p50(served, 0) * 1000
    r_tps, s_tps = p50(raw, 1), p50(served, 1)
    print(f"model {path.name}, {args.threads} threads, stream_interval_ms {model.stream_interval_ms},  prompt {len(PROMPT)} chars, "
          f"{args.tokens} tokens, {args.runs} runs each (p50)")
    print(f"{'':24}{'raw llama-cpp-python':>22}{'served /live':>16}{'served/raw':>12}")
    print(f"{'decode tokens/s':24}{r_tps:>22.1f}{s_tps:>16.1f}{s_tps / r_tps:>12.3f}")
    diff = f"{s_ttft - r_ttft:+.1f} ms"
    print(f"{'time to first token ms':24}{r_ttft:>22.1f}{s_ttft:>16.1f}{diff:>12}")
    print(f"tokens per run: raw {[r[2] for r in raw]}, served {[s[2] for s in served]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
