"""Ray Serve deployment options computed from the config (no Ray import)."""

from __future__ import annotations

from typing import Any

from poly_ray.config import Autoscaling, Config, ModelConfig
from poly_ray.config.tiers import Tier

# A replica that Serve stops (scaling down, a new version) takes no new requests
# and lets the ones in flight finish for up to this long; streams still running
# after it end with a replica_lost error event.
DRAIN_S = 60

# Model keys that only say where and how many replicas run (the options below).
PLACEMENT_KEYS = {"gpus", "cpus", "replicas", "autoscaling"}

# Room above the generation queue for quick calls (tokenize, embed, stats), so
# they are not refused while generations wait.
_QUICK_CALLS = 8


# The deployments a streamed token passes through (models, orchestrator, ingress) run
# their code on the replica's own event loop instead of a thread of its own, as Serve's
# RAY_SERVE_THROUGHPUT_OPTIMIZED does: a hand-off between threads fewer for every
# message, which on 2 cores is CPU the decode threads get back. Their code keeps its
# loop free (a model generates on its engine's thread; schema conversion, token counts
# and documents go to threads), so Serve's own work there is not held up.
TOKEN_PATH = {"runtime_env": {"env_vars": {"RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0"}}}


def model_options(model: ModelConfig) -> dict[str, Any]:
    """Options for ``serve.deployment`` of one model: GPU share, replicas, queue bounds."""
    options: dict[str, Any] = {
        "ray_actor_options": {"num_cpus": model.cpus, "num_gpus": model.gpus, **TOKEN_PATH},
        # The engine generates in `slots` sequences and holds max_queued_requests
        # waiting; past that it answers Busy (503) itself, clearer than Ray's queue.
        "max_ongoing_requests": model.slots + model.max_queued_requests + _QUICK_CALLS,
        # Requests waiting in callers for a replica. Ray counts a request here
        # for the moment it takes to pick a replica too, so a bound as tight as
        # the engine's refuses simultaneous requests that would have fit.
        "max_queued_requests": max(64, 4 * model.max_queued_requests),
        # A replica whose node is gone can still answer Serve's probes from its orphaned
        # process while its calls fail; the controller stops it at its first missed check,
        # within about 20 s, inside the ~30 s that a generation is retried (serve/handles.py).
        "health_check_period_s": 5,
        "health_check_timeout_s": 15,
        "graceful_shutdown_timeout_s": DRAIN_S,
    }
    if model.cache_affinity:
        # A chain's replica is preferred while it carries at most `slots` requests more
        # than the lightest one (serve/routing.py).
        options["request_router_config"] = {"request_router_class": "poly_ray.serve.routing.ChainRouter",
                                             "request_router_kwargs": {"max_imbalance": model.slots}}
    return {**options, **_scaling(model.replicas, model.autoscaling)}


def _scaling(replicas: int | None, a: Autoscaling | None) -> dict[str, Any]:
    if a is None:
        return {"num_replicas": replicas or 1}
    return {"autoscaling_config": {
        "min_replicas": a.min_replicas,
        "max_replicas": a.max_replicas,
        "initial_replicas": a.initial_replicas,
        "target_ongoing_requests": a.target_ongoing_requests,
        "upscale_delay_s": a.upscale_delay_s,
        "downscale_delay_s": a.downscale_delay_s,
        "look_back_period_s": a.look_back_period_s,
    }}


# The head node, which every Ray cluster has (a laptop's one node is its head);
# Serve places its own controller there the same way. The deployments below run
# there: they ask for no CPU, and Ray would otherwise put them on any node, also
# one that the cluster's autoscaler takes away when its models are idle.
ON_HEAD = {"node:__internal_head__": 0.001}

# Calls waiting for the orchestrator, memory, state, coordinator or vault replica in
# their callers (the ingress): past it the caller gets BackPressure, a 503, instead of
# an unbounded queue in the ingress's memory (a fan-out of one request once queued
# millions of calls).
CALLERS_QUEUE = 1000


def tier_options(tier: Tier) -> dict[str, Any]:
    """The ingress or the orchestrator: they only pass messages, so they take no whole
    CPU (a 2-core laptop places the graph next to a model). One replica runs on the
    head; more run on any node (or those with the tier's ``resources``), which Serve
    spreads them over."""
    resources = tier.resources or (ON_HEAD if tier.most == 1 else {})
    return {
        "ray_actor_options": {"num_cpus": 0, **({"resources": resources} if resources else {}), **TOKEN_PATH},
        "max_ongoing_requests": 1000,
        # Streams pass through: let them drain as long as the models do.
        "graceful_shutdown_timeout_s": DRAIN_S,
        "max_queued_requests": CALLERS_QUEUE,
        **_scaling(tier.replicas, tier.autoscaling),
    }


def ingress_options(cfg: Config) -> dict[str, Any]:
    """The ingress: ``ingress_max_ongoing`` requests at once, ``ingress_max_queued`` more
    waiting in Serve's queue; beyond, Serve's proxy answers 503 with Retry-After at once
    instead of letting requests pile up in memory."""
    return {
        **tier_options(cfg.ingress),
        "max_ongoing_requests": cfg.ingress_max_ongoing,
        "max_queued_requests": cfg.ingress_max_queued,
        "backpressure_config": {"status_code": 503, "retry_after_s": 1},
    }


# The coordinator: the one book of the limits that hold across ingress replicas, and
# the figures every replica reports for /v1/stats. One replica, on the head.
COORDINATOR_OPTIONS: dict[str, Any] = {
    "ray_actor_options": {"num_cpus": 0, "resources": ON_HEAD},
    "num_replicas": 1,
    "max_ongoing_requests": 1000,
    "max_queued_requests": CALLERS_QUEUE,
    # Every replica reports each second: an access-log line per call would drown the log.
    "logging_config": {"enable_access_log": False},
}


# The memory actor: one replica, because an embedded store's files have one
# owner, and on the head, where its files stay when worker nodes come and go.
# It reads documents and runs BM25; the embedding happens in the model deployments.
MEMORY_OPTIONS: dict[str, Any] = {
    "ray_actor_options": {"num_cpus": 0, "resources": ON_HEAD},
    "num_replicas": 1,
    "max_ongoing_requests": 100,
    "max_queued_requests": CALLERS_QUEUE,
}

# The state store: one replica, the SQLite file's one writer; on the head with
# the memory actor, for the same reason. Its calls are short database reads and writes.
STATE_OPTIONS: dict[str, Any] = {
    "ray_actor_options": {"num_cpus": 0, "resources": ON_HEAD},
    "num_replicas": 1,
    "max_ongoing_requests": 200,
    "max_queued_requests": CALLERS_QUEUE,
}


# The KV snapshots' vault: one replica on the head, where state_dir stays; its calls
# carry a snapshot's bytes (megabytes), a few at a time.
VAULT_OPTIONS: dict[str, Any] = {
    "ray_actor_options": {"num_cpus": 0, "resources": ON_HEAD},
    "num_replicas": 1,
    "max_ongoing_requests": 16,
    "max_queued_requests": CALLERS_QUEUE,
}
