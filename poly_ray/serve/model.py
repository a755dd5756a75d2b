"""LlamaModel: one deployment per configured model, adapting Ray to the Engine."""

from __future__ import annotations

import asyncio
import logging
import tempfile
import time
from concurrent import futures
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ray import serve

from poly_ray.config import ModelConfig
from poly_ray.engine.embedder import EmbeddingEngine, is_embedding_model, model_metadata
from poly_ray.engine.embedding_gate import EmbeddingGate
from poly_ray.engine.kv_types import KvCacheTypes
from poly_ray.engine.llama_engine import Engine
from poly_ray.engine.sources import resolve
from poly_ray.engine.speculative import Speculation
from poly_ray.errors import ModelError
from poly_ray.generation import GenerationRequest

from .coordinator import Reporter
from .ops import EngineGauges, replica, route_logs_to_serve

log = logging.getLogger(__name__)
# Chains of turns (chat sessions, Responses chains, threads, cache ids) a replica is marked
# as holding, least recently used first out; beyond its slots their cells may be gone,
# but affinity costs nothing.
CHAINS_PER_REPLICA = 256
# A decoding step (one batch, then a token per stream) takes well under a second for a small
# model and seconds for a 70B one on CPU; one running this long will not end.
STUCK_STEP_S = 300
# Seconds a stopping replica spends handing its chains to the vault, and one send's limit.
HAND_OFF_S, SEND_S = 10.0, 30.0


class LlamaModel:
    def __init__(self, name: str, model: dict, cache_path: str, coordinator=None, vault=None):
        """``vault``: the KV snapshots' durable copy on the head (none: no snapshots); the
        replica keeps those it uses in a temporary folder of its own. ``coordinator``:
        where this replica's figures are reported (/v1/stats)."""
        route_logs_to_serve()
        cfg = ModelConfig.model_validate(model)
        path = resolve(name, cfg, Path(cache_path))
        log.info("model %s: loading %s", name, path)
        adapters = [(str(a.path), a.scale) for a in cfg.lora_adapters]
        self._vault, kv_path = None, None
        if vault is not None:
            self._kv_cache = tempfile.TemporaryDirectory(prefix=f"poly-ray-kv-{name}-")
            kv_path, self._vault = self._kv_cache.name, VaultHandle(vault, name)
        self.engine: Engine | EmbeddingEngine
        if is_embedding_model(model_metadata(path)):
            self.engine = EmbeddingEngine(path, context_size=cfg.context_size, threads=cfg.threads_per_session,
                                          gpu_layers=cfg.n_gpu_layers, name=name, lora_adapters=adapters)
        else:
            self.engine = Engine(
                path,
                context_size=cfg.context_size,
                slots=cfg.slots,
                threads=cfg.threads_per_session,
                batch_size=cfg.batch_size,
                gpu_layers=cfg.n_gpu_layers,
                max_queued=cfg.max_queued_requests,
                flush_interval=cfg.stream_interval_ms / 1000,
                messages_per_step=cfg.stream_messages_per_step,
                name=name,
                snapshot_dir=kv_path if cfg.kv_snapshot_bytes else None,
                snapshot_bytes=cfg.kv_snapshot_bytes,
                lora_adapters=adapters,
                shared_snapshots=self._vault,
                kv_types=KvCacheTypes(cfg.cache_type_k, cfg.cache_type_v, cfg.flash_attn),
                speculation=Speculation(**cfg.speculative.model_dump()) if cfg.speculative else None,
            )
        # Not set: embedding models embed; a generative model only when a memory names it (config loading).
        serves = cfg.embeddings if cfg.embeddings is not None else isinstance(self.engine, EmbeddingEngine)
        self._embedding = EmbeddingGate(name, self.engine.embed, serves=serves, max_inputs=cfg.max_embedding_inputs,
                                        max_tokens=cfg.max_embedding_tokens, max_queued=cfg.max_queued_requests)
        self._gauges = EngineGauges(name, self.engine.stats)
        self._where = replica()
        if coordinator is not None:
            Reporter(coordinator, "model", name, self.figures)
        log.info("model %s: loaded", name)

    async def generate(self, request: GenerationRequest):
        if replica() and (chain := serve.get_multiplexed_model_id()):  # none with cache_affinity off
            await self._chain(chain)
        async for event in self.engine.generate(request):
            yield event

    @serve.multiplexed(max_num_models_per_replica=CHAINS_PER_REPLICA)
    async def _chain(self, key: str) -> str:
        """Marks a chain of turns as held here, so Serve routes its next turns here.
        Nothing is loaded: the chain's cells are already in the engine's slots."""
        return key

    async def embed(self, texts: list[str]) -> list[list[float]]:
        return await self._embedding.embed(texts)

    async def tokenize(self, text: str) -> list[dict]:
        ids = self.engine.tokenize(text, add_bos=False)
        return [{"id": t, "text": self.engine.detokenize([t])} for t in ids]

    async def count_tokens(self, texts: list[str]) -> int:
        # Off the loop: up to max_embedding_chars of text, and the engine's slots go on decoding.
        return await asyncio.to_thread(lambda: sum(len(self.engine.tokenize(t, add_bos=False)) for t in texts))

    async def chat_template(self) -> dict | None:
        return self.engine.chat_template()

    async def stats(self) -> dict:
        return self.figures()

    def figures(self) -> dict:
        """The engine's stats, and which replica and node they are of (a call reaches one replica)."""
        return {**self.engine.stats(), **self._embedding.stats(), **self._where}

    def __del__(self):
        """Serve calls this when it stops the replica, once its requests have drained (a
        scale-down, a new version): the chains whose cells are here go to the vault, so
        that their next turns, elsewhere, restore them instead of reading them again."""
        vault = getattr(self, "_vault", None)
        if vault is None or not isinstance(self.engine, Engine) or _application_deleted():
            return
        # Bounded: when the whole application is deleted, the vault may be stopping too,
        # and Serve waits for this replica only DRAIN_S.
        deadline = time.monotonic() + HAND_OFF_S
        sent = self.engine.hand_off(timeout=HAND_OFF_S)
        delivered = vault.flush(timeout=max(0.0, deadline - time.monotonic()))
        log.info("model %s: %d chains handed to the KV snapshot vault%s", self.engine.name, sent,
                 "" if delivered else f" (not all sent within {HAND_OFF_S:.0f} s)")

    def check_health(self) -> None:
        """Serve replaces a replica whose check fails: its engine thread has stopped, or one
        decoding step has run for STUCK_STEP_S (a step is one batch: seconds at most)."""
        if not self.engine.alive:
            raise ModelError(f"model '{self.engine.name}': the engine thread has stopped")
        if (stalled := getattr(self.engine, "stalled_s", 0.0)) > STUCK_STEP_S:
            raise ModelError(f"model '{self.engine.name}': one decoding step has run for {stalled:.0f} s "
                             f"(more than {STUCK_STEP_S} s): the replica is stuck")


