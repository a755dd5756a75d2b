"""The model engine: one llama.cpp model, generating on a worker thread.

A llama.cpp context is not thread-safe, so one worker thread owns it and runs
requests one at a time, in arrival order. Callers wait in a bounded queue; past
its bound they get ``Busy`` at once instead of an unbounded wait. Tokens travel
from the worker to the caller's event loop through an asyncio queue, and a
caller that goes away sets a flag the worker checks after every token, so a
cancelled stream stops decoding at once.

Embeddings use a second context of their own (mean pooling), so they never
wait behind generation. Tokenization only reads the vocabulary and runs on the
caller's thread.

No Ray import here: the engine is tested directly with the real model.
"""

from __future__ import annotations

import asyncio
import codecs
import functools
import logging
import queue
import random
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import llama_cpp
import numpy as np

from .errors import Busy, ModelError, PromptTooLong
from .generation import Chunk, Done, Event, GenerationRequest, Segment, Started
from .stops import StopMatcher

log = logging.getLogger(__name__)


@dataclass
class _Job:
    tokens: list[int]
    request: GenerationRequest
    loop: asyncio.AbstractEventLoop
    out: asyncio.Queue
    submitted: float = field(default_factory=time.perf_counter)
    cancelled: threading.Event = field(default_factory=threading.Event)

    def send(self, item) -> bool:
        try:
            self.loop.call_soon_threadsafe(self.out.put_nowait, item)
            return True
        except RuntimeError:  # the caller's loop is gone
            self.cancelled.set()
            return False


_STOP = object()


