"""Embeddings from a GGUF model, on a llama.cpp context of their own.

Two kinds of model embed here: embedding models (BERT-family GGUFs such as
all-MiniLM, bge, e5, nomic-embed), which carry their pooling type in their
metadata and cannot generate, and generative models (Gemma), which are
mean-pooled. Vectors are L2-normalised, so cosine similarity is a dot product.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

import llama_cpp
from llama_cpp import _logger as llama_log

from poly_ray.errors import BadRequest, PromptTooLong

from . import backends, lora


def model_metadata(model_path: str | Path) -> dict[str, str]:
    """The GGUF metadata of a model (only its vocabulary is loaded)."""
    llama_log.set_verbose(False)
    llm = llama_cpp.Llama(model_path=str(model_path), vocab_only=True, verbose=False)
    try:
        return dict(llm.metadata)
    finally:
        llm.close()


def is_embedding_model(metadata: dict[str, str]) -> bool:
    """Embedding models declare how they pool; generative ones do not."""
    arch = metadata.get("general.architecture", "")
    return f"{arch}.pooling_type" in metadata


class Embedder:
    def __init__(
        self,
        model_path: str | Path,
        *,
        context_size: int,
        threads: int,
        gpu_layers: int = 0,
        own_pooling: bool,
        name: str = "model",
        lora_adapters: Sequence[tuple[str, float]] = (),
    ):
        self.name = name
        self.context_size = context_size
        self._lock = threading.Lock()
        # Several texts go in one llama_decode, up to context_size tokens. An encoder
        # (BERT) must see a whole batch in one ubatch: llama.cpp aborts the
        # process otherwise, so n_ubatch = n_batch.
        batch = context_size
        backends.load()
        llama_log.set_verbose(False)
        self._llm = llama_cpp.Llama(
            model_path=str(model_path),
            embedding=True,
            # An embedding model pools as it was trained to (CLS for bge, mean for
            # MiniLM); a generative model has no pooling of its own: mean.
            pooling_type=llama_cpp.LLAMA_POOLING_TYPE_UNSPECIFIED if own_pooling else llama_cpp.LLAMA_POOLING_TYPE_MEAN,
            n_ctx=batch,
            n_batch=batch,
            n_ubatch=batch,
            n_threads=threads,
            n_threads_batch=threads,
            n_gpu_layers=gpu_layers,
            verbose=False,
        )
        self._adapters = lora.apply(self._llm._model.model, self._llm._ctx.ctx, list(lora_adapters), name)

    def tokenize(self, text: str, *, add_bos: bool = False) -> list[int]:
        return self._llm.tokenize(text.encode("utf-8"), add_bos=add_bos, special=False)

    def embed(self, texts: list[str], max_tokens: int | None = None) -> list[list[float]]:
        """L2-normalised embeddings, of at most ``max_tokens`` tokens in all. Blocking: call it off the event loop."""
        total = 0
        for i, text in enumerate(texts):
            n = len(self.tokenize(text, add_bos=True))
            if n > self.context_size:
                raise PromptTooLong(
                    f"input {i} is {n} tokens, longer than the context of model '{self.name}' ({self.context_size})"
                )
            total += n
            if max_tokens is not None and total > max_tokens:
                raise BadRequest(f"the inputs are over {max_tokens} tokens, the most model '{self.name}' embeds "
                                 f"per request (models.{self.name}.max_embedding_tokens)")
        with self._lock:
            return self._llm.embed(texts, normalize=True)

    def close(self) -> None:
        self._llm.close()


class EmbeddingEngine:
    """An embedding model behind the Engine's interface: it embeds and tokenizes,
    and refuses to generate with a 400 that says why."""

    alive = True

    def __init__(self, model_path: str | Path, *, context_size: int, threads: int, gpu_layers: int = 0, name: str,
                 lora_adapters: Sequence[tuple[str, float]] = ()):
        self.name = name
        self.context_size = context_size
        self._embedder = Embedder(model_path, context_size=context_size, threads=threads, gpu_layers=gpu_layers,
                                  own_pooling=True, name=name, lora_adapters=lora_adapters)

    def tokenize(self, text: str, *, add_bos: bool = False, special: bool = False) -> list[int]:
        return self._embedder.tokenize(text, add_bos=add_bos)

    def detokenize(self, tokens: list[int]) -> str:
        return self._embedder._llm.detokenize(tokens).decode("utf-8", errors="replace")

    def embed(self, texts: list[str], max_tokens: int | None = None) -> list[list[float]]:
        return self._embedder.embed(texts, max_tokens)

    async def generate(self, request):
        raise BadRequest(f"model '{self.name}' is an embedding model: it embeds text but cannot generate it")
        yield  # an async generator, like Engine.generate

    def chat_template(self) -> dict | None:  # the Engine's interface: an embedding model has none
        return None

    def stats(self) -> dict:
        return {"kind": "embedding"}

    def close(self) -> None:
        self._embedder.close()