def _application_deleted() -> bool:
    """Whether the whole application is being deleted (the vault is stopping too, and
    no replica is left to take the chains over)."""
    try:
        app = serve.get_replica_context().app_name
        status = serve.status().applications.get(app)
        return status is None or status.status == "DELETING"
    except Exception as e:  # no answer: hand off all the same, within HAND_OFF_S
        log.info("cannot ask Serve whether the application is being deleted: %s", e)
        return False


class VaultHandle:
    """The vault deployment (``engine.kv_snapshots.Vault``) as one model's ``SharedSnapshots``."""

    def __init__(self, handle, model: str):
        self._handle, self._model = handle, model
        # One sender: snapshots reach the vault in the order they were saved.
        self._sender = ThreadPoolExecutor(1, thread_name_prefix=f"vault-{model}")
        self._pending: set[futures.Future] = set()

    async def fetch(self, fp: str, key: str) -> tuple[list[int], bytes] | None:
        try:
            return await self._handle.get.remote(self._model, fp, key)
        except Exception as e:  # the prompt is read instead: slower, not wrong
            log.warning("model %s: the KV snapshot vault did not answer (%s)", self._model, e)
            return None

    def publish(self, fp: str, key: str, tokens: list[int], data: bytes) -> None:
        future = self._sender.submit(self._send, fp, key, tokens, data)
        self._pending.add(future)
        future.add_done_callback(self._pending.discard)

    def flush(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s for the snapshots published to be sent; whether they all were."""
        _, late = futures.wait(list(self._pending), timeout=timeout)
        self._sender.shutdown(wait=False, cancel_futures=True)
        return not late

    def _send(self, fp: str, key: str, tokens: list[int], data: bytes) -> bool:
        try:
            self._handle.put.remote(self._model, fp, key, tokens, data).result(timeout_s=SEND_S)
            return True
        except Exception as e:
            log.warning("model %s: a KV snapshot did not reach the vault (%s); it stays on this replica",
                        self._model, e)
            return False
