"""The model engine: continuous batching over the sequences of one llama.cpp context.

One worker thread owns the context (a llama.cpp context is not thread-safe)
and runs a decode loop. The context has ``slots`` sequences. Each step, every
generating sequence adds its last token to one ``llama_decode`` batch, and
sequences still reading their prompt add a chunk of it (``batching.compose``:
a prompt's last token is evaluated as it would be after a cached prefix, so a
seeded request repeats its text); then each generating sequence samples its
next token with its own sampler chain (seed, penalties, grammar). Requests
join between steps and leave as soon as they finish or their caller goes away.

A slot keeps its KV cells when its request ends, and a new request reuses the
longest prefix any slot holds (see ``slots.place``): a task's prelude or a
chat's earlier turns are evaluated once, not on every request.

Requests wait for a free slot in a bounded queue; past its bound they get
``Busy`` at once. Tokens travel from the worker to the caller's event loop
through an asyncio queue.

Embeddings use a context of their own (mean pooling), so they never wait behind
generation; tokenization only reads the vocabulary and runs on the caller's
thread. No Ray import here: the engine is tested directly with the real model.
"""

from __future__ import annotations

import asyncio
import codecs
import ctypes
import functools
import logging
import queue
import threading
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import llama_cpp
import numpy as np
from llama_cpp import _internals
from llama_cpp import _logger as llama_log

from poly_ray.errors import BadRequest, Busy, ContextFull, ModelError, PromptTooLong
from poly_ray.generation import Chunk, Done, Event, GenerationRequest, Reasoning, Segment, Started, TokenLogprob

from . import backends, batching, lora, reasoning
from .embedder import Embedder
from .flush import Outbox, StepBudget, taken
from .kv_persist import Persistence
from .kv_slots import Slot, place, public_prefix
from .kv_snapshots import DEFAULT_BUDGET, SharedSnapshots, SnapshotIndex, fingerprint
from .kv_types import KvCacheTypes
from .lengths import resolve_lengths
from .sampler import SamplerChain
from .sampling_pool import SamplingPool
from .speculative import Drafter, Speculation, chosen, cut_rejected, verify
from .stops import StopMatcher

log = logging.getLogger(__name__)

_STOP = object()
# One token's sampling takes milliseconds, a grammar included; past this, the request's
# grammar has exploded (many live parse stacks) and it ends, before it stalls every slot.
SAMPLE_LIMIT_S = 5.0


@dataclass
class _HandOff:
    """A command for the worker: hand the slots' chains to the vault (Engine.hand_off)."""

    done: threading.Event = field(default_factory=threading.Event)
    sent: int = 0


@dataclass
class _Job:
    tokens: list[int]
    request: GenerationRequest
    loop: asyncio.AbstractEventLoop
    out: asyncio.Queue
    submitted: float = field(default_factory=time.perf_counter)
    cancelled: threading.Event = field(default_factory=threading.Event)
    fetched: tuple[list[int], bytes] | None = None  # the cache id's snapshot, from the vault
    public: int = 0  # tokens of the prompt's operator-written start (kv_slots.place)
    thinking: reasoning.RunThinking | None = None  # a reasoning model's thinking, kept apart
    outbox: Outbox = field(default_factory=Outbox)  # its messages in flight (flush.py)

    def send(self, item) -> None:
        try:
            self.loop.call_soon_threadsafe(self.out.put_nowait, item)
        except RuntimeError:  # the caller's loop is gone
            self.cancelled.set()


@dataclass
class _Run:
    """A request placed in a slot: its progress through prompt and generation."""

    job: _Job
    slot: Slot
    sampler: SamplerChain
    budget: int  # tokens it may still generate
    pending: list[int]  # prompt tokens not yet evaluated
    reused: int
    admitted: float = field(default_factory=time.perf_counter)
    next_token: int | None = None  # sampled, to be evaluated next step
    draft: list[int] = field(default_factory=list)  # evaluated behind it, to be verified (speculative.py)
    drafter: Drafter | None = None
    generated: int = 0
    held: int = 0  # generated tokens not yet sent to the caller
    unsent: str = ""  # their text, released by the stop matcher
    unsent_logprobs: list = field(default_factory=list)
    output: list[int] = field(default_factory=list)  # generated token ids
    first_at: float | None = None
    stops: StopMatcher = field(init=False)
    utf8: codecs.IncrementalDecoder = field(default_factory=lambda: codecs.getincrementaldecoder("utf-8")("replace"))

    def __post_init__(self):
        self.stops = StopMatcher(self.job.request.stop)
        self.repeatable = batching.repeatable(self.job.request.sampling)  # batching.compose


