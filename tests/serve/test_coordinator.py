"""The coordinator's figures: every replica's stats summed, task counts kept after a
replica goes (plain Python; the graph with two ingress replicas is in test_cluster)."""

from poly_ray.serve import coordinator
from poly_ray.serve.coordinator import Coordinator, summed


def test_a_models_replicas_are_summed_with_each_ones_own_figures():
    a = {"slots": 4, "active": 1, "kv_cache_tokens": 100, "kv_cache_capacity": 1000, "kv_cache_usage": 0.1,
         "cpu_backend": "zen4", "kv_snapshots": {"saved": 1, "bytes": 10}, "replica": "r1", "node": "n1"}
    b = {"slots": 4, "active": 3, "kv_cache_tokens": 700, "kv_cache_capacity": 1000, "kv_cache_usage": 0.7,
         "cpu_backend": "zen4", "kv_snapshots": {"saved": 2, "bytes": 5}, "replica": "r0", "node": "n2"}
    out = summed([a, b])
    assert (out["slots"], out["active"], out["kv_cache_usage"], out["cpu_backend"]) == (8, 4, 0.4, "zen4")
    assert out["kv_snapshots"] == {"saved": 3, "bytes": 15}
    assert out["replicas"] == 2 and [r["replica"] for r in out["per_replica"]] == ["r0", "r1"]
    assert "replica" not in out and "node" not in out
    assert "cpu_backend" not in summed([a, {**b, "cpu_backend": "haswell"}])  # no one value to show


async def test_task_counts_add_up_across_runners_and_stay_after_one_goes(monkeypatch):
    clock = [0.0]
    monkeypatch.setattr(coordinator.time, "monotonic", lambda: clock[0])
    c = Coordinator(limit=10, per_credential=2)
    await c.report("tasks", "runner", "ingress-1", {"qa": {"requests": 2, "errors": 1}})
    await c.report("tasks", "runner", "ingress-2", {"qa": {"requests": 3, "errors": 0}, "chat": {"requests": 1}})
    await c.report("model", "gemma", "r1", {"slots": 2})
    assert await c.tasks() == {"qa": {"requests": 5, "errors": 1}, "chat": {"requests": 1}}
    assert await c.tasks(exclude="ingress-1") == {"qa": {"requests": 3, "errors": 0}, "chat": {"requests": 1}}
    clock[0] += coordinator.EXPIRE_S - 1
    await c.report("tasks", "runner", "ingress-1", {"qa": {"requests": 4, "errors": 1}})
    clock[0] += 2  # ingress-2 and the model replica have been silent past EXPIRE_S: gone
    assert await c.tasks() == {"qa": {"requests": 7, "errors": 1}, "chat": {"requests": 1}}
    assert await c.models() == {}
