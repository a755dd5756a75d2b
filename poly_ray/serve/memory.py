"""MemoryActor: every configured memory, in one deployment beside the orchestrator.

One replica: an embedded store's files have one owner. Embeddings come from
the memory's embedding model deployment, in batches; tokens are counted with
that model's vocabulary, loaded here (only the vocabulary, not the weights).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import llama_cpp

from poly_ray.config import MemoryConfig, ModelConfig
from poly_ray.engine.sources import resolve
from poly_ray.memory.jobs import JobStore
from poly_ray.memory.memory import Memory, check_dimensions
from poly_ray.memory.service import MemoryService
from poly_ray.memory.vectorstore import open_store

from .handles import ModelHandle
from .ops import route_logs_to_serve

log = logging.getLogger(__name__)


class MemoryActor(MemoryService):
    """The memories' ``MemoryService``, built from the config: handles call its methods
    by name (serve/handles.MemoryHandle)."""

    def __init__(self, memories: dict, models: dict, handles: dict, cache_path: str, jobs_path: str, bounds: dict):
        """``jobs_path``: the folder of the durable ingestion jobs (under state_dir);
        ``bounds``: MemoryService's max_jobs, per_credential and per_memory."""
        route_logs_to_serve()
        vocabularies: dict[str, llama_cpp.Llama] = {}
        built = {}
        for name, raw in memories.items():
            cfg = MemoryConfig.model_validate(raw)
            model = cfg.embedding_model
            model_cfg = ModelConfig.model_validate(models[model])
            if model not in vocabularies:
                path = resolve(model, model_cfg, Path(cache_path))
                vocabularies[model] = llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)
            vocab = vocabularies[model]
            check_dimensions(name, cfg, vocab.metadata)
            built[name] = Memory(
                name,
                cfg,
                store=open_store(name, cfg),
                embed=ModelHandle(handles[model], model).embed,
                count=_counter(vocab),
                context=model_cfg.context_size,
            )
            q = cfg.store.qdrant
            log.info("memory %s: ready (%s)", name, cfg.store.path if q is None else q.url)
        self._vocabularies = vocabularies
        # Serve runs the constructor on the replica's event loop: jobs an earlier
        # replica left running resume as soon as this one serves.
        super().__init__(built, JobStore(Path(jobs_path)), **bounds)

    def __del__(self):
        # Serve is shutting the replica down: flush and release the stores' files.
        if getattr(self, "_memories", None) is not None:
            self.close()


def _counter(vocab: llama_cpp.Llama) -> Callable[[str], int]:
    """How many tokens a text is in ``vocab`` (a chunk's size, as its embedding model reads it)."""
    return lambda text: len(vocab.tokenize(text.encode(), add_bos=False, special=False))