class Engine:
    def __init__(
        self,
        model_path: str | Path,
        *,
        context_size: int = 2048,
        slots: int = 4,
        threads: int = 2,
        batch_size: int = 512,
        gpu_layers: int = 0,
        max_queued: int = 16,
        flush_interval: float = 0.1,
        messages_per_step: int | None = None,
        name: str = "model",
        snapshot_dir: str | Path | None = None,
        snapshot_bytes: int | None = None,
        lora_adapters: Sequence[tuple[str, float]] = (),
        shared_snapshots: SharedSnapshots | None = None,
        kv_types: KvCacheTypes = KvCacheTypes(),
        speculation: Speculation | None = None,
    ):
        self.name = name
        self.model_path = str(model_path)
        self.context_size = context_size  # per slot
        self.max_queued = max_queued
        self.flush_interval, self._messages = flush_interval, StepBudget(messages_per_step)
        self._threads = threads
        self._gpu_layers = gpu_layers
        self._batch_size = batch_size

        self.cpu_backend = backends.load().variant  # which of the build's CPU variants runs here
        log.info("model %s: llama.cpp CPU backend %s", name, self.cpu_backend)
        llama_log.set_verbose(False)  # llama.cpp's own logging: errors only
        model_params = llama_cpp.llama_model_default_params()
        model_params.n_gpu_layers = gpu_layers
        self._model = _internals.LlamaModel(path_model=self.model_path, params=model_params, verbose=False)
        self._vocab = self._model.vocab
        self._n_vocab = llama_cpp.llama_vocab_n_tokens(self._vocab)

        ctx_params = llama_cpp.llama_context_default_params()
        ctx_params.n_ctx = context_size * slots
        ctx_params.n_batch = batch_size
        ctx_params.n_ubatch = batch_size
        ctx_params.n_seq_max = slots
        ctx_params.n_threads = threads
        ctx_params.n_threads_batch = threads
        # One cell pool for all slots, so a shared prefix is shared cells
        # (llama_memory_seq_cp), and sliding-window layers keep every cell so
        # that a slot's cells can be cut back to any prefix.
        ctx_params.kv_unified = True
        ctx_params.swa_full = True
        kv_types.apply(ctx_params)
        self.kv_types = kv_types
        self.speculation, self.drafted, self.accepted = speculation, 0, 0
        try:
            self._ctx = _internals.LlamaContext(model=self._model, params=ctx_params, verbose=False)
        except ValueError:  # llama.cpp says only that it failed (its log says why)
            raise ModelError(f"model '{name}': llama.cpp cannot make a context with cache_type_k = '{kv_types.k}', "
                             f"cache_type_v = '{kv_types.v}', flash_attn = '{kv_types.flash_attn}' on this "
                             "backend") from None
        per_token = kv_types.bytes_per_token(self._model.metadata())
        self._kv_bytes = per_token * ctx_params.n_ctx if per_token else None
        self._lora = list(lora_adapters)
        self._adapters = lora.apply(self._model.model, self._ctx.ctx, self._lora, name)
        self._mem = llama_cpp.llama_get_memory(self._ctx.ctx)
        self._batch = llama_cpp.llama_batch_init(batch_size, 0, 1)
        self._piece_buf = ctypes.create_string_buffer(64)
        self._pieces: dict[int, bytes] = {}
        self._samplers = SamplingPool(threads, name)

        self._slots = [Slot(seq) for seq in range(slots)]
        self._jobs: queue.Queue = queue.Queue()
        self._waiting: list[_Job] = []  # worker-only: admitted to the engine, not yet to a slot
        self._lock = threading.Lock()
        self._queued = 0  # jobs submitted but not yet in a slot
        self._active = 0
        self.reused_tokens = 0  # prompt tokens served from cached cells, since start
        self.steps = 0  # llama_decode calls, since start
        self.step_started: float | None = None  # when the step under way began (monotonic)
        self._embedder: Embedder | None = None
        self._embed_lock = threading.Lock()
        # Durable KV snapshots: cache ids, preludes, chains handed off (None: off).
        self._persist = None
        if snapshot_dir is not None:
            index = SnapshotIndex(Path(snapshot_dir), fingerprint(self.model_path, context_size, self._lora, kv_types.tag),
                                  snapshot_bytes or DEFAULT_BUDGET)
            self._persist = Persistence(name, index, shared_snapshots, self._ctx, self._mem, context_size,
                                        self.tokenize_prompt)
        self._worker = threading.Thread(target=self._loop, name=f"engine-{name}", daemon=True)
        self._worker.start()

    # -- public API -------------------------------------------------------

    def tokenize(self, text: str, *, add_bos: bool = False, special: bool = False) -> list[int]:
        return self._model.tokenize(text.encode("utf-8"), add_bos=add_bos, special=special)

    def detokenize(self, tokens: list[int]) -> str:
        return self._model.detokenize(tokens).decode("utf-8", errors="replace")

    def tokenize_prompt(self, prompt: tuple[Segment, ...], context: tuple[int, ...] | None = None) -> list[int]:
        tokens = list(context) if context else self.tokenize("", add_bos=True)
        for seg in prompt:
            tokens += self.tokenize(seg.text, special=seg.special)
        return tokens

    def chat_template(self) -> dict | None:
        """The GGUF's chat template, with the text of its BOS and EOS tokens (None: it has none)."""
        template = self._model.metadata().get("tokenizer.chat_template")
        if not template:
            return None
        text = self._model.token_get_text
        return {"template": template, "bos": text(self._model.token_bos()), "eos": text(self._model.token_eos())}

    @property
    def alive(self) -> bool:
        return self._worker.is_alive()

    def stats(self) -> dict:
        # Tokens the slots hold in the KV cache (active or kept for reuse). A prefix
        # shared by several slots counts once per slot, so the usage is an upper bound.
        held = sum(len(slot.tokens) for slot in self._slots)
        capacity = self.context_size * len(self._slots)
        with self._lock:
            return {
                "slots": len(self._slots),
                "active": self._active,
                "waiting": self._queued,
                "max_queued": self.max_queued,
                "reused_tokens": self.reused_tokens,
                "steps": self.steps,
                "kv_cache_tokens": held,
                "kv_cache_capacity": capacity,
                "kv_cache_usage": round(held / capacity, 4),
                "kv_cache_type": self.kv_types.tag,
                "kv_cache_bytes": self._kv_bytes,
                "speculative": {"drafted": self.drafted, "accepted": self.accepted},  # a task may draft
                "cpu_backend": self.cpu_backend,
                **({"kv_snapshots": self._persist.stats()} if self._persist is not None else {}),
            }

    async def generate(self, request: GenerationRequest) -> AsyncIterator[Event]:
        """Stream a generation: ``Started``, then ``Chunk``s, then ``Done``.

        Raises PromptTooLong, BadRequest (a grammar that does not parse) or Busy
        before the first event. Closing the iterator stops decoding.
        """
        tokens = self.tokenize_prompt(request.prompt, request.context)
        thinking, tokens = reasoning.prepare(request, tokens, functools.partial(self.tokenize, special=True))
        if len(tokens) >= self.context_size:
            error = ContextFull if request.context else PromptTooLong
            raise error(
                f"the prompt is {len(tokens)} tokens; the context of model '{self.name}' holds {self.context_size}"
            )
        request = resolve_lengths(request, len(tokens))
        if request.cache_key is not None and self._persist is not None:
            self._persist.index.check_fits(len(tokens))
        if outside := [t for t, _ in request.sampling.logit_bias if t >= self._n_vocab]:
            raise BadRequest(f"logit_bias: token {outside[0]} is not in the vocabulary of model '{self.name}' "
                             f"(0 to {self._n_vocab - 1})")
        if request.grammar is not None:
            SamplerChain(self._vocab, self._n_vocab, request.sampling, grammar=request.grammar).close()
        job = _Job(tokens, request, asyncio.get_running_loop(), asyncio.Queue(),
                   public=public_prefix(request, self.tokenize), thinking=thinking)
        if self._persist is not None:  # saved by a replica elsewhere, or before this one started
            job.fetched = await self._persist.prefetch(request, self._slots)
        with self._lock:
            # Past the free slots, at most max_queued requests wait.
            if self._active + self._queued >= len(self._slots) + self.max_queued:
                raise Busy(
                    f"model '{self.name}' is busy: all {len(self._slots)} slots are generating and "
                    f"{self._queued} requests are waiting (max_queued_requests = {self.max_queued})",
                    retry_after=1,
                )
            self._queued += 1
        self._jobs.put(job)
        try:
            yield Started(prompt_tokens=len(tokens))
            async for item in taken(job.out, job.outbox):
                if isinstance(item, BaseException):
                    raise item
                yield item
                if isinstance(item, Done):
                    return
        finally:
            job.cancelled.set()

    def embed(self, texts: list[str], max_tokens: int | None = None) -> list[list[float]]:
        """Mean-pooled, L2-normalised embeddings. Blocking: call it off the event loop."""
        with self._embed_lock:  # loaded on first use: most models never embed
            if self._embedder is None:
                self._embedder = Embedder(
                    self.model_path,
                    context_size=self.context_size,
                    threads=self._threads,
                    gpu_layers=self._gpu_layers,
                    own_pooling=False,
                    name=self.name,
                    lora_adapters=self._lora,
                )
        return self._embedder.embed(texts, max_tokens)

    def hand_off(self, timeout: float = 60) -> int:
        """Send the chains held in the slots to the vault (the replica is stopping, its
        requests drained); how many were sent. Blocks until the worker has saved them."""
        command = _HandOff()
        self._jobs.put(command)
        command.done.wait(timeout)
        return command.sent

    def close(self) -> None:
        self._jobs.put(_STOP)
        self._worker.join(timeout=30)
        self._samplers.shutdown()
        llama_cpp.llama_batch_free(self._batch)

    # -- worker -----------------------------------------------------------

    def _piece(self, token: int) -> bytes:
        """The bytes of one token (possibly part of a UTF-8 character)."""
        piece = self._pieces.get(token)
        if piece is None:
            piece = self._pieces[token] = self._piece_of(token)
        return piece

    def _piece_of(self, token: int) -> bytes:
        n = llama_cpp.llama_token_to_piece(self._vocab, token, self._piece_buf, len(self._piece_buf), 0, False)
        if n < 0:  # longer than the buffer: grow it to the size asked for
            self._piece_buf = ctypes.create_string_buffer(-n)
            n = llama_cpp.llama_token_to_piece(self._vocab, token, self._piece_buf, -n, 0, False)
        return self._piece_buf.raw[:n]

    @functools.cached_property
    def _eog_tokens(self) -> list[int]:
        return [t for t in range(self._n_vocab) if llama_cpp.llama_vocab_is_eog(self._vocab, t)]

    @functools.cached_property
    def _eog_set(self) -> frozenset[int]:
        return frozenset(self._eog_tokens)

    def _loop(self) -> None:
        runs: list[_Run] = []
        while True:
            # Block for work only when there is nothing to decode.
            try:
                item = self._jobs.get(block=not runs and not self._waiting)
                while True:
                    if item is _STOP:
                        return
                    if isinstance(item, _HandOff):
                        item.sent = self._persist.hand_off(self._slots) if self._persist is not None else 0
                        item.done.set()
                    else:
                        self._waiting.append(item)
                    item = self._jobs.get_nowait()
            except queue.Empty:
                pass
            try:
                self._admit(runs)
                runs = [r for r in runs if not self._finish_if_cancelled(r)]
                if runs:
                    self._step(runs)
                    runs = [r for r in runs if r.slot.busy]
            except Exception as e:  # the model failed: every caller hears a clear error
                log.exception("model %s: decoding failed", self.name)
                for run in runs:
                    run.job.send(ModelError(f"model '{self.name}' failed while generating: {type(e).__name__}"))
                    self._release(run, keep_cells=False)
                runs = []

    def _admit(self, runs: list[_Run]) -> None:
        while self._waiting:
            job = self._waiting[0]
            if job.cancelled.is_set():
                self._waiting.pop(0)
                with self._lock:
                    self._queued -= 1
                continue
            placement = place(self._slots, job.tokens, session=bool(job.request.context), chain=job.request.session,
                              owner=job.request.owner, public=job.public)
            if placement is None:
                return
            self._waiting.pop(0)
            slot = self._slots[placement.slot]
            seq = slot.seq
            slot.chain, slot.owner, slot.public = job.request.session, job.request.owner, job.public
            if self._persist is not None:
                placement = self._persist.restore(job.request, job.tokens, job.fetched, slot, placement)
            if placement.copy_from is not None:
                llama_cpp.llama_memory_seq_rm(self._mem, seq, -1, -1)
                llama_cpp.llama_memory_seq_cp(self._mem, placement.copy_from, seq, 0, placement.reuse)
                slot.tokens = self._slots[placement.copy_from].tokens[: placement.reuse]
            else:
                llama_cpp.llama_memory_seq_rm(self._mem, seq, placement.reuse, -1)
                slot.tokens = slot.tokens[: placement.reuse]
            req = job.request
            try:
                chain = functools.partial(SamplerChain, self._vocab, self._n_vocab, req.sampling,
                                          banned=self._eog_tokens if req.ignore_eos else None,
                                          history=job.tokens, min_tokens=req.min_tokens, eog=self._eog_tokens)
                # While a reasoning model thinks, its grammar waits (engine/reasoning.py).
                sampler = chain(grammar=req.grammar if job.thinking is None else job.thinking.first_grammar)
                if job.thinking is not None:
                    job.thinking.chain = chain
            except Exception as e:
                job.send(e if isinstance(e, BadRequest) else ModelError(f"model '{self.name}': {e}"))
                with self._lock:
                    self._queued -= 1
                continue
            slot.busy = True
            budget = min(req.max_tokens, self.context_size - len(job.tokens))
            run = _Run(job, slot, sampler, budget, job.tokens[placement.reuse :], placement.reuse)
            # Not while a reasoning model thinks: its sampler changes at the end marker, mid-draft.
            if (spec := chosen(req, self.speculation)) is not None and job.thinking is None:
                run.drafter = Drafter(spec, job.tokens)
            runs.append(run)
            with self._lock:
                self._queued -= 1
                self._active += 1
                self.reused_tokens += placement.reuse

    def _step(self, runs: list[_Run]) -> None:
        """One llama_decode over every active sequence, then one sample each."""
        batch = self._batch
        n = 0
        for run in runs:  # the budget counts the token drawn after an accepted draft
            if run.drafter is not None and run.next_token is not None:
                run.draft = run.drafter.draft(run.budget - run.generated - 1)
        sample_at: list[tuple[_Run, list[int]]] = []
        for run, token, logits in batching.compose(runs, self._batch_size):
            batch.token[n] = token
            batch.pos[n] = len(run.slot.tokens)
            batch.n_seq_id[n] = 1
            batch.seq_id[n][0] = run.slot.seq
            batch.logits[n] = logits
            run.slot.tokens.append(token)
            if logits and sample_at and sample_at[-1][0] is run:  # a draft token: verified after the first
                sample_at[-1][1].append(n)
            elif logits:
                sample_at.append((run, [n]))
            n += 1
        if n == 0:
            return
        batch.n_tokens = n
        self.step_started = time.monotonic()
        try:
            rc = llama_cpp.llama_decode(self._ctx.ctx, batch)
            if rc != 0:
                raise RuntimeError(f"llama_decode returned {rc}")
            with self._lock:
                self.steps += 1
            now = time.perf_counter()
            ctx = self._ctx.ctx
            draws = self._samplers.sample(sample_at, lambda run, indices: verify(run.sampler, ctx, indices, run.draft))
            self._messages.start()  # the streams that held text longest send first
            for (run, indices), (drawn, took) in sorted(zip(sample_at, draws),
                                                        key=lambda d: d[0][0].job.outbox.waiting_since):
                if took > SAMPLE_LIMIT_S:
                    run.job.send(BadRequest(f"the request's grammar made one token take {took:.1f} s to sample "
                                            f"(at most {SAMPLE_LIMIT_S:.0f} s): simplify its schema or pattern"))
                    self._release(run, keep_cells=False)
                    continue
                if run.draft:
                    accepted = cut_rejected(self._mem, run.slot, run.draft, drawn)
                    self.drafted, self.accepted, run.draft = self.drafted + len(run.draft), self.accepted + accepted, []
                top_n = run.job.request.logprobs
                for index, token in zip(indices, drawn):
                    self._accept(run, token, now, None if top_n is None else self._logprob(index, token, top_n))
                    if not run.slot.busy:
                        break
        finally:
            self.step_started = None

    @property
    def stalled_s(self) -> float:
        """How long the decoding step under way has run (0: none is): the health check's."""
        started = self.step_started
        return time.monotonic() - started if started is not None else 0.0

    def _accept(self, run: _Run, token: int, now: float, logprob: TokenLogprob | None = None) -> None:
        if run.first_at is None:
            run.first_at = now
        if token in self._eog_set:  # EOS, EOT (never with ignore_eos)
            self._finish(run, "stop")
            return
        if logprob is not None:
            run.unsent_logprobs.append(logprob)
        run.output.append(token)
        run.generated += 1
        run.held += 1
        text = run.utf8.decode(self._piece(token))
        if run.job.thinking is not None:  # its reasoning kept apart; the stops see the answer only
            text = run.job.thinking.feed(run, text)
        run.unsent += run.stops.feed(text)
        # At once while the stream's previous message is taken; held while it is in flight (flush.py).
        unsent = run.unsent or (run.job.thinking is not None and run.job.thinking.unsent)
        if unsent and run.job.outbox.due(now, self.flush_interval, self._messages):
            self._send_text(run)
        if run.stops.stopped:
            self._finish(run, "stop")
        elif run.generated >= run.budget:
            self._finish(run, "length")
        else:
            run.next_token = token
            if run.job.thinking is not None:  # a spent thinking budget: the engine writes the end marker
                run.job.thinking.after(run)
            if run.drafter is not None:
                run.drafter.extend((token,))

    def _finish(self, run: _Run, reason: str) -> None:
        tail = run.utf8.decode(b"", final=True)
        if run.job.thinking is not None:
            tail = run.job.thinking.flush(tail)
        run.unsent += run.stops.feed(tail) + run.stops.flush()
        ended = time.perf_counter()
        if run.unsent or run.held:
            self._send_text(run)
        first_at = run.first_at or ended
        n = run.generated
        timings = {
            "queued_ms": round((run.admitted - run.job.submitted) * 1000, 2),
            "prompt_ms": round((first_at - run.admitted) * 1000, 2),
            "decode_ms": round((ended - first_at) * 1000, 2),
            "tokens_per_s": round((n - 1) / (ended - first_at), 2) if n > 1 and ended > first_at else None,
            "cached_tokens": run.reused,
        }
        # Free the slot before the caller hears Done, so that it is free for
        # whatever the caller sends next.
        self._release(run, keep_cells=True)
        if self._persist is not None:
            self._persist.save(run.job.request, run.slot, self._slots)
        context = tuple(run.job.tokens + run.output) if run.job.request.context is not None else None
        thought = run.job.thinking.tokens if run.job.thinking is not None else 0
        run.job.send(Done(reason, len(run.job.tokens), n, timings, context, run.stops.matched, thought))

    def _send_text(self, run: _Run) -> None:
        if run.job.thinking is not None and any(thought := run.job.thinking.take()):  # text or tokens
            run.job.send(Reasoning(*thought))
            run.held -= thought[1]
        run.job.send(Chunk(run.unsent, run.held, tuple(run.unsent_logprobs)))
        run.job.outbox.sent_one()
        run.unsent, run.held = "", 0
        run.unsent_logprobs = []

    def _logprob(self, index: int, token: int, top_n: int) -> TokenLogprob:
        """The chosen token's log-probability under the logits it was drawn from, and the top_n best."""
        row = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(self._ctx.ctx, index), shape=(self._n_vocab,))
        peak = float(row.max())
        lse = peak + float(np.log(np.exp(row - peak).sum()))
        top: tuple[tuple[str, float], ...] = ()
        if top_n > 0:
            best = np.argpartition(row, -top_n)[-top_n:]
            best = best[np.argsort(-row[best])]
            top = tuple((self._text(int(t)), float(row[t]) - lse) for t in best)
        return TokenLogprob(self._text(token), float(row[token]) - lse, top)

    def _text(self, token: int) -> str:
        return self._piece(token).decode("utf-8", errors="replace")

    def _finish_if_cancelled(self, run: _Run) -> bool:
        if not run.job.cancelled.is_set():
            return False
        self._release(run, keep_cells=True)
        return True

    def _release(self, run: _Run, *, keep_cells: bool) -> None:
        run.sampler.close()
        slot = run.slot
        if not keep_cells:
            # After a failed decode the cells cannot be trusted as a prefix.
            llama_cpp.llama_memory_seq_rm(self._mem, slot.seq, -1, -1)
            slot.tokens = []
        slot.busy = False
        slot.last_used = time.perf_counter()
        with self._lock:
            self._active -= 1
