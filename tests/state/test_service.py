"""The async face of the store, and the state deployment's class built without
Ray (its replica runs the same code): the file under state_dir, the restart
sweep on open, a Page crossing as its list body."""

import asyncio

import pytest

from poly_ray.config import Config, state_path
from poly_ray.errors import NotFound
from poly_ray.serve.state import StateActor
from poly_ray.state.service import StateService
from poly_ray.state.store import RESTART_REASON, Store


def test_service_runs_the_store_and_only_its_crud(tmp_path):
    """Only the store's CRUD crosses: nothing else of the store is reachable by name."""
    service = StateService(Store(tmp_path / "s.sqlite3"))

    async def go():
        await service.create("a", "response", {"id": "resp_1", "status": "completed"})
        assert (await service.get("a", "response", "resp_1"))["id"] == "resp_1"
        page = await service.list("a", "response")
        assert page["object"] == "list" and page["first_id"] == "resp_1" and not page["has_more"]
        with pytest.raises(NotFound):
            await service.get("b", "response", "resp_1")
        assert not hasattr(service, "call") and not hasattr(service, "_db")

    asyncio.run(go())
    service.close()


def test_actor_opens_the_file_under_state_dir_and_sweeps(tmp_path):
    config = str(state_path(Config(state_dir=tmp_path), "state"))
    first = StateActor(config)
    asyncio.run(first.create("a", "thread", {"id": "thread_1"}))
    asyncio.run(first.create("a", "run", {"id": "run_1", "status": "in_progress"}, parent="thread_1"))
    path = first.store.path
    first.close()
    assert path == tmp_path / "state" / "state.sqlite3"
    again = StateActor(config)
    run = asyncio.run(again.get("a", "run", "run_1"))
    assert run["status"] == "failed" and run["last_error"]["message"] == RESTART_REASON
    again.close()
