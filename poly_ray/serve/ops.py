"""Operations glue for the deployments: Prometheus metrics through Ray, and logs
into Serve's replica log files.

Ray's metrics agent on every node exports them (``ray_`` prefix) at its metrics
export port, beside Ray's own; ``ray.serve.metrics`` adds the deployment,
replica and application tags.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import ray
from ray import serve
from ray.serve import metrics
from ray.serve.exceptions import RayServeException

from poly_ray.tasks.observe import Outcome

log = logging.getLogger(__name__)

_TAGS = ("task", "model")
# Seconds. Time to first token spans a cached prompt (tens of ms) to a long cold one on a CPU (seconds).
_TTFT_BUCKETS: list[float] = [0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60]
_PER_TOKEN_BUCKETS: list[float] = [0.005, 0.01, 0.02, 0.04, 0.08, 0.15, 0.3, 0.6, 1.2]
_TOKENS_PER_S_BUCKETS: list[float] = [1, 2, 5, 10, 20, 40, 80, 160, 320, 640]


class RayMetrics:
    """A sink for ``observe``: each generation's outcome as counters and histograms."""

    def __init__(self):
        self.requests = metrics.Counter(
            "poly_requests", "Generation requests that ended, by status (ok, an error code, cancelled).",
            tag_keys=(*_TAGS, "status"))  # type: ignore[arg-type]  # Ray types tag_keys as a 1-tuple
        self.errors = metrics.Counter("poly_request_errors", "Generation requests that failed, by error code.",
                                      tag_keys=(*_TAGS, "code"))  # type: ignore[arg-type]  # as above
        self.prompt_tokens = metrics.Counter("poly_prompt_tokens", "Prompt tokens of generation requests.",
                                             tag_keys=_TAGS)  # type: ignore[arg-type]  # as above
        self.generated_tokens = metrics.Counter(
            "poly_generated_tokens", "Tokens generated.", tag_keys=_TAGS)  # type: ignore[arg-type]  # as above
        self.ttft = metrics.Histogram("poly_time_to_first_token_seconds",
                                      "From the orchestrator's call to the first text.",
                                      boundaries=_TTFT_BUCKETS, tag_keys=_TAGS)  # type: ignore[arg-type]
        self.per_token = metrics.Histogram("poly_time_per_output_token_seconds",
                                           "Decode time per generated token after the first, per request.",
                                           boundaries=_PER_TOKEN_BUCKETS, tag_keys=_TAGS)  # type: ignore[arg-type]
        self.tokens_per_s = metrics.Histogram(
            "poly_decode_tokens_per_second", "Decode speed, per request.",
            boundaries=_TOKENS_PER_S_BUCKETS, tag_keys=_TAGS)  # type: ignore[arg-type]

    def record(self, o: Outcome) -> None:
        tags = {"task": o.task, "model": o.model}
        self.requests.inc(tags={**tags, "status": o.status})
        if o.status not in ("ok", "cancelled"):
            self.errors.inc(tags={**tags, "code": o.status})
        if o.prompt_tokens:
            self.prompt_tokens.inc(o.prompt_tokens, tags=tags)
        if o.completion_tokens:
            self.generated_tokens.inc(o.completion_tokens, tags=tags)
        if o.ttft_s is not None:
            self.ttft.observe(o.ttft_s, tags=tags)
        if o.time_per_token_s is not None:
            self.per_token.observe(o.time_per_token_s, tags=tags)
        if o.tokens_per_s is not None:
            self.tokens_per_s.observe(o.tokens_per_s, tags=tags)


class EngineGauges:
    """A model replica's engine state as gauges, sampled every ``period`` seconds on a
    thread of its own (the engine's counters change on its worker thread)."""

    def __init__(self, model: str, stats: Callable[[], dict], period: float = 1.0):
        tags = ("model",)
        self._gauges = {
            "slots": metrics.Gauge("poly_slots", "Sequences a replica generates at once.", tag_keys=tags),
            "active": metrics.Gauge("poly_active_slots", "StreamLimits generating now.", tag_keys=tags),
            "waiting": metrics.Gauge("poly_queued_requests", "Requests waiting for a slot.", tag_keys=tags),
            "kv_cache_usage": metrics.Gauge(
                "poly_kv_cache_usage", "Share of the KV cache that the slots' tokens hold (0-1).", tag_keys=tags),
        }
        self._model, self._stats, self._period = model, stats, period
        threading.Thread(target=self._run, name=f"gauges-{model}", daemon=True).start()

    def sample(self) -> None:
        stats = self._stats()
        for key, gauge in self._gauges.items():
            if key in stats:
                gauge.set(stats[key], tags={"model": self._model})

    def _run(self) -> None:
        while True:
            try:
                self.sample()
            except Exception:  # a gauge that fails must not take the replica down
                log.exception("model %s: sampling the engine's gauges failed", self._model)
            time.sleep(self._period)


class _ToServe(logging.Handler):
    """Hands a record to Serve's logger, whose handlers write the replica's log file
    (with the replica and request ids) and apply Serve's log level."""

    def emit(self, record: logging.LogRecord) -> None:
        serve_logger = logging.getLogger("ray.serve")
        if serve_logger.isEnabledFor(record.levelno):
            serve_logger.handle(record)


def replica() -> dict:
    """This replica and its node; nothing when the code runs outside Serve (tests)."""
    try:
        return {"replica": serve.get_replica_context().replica_id.unique_id, "node": ray.get_runtime_context().get_node_id()}
    except RayServeException:
        return {}


def route_logs_to_serve() -> None:
    """Send poly_ray's log records (requests, refusals, model loading) to the replica's
    Serve log: Serve configures only its own logger, so INFO from others is lost.
    Outside a replica (tests) logging is left as it is."""
    if not replica():
        return
    ours = logging.getLogger("poly_ray")
    if not any(isinstance(h, _ToServe) for h in ours.handlers):
        ours.addHandler(_ToServe())
        ours.setLevel(logging.INFO)
        ours.propagate = False
