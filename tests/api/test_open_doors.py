"""What an unauthenticated caller could read or make the server do: the API's
description on a secured server, and /ready fanning out to every model on every
call. The real ASGI app over a scripted model (no Ray, no model)."""

import asyncio

from scripted import make_client


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