class Engine:
    def __init__(
        self,
        model_path: str | Path,
        *,
        context_size: int = 2048,
        threads: int = 2,
        batch_size: int = 512,
        gpu_layers: int = 0,
        max_queued: int = 16,
        flush_interval: float = 0.1,
        name: str = "model",
    ):
        self.name = name
        self.model_path = str(model_path)
        self.max_queued = max_queued
        self.flush_interval = flush_interval
        self._threads = threads
        self._gpu_layers = gpu_layers
        self._llm = llama_cpp.Llama(
            model_path=self.model_path,
            n_ctx=context_size,
            n_threads=threads,
            n_threads_batch=threads,
            n_batch=batch_size,
            n_gpu_layers=gpu_layers,
            verbose=False,
        )
        self.context_size = self._llm.n_ctx()
        self._jobs: queue.Queue = queue.Queue()
        self._lock = threading.Lock()
        self._waiting = 0
        self._running = False
        self._embedder = None
        self._embed_lock = threading.Lock()
        self._worker = threading.Thread(target=self._run, name=f"engine-{name}", daemon=True)
        self._worker.start()

    # -- public API -------------------------------------------------------

    def tokenize(self, text: str, *, add_bos: bool = False, special: bool = False) -> list[int]:
        return self._llm.tokenize(text.encode("utf-8"), add_bos=add_bos, special=special)

    def detokenize(self, tokens: list[int]) -> str:
        return self._llm.detokenize(tokens).decode("utf-8", errors="replace")

    def tokenize_prompt(self, prompt: tuple[Segment, ...]) -> list[int]:
        tokens = self.tokenize("", add_bos=True)
        for seg in prompt:
            tokens += self.tokenize(seg.text, special=seg.special)
        return tokens

    @property
    def alive(self) -> bool:
        return self._worker.is_alive()

    def stats(self) -> dict:
        with self._lock:
            return {"waiting": self._waiting, "running": int(self._running), "max_queued": self.max_queued}

    async def generate(self, request: GenerationRequest) -> AsyncIterator[Event]:
        """Stream a generation: ``Started``, then ``Chunk``s, then ``Done``.

        Raises PromptTooLong or Busy before the first event. Closing the
        iterator (a client that went away) stops decoding.
        """
        tokens = self.tokenize_prompt(request.prompt)
        if len(tokens) >= self.context_size:
            raise PromptTooLong(
                f"the prompt is {len(tokens)} tokens; the context of model '{self.name}' holds {self.context_size}"
            )
        job = _Job(tokens, request, asyncio.get_running_loop(), asyncio.Queue())
        with self._lock:
            if self._running and self._waiting >= self.max_queued:
                raise Busy(
                    f"model '{self.name}' is busy: {self._waiting} requests are already waiting", retry_after=1
                )
            self._waiting += 1
        self._jobs.put(job)
        try:
            yield Started(prompt_tokens=len(tokens))
            carry, last_chunk = None, 0.0
            while True:
                item = carry if carry is not None else await job.out.get()
                carry = None
                if isinstance(item, Chunk):
                    # Every message costs CPU in each hop of the graph, CPU the
                    # model's own threads need: after a chunk, let tokens gather
                    # for flush_interval before sending the next one.
                    wait = last_chunk + self.flush_interval - time.perf_counter()
                    if wait > 0:
                        await asyncio.sleep(wait)
                    while not job.out.empty():
                        nxt = job.out.get_nowait()
                        if not isinstance(nxt, Chunk):
                            carry = nxt
                            break
                        item = Chunk(item.text + nxt.text, item.tokens + nxt.tokens)
                    yield item
                    last_chunk = time.perf_counter()
                    continue
                if isinstance(item, BaseException):
                    raise item
                yield item
                if isinstance(item, Done):
                    return
        finally:
            job.cancelled.set()

    def embed(self, texts: list[str]) -> list[list[float]]:
        """Mean-pooled, L2-normalised embeddings. Blocking: call it off the event loop."""
        with self._embed_lock:
            if self._embedder is None:
                self._embedder = self._load_embedder()
            too_long = [i for i, t in enumerate(texts) if len(self.tokenize(t, add_bos=True)) > self.context_size]
            if too_long:
                raise PromptTooLong(
                    f"input {too_long[0]} is longer than the context of model '{self.name}' ({self.context_size} tokens)"
                )
            return self._embedder.embed(texts, normalize=True)

    def close(self) -> None:
        self._jobs.put(_STOP)
        self._worker.join(timeout=10)

    # -- worker -----------------------------------------------------------

    def _load_embedder(self):
        return llama_cpp.Llama(
            model_path=self.model_path,
            embedding=True,
            pooling_type=llama_cpp.LLAMA_POOLING_TYPE_MEAN,
            n_ctx=self.context_size,
            n_batch=self.context_size,
            n_ubatch=self.context_size,
            n_threads=self._threads,
            n_gpu_layers=self._gpu_layers,
            verbose=False,
        )

    @functools.cached_property
    def _eog_tokens(self) -> list[int]:
        vocab = self._llm._model.vocab
        return [t for t in range(llama_cpp.llama_vocab_n_tokens(vocab)) if llama_cpp.llama_vocab_is_eog(vocab, t)]

    def _no_eog(self, _ids, logits):
        logits[self._eog_tokens] = -np.inf
        return logits

    def _run(self) -> None:
        while (job := self._jobs.get()) is not _STOP:
            with self._lock:
                self._waiting -= 1
                self._running = True
            try:
                if not job.cancelled.is_set():
                    job.send(self._generate(job))
            except Exception as e:  # the model failed; the caller hears a clear error
                log.exception("model %s: generation failed", self.name)
                job.send(ModelError(f"model '{self.name}' failed while generating: {type(e).__name__}"))
            finally:
                with self._lock:
                    self._running = False

    def _generate(self, job: _Job) -> Done:
        llm, req, s = self._llm, job.request, job.request.sampling
        started = time.perf_counter()
        llm.set_seed(s.seed if s.seed is not None else random.getrandbits(32))
        llm.last_n_tokens_size = s.repeat_last_n
        budget = min(req.max_tokens, self.context_size - len(job.tokens))
        stops = StopMatcher(req.stop)
        utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        vocab = llm._model.vocab
        n, finish, first_at = 0, "length", None
        pending = 0  # tokens generated but held back (partial stop or UTF-8 sequence)

        for token in llm.generate(
            job.tokens,
            top_k=s.top_k,
            top_p=s.top_p,
            min_p=s.min_p,
            temp=s.temperature,
            repeat_penalty=s.repeat_penalty,
            reset=True,
            logits_processor=[self._no_eog] if req.ignore_eos else None,
        ):
            if first_at is None:
                first_at = time.perf_counter()
            if job.cancelled.is_set():
                finish = "cancelled"
                break
            if llama_cpp.llama_vocab_is_eog(vocab, token):  # EOS, EOT, ... (never with ignore_eos)
                finish = "stop"
                break
            n += 1
            pending += 1
            text = stops.feed(utf8.decode(llm.detokenize([token])))
            if text:
                job.send(Chunk(text, pending))
                pending = 0
            if stops.stopped:
                finish = "stop"
                break
            if n >= budget:
                break

        tail = stops.feed(utf8.decode(b"", final=True)) + stops.flush()
        if tail or pending:
            job.send(Chunk(tail, pending))
        ended = time.perf_counter()
        first_at = first_at or ended
        timings = {
            "queued_ms": round((started - job.submitted) * 1000, 2),
            "prompt_ms": round((first_at - started) * 1000, 2),
            "decode_ms": round((ended - first_at) * 1000, 2),
            "tokens_per_s": round((n - 1) / (ended - first_at), 2) if n > 1 and ended > first_at else None,
        }
        return Done(finish, len(job.tokens), n, timings)
