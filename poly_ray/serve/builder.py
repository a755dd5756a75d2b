"""The one place where deployment classes meet their options: the graph of a config.

Ingress → TaskOrchestrator → one LlamaModel deployment per configured model
(the ingress also calls the models directly, for tasks without a memory),
and, with memories configured, a MemoryActor that the ingress and the
orchestrator both call (it embeds through the embedding models' deployments),
a StateActor holding the stateful APIs' store (one writer of its SQLite file),
the KV snapshots' Vault (their durable copy, which replicas on any node restore from),
and the Coordinator, which holds the limits across ingress replicas and the
figures every replica reports.
"""

from __future__ import annotations

from ray import serve
from ray.serve import Application

from poly_ray.config import Config, state_path
from poly_ray.engine.kv_snapshots import Vault
from poly_ray.memory.service import bounds
from poly_ray.state.store import Quota

from .coordinator import Coordinator
from .ingress import Ingress
from .memory import MemoryActor
from .model import LlamaModel
from .options import (
    COORDINATOR_OPTIONS,
    MEMORY_OPTIONS,
    PLACEMENT_KEYS,
    STATE_OPTIONS,
    VAULT_OPTIONS,
    ingress_options,
    model_options,
    tier_options,
)
from .orchestrator import TaskOrchestrator
from .state import StateActor


def build_app(cfg: Config) -> Application:
    # serve.deployment(**options)(cls): Ray types serve.deployment(cls, ...) as the decorator
    # it returns without a class, so the bound form is spelled as the decorator's call.
    # The deployments' arguments leave placement out: a new replica count is then
    # a change of options only, which Serve applies by scaling, without restarting
    # the replicas that run.
    model_configs = {name: m.model_dump(mode="json", exclude=PLACEMENT_KEYS) for name, m in cfg.models.items()}
    coordinator = serve.deployment(name="coordinator", **COORDINATOR_OPTIONS)(Coordinator).bind(
        cfg.max_concurrent, cfg.max_streams_per_credential)
    # The KV snapshots' durable copy, which every model replica on any node reads.
    budgets = {name: m.kv_snapshot_bytes for name, m in cfg.models.items() if m.kv_snapshot_bytes}
    vault = serve.deployment(name="kv-vault", **VAULT_OPTIONS)(Vault).bind(str(state_path(cfg, "kv")), budgets) \
        if budgets else None
    models = {
        name: serve.deployment(name=f"model-{name}", **model_options(m))(LlamaModel).bind(
            name, model_configs[name], str(cfg.cache_path), coordinator, vault if name in budgets else None
        )
        for name, m in cfg.models.items()
    }
    memory = None
    if cfg.memories:
        memory = serve.deployment(name="memory", **MEMORY_OPTIONS)(MemoryActor).bind(
            {name: m.model_dump(mode="json") for name, m in cfg.memories.items()},
            model_configs,
            {m.embedding_model: models[m.embedding_model] for m in cfg.memories.values()},
            str(cfg.cache_path),
            str(state_path(cfg, "jobs")),
            bounds(cfg),
        )
    orchestrator = serve.deployment(name="orchestrator", **tier_options(cfg.orchestrator))(TaskOrchestrator).bind(
        {name: t.model_dump(mode="json") for name, t in cfg.tasks.items()}, model_configs, models, memory,
        log_prompts=cfg.log_prompts, schema_limits=cfg.schema_limits.model_dump(mode="json"),
        coordinator=coordinator,
    )
    state = serve.deployment(name="state", **STATE_OPTIONS)(StateActor).bind(
        str(state_path(cfg, "state")), Quota(cfg.max_stored_objects, cfg.max_stored_bytes))
    ingress = serve.deployment(name="ingress", **ingress_options(cfg))(serve.ingress()(Ingress))
    # The ingress calls the models itself for tasks without a memory (serve/ingress.py).
    return ingress.bind(orchestrator, coordinator, cfg.model_dump(mode="json"), memory, state, models)
