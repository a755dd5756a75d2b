"""TaskOrchestrator: the TaskRunner as a deployment, over handles to the model and
memory deployments. It runs the tasks with a memory (recall, stored prompts); the
ingress runs the others itself (serve/ingress.py)."""

from __future__ import annotations

from poly_ray.config import ModelConfig, TaskConfig
from poly_ray.config.schema import SchemaLimits
from poly_ray.tasks.runner import TaskRunner

from .coordinator import Reporter
from .handles import MemoryHandle, ModelHandle
from .ops import RayMetrics, route_logs_to_serve


class TaskOrchestrator(TaskRunner):
    def __init__(self, tasks: dict, models: dict, handles: dict, memory=None, *, log_prompts: bool,
                 schema_limits: dict, coordinator=None):
        """``schema_limits``: the config's, which the tasks' biasers and tools are held to
        here as in the ingress (a TaskConfig carries no caps of its own). ``coordinator``:
        where this replica's per-task counts are reported."""
        route_logs_to_serve()
        model_configs = {name: ModelConfig.model_validate(m) for name, m in models.items()}
        super().__init__(
            {name: TaskConfig.model_validate(t) for name, t in tasks.items()},
            model_configs,
            {name: ModelHandle(h, name, model_configs[name].cache_affinity) for name, h in handles.items()},
            MemoryHandle(memory) if memory is not None else None,
            sinks=(RayMetrics(),),
            log_prompts=log_prompts,
            caps=SchemaLimits.model_validate(schema_limits).caps(),
        )
        if coordinator is not None:
            Reporter(coordinator, "tasks", "runner", self.tally.snapshot)
