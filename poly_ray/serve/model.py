"""LlamaModel: one deployment per configured model, adapting Ray to the Engine."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from ray import serve

from poly_ray.config import ModelConfig
from poly_ray.engine.embedder import EmbeddingEngine, is_embedding_model, model_metadata
from poly_ray.engine.embedding_gate import EmbeddingGate
from poly_ray.engine.llama_engine import Engine
from poly_ray.engine.sources import resolve
from poly_ray.errors import ModelError
from poly_ray.generation import GenerationRequest

from .ops import EngineGauges, replica, route_logs_to_serve

log = logging.getLogger(__name__)
# Chains of turns (chat sessions, Responses chains, threads, cache ids) a replica is marked
# as holding, least recently used first out; beyond its slots their cells may be gone,
# but affinity costs nothing.
CHAINS_PER_REPLICA = 256


class LlamaModel:
    def __init__(self, name: str, model: dict, cache_path: str, kv_path: str | None = None):
        route_logs_to_serve()
        cfg = ModelConfig.model_validate(model)
        path = resolve(name, cfg, Path(cache_path))
        log.info("model %s: loading %s", name, path)
        adapters = [(str(a.path), a.scale) for a in cfg.lora_adapters]
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
                name=name,
                snapshot_dir=kv_path if cfg.kv_snapshot_bytes else None,
                snapshot_bytes=cfg.kv_snapshot_bytes,
                lora_adapters=adapters,
            )
        self._embedding = EmbeddingGate(name, self.engine.embed, serves=cfg.embeddings, max_inputs=cfg.max_embedding_inputs,
                                        max_tokens=cfg.max_embedding_tokens, max_queued=cfg.max_queued_requests)
        self._gauges = EngineGauges(name, self.engine.stats)
        self._where = replica()
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
        """The engine's stats, and which node this replica runs on (a call reaches one replica)."""
        return {**self.engine.stats(), **self._embedding.stats(), **self._where}

    def check_health(self) -> None:
        if not self.engine.alive:
            raise ModelError(f"model '{self.engine.name}': the engine thread has stopped")
