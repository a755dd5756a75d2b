"""Per-request sampler chains on llama.cpp's sampler API.

Each request gets its own chain, so requests decoding side by side in one
context each keep their own seed, penalties and grammar.
"""

from __future__ import annotations

import ctypes
import random
from collections import Counter, deque

import llama_cpp

from poly_ray.errors import BadRequest
from poly_ray.generation import Sampling


class SamplerChain:
    """An owned ``llama_sampler`` chain; ``close()`` frees it."""

    def __init__(
        self,
        vocab,
        n_vocab: int,
        s: Sampling,
        *,
        grammar: str | None = None,
        banned: list[int] | None = None,
        history: list[int] | None = None,
        min_tokens: int = 0,
        eog: list[int] | None = None,
    ):
        # The first min_tokens draws cannot end the generation (HF's min_new_tokens).
        self._hold, self._eog = (min_tokens, eog) if min_tokens and eog else (0, [])
        self._chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
        self.seed = s.seed if s.seed is not None else random.getrandbits(32)
        self._s = s
        # Penalties are applied here, to the few tokens of the recent history,
        # rather than by llama.cpp's penalties sampler, which visits every
        # candidate: 0.75 ms of a 0.95 ms sample with a 262k vocabulary.
        # The prompt counts as history, as in llama.cpp.
        penalised = s.repeat_last_n > 0 and (s.repeat_penalty != 1.0 or s.frequency_penalty or s.presence_penalty)
        self._history = deque((history or [])[-s.repeat_last_n :], maxlen=s.repeat_last_n) if penalised else None
        try:
            # A request's logit_bias, and ignore_eos's end-of-generation tokens that can never be drawn.
            biases = [*s.logit_bias, *((token, float("-inf")) for token in banned or ())]
            if biases:
                bias = (llama_cpp.llama_logit_bias * len(biases))()
                for i, (token, value) in enumerate(biases):
                    # llama_cpp declares the fields as their ctypes types; ctypes converts a Python int.
                    bias[i].token, bias[i].bias = token, value  # type: ignore[assignment]
                self._add(llama_cpp.llama_sampler_init_logit_bias(n_vocab, len(biases), bias))
            if grammar is not None:
                g = llama_cpp.llama_sampler_init_grammar(vocab, grammar.encode(), b"root")
                if not g:
                    raise BadRequest("the grammar does not parse (GBNF with a 'root' rule expected)")
                self._add(g)
            if s.temperature <= 0:
                self._add(llama_cpp.llama_sampler_init_greedy())
            elif s.mirostat == 1:
                self._add(llama_cpp.llama_sampler_init_temp(s.temperature))
                self._add(llama_cpp.llama_sampler_init_mirostat(
                    s.mirostat_n_vocab or n_vocab, self.seed, s.mirostat_tau, s.mirostat_eta, s.mirostat_m))
            elif s.mirostat == 2:
                self._add(llama_cpp.llama_sampler_init_temp(s.temperature))
                self._add(llama_cpp.llama_sampler_init_mirostat_v2(self.seed, s.mirostat_tau, s.mirostat_eta))
            else:
                # llm's order (Poly's): top-k, locally typical, top-p, min-p, temperature, draw.
                if s.top_k > 0:
                    self._add(llama_cpp.llama_sampler_init_top_k(max(s.top_k, s.min_keep)))
                if s.typical_p < 1.0:
                    self._add(llama_cpp.llama_sampler_init_typical(s.typical_p, s.min_keep))
                if s.top_p < 1.0:
                    self._add(llama_cpp.llama_sampler_init_top_p(s.top_p, s.min_keep))
                if s.min_p > 0.0:
                    self._add(llama_cpp.llama_sampler_init_min_p(s.min_p, s.min_keep))
                self._add(llama_cpp.llama_sampler_init_temp(s.temperature))
                self._add(llama_cpp.llama_sampler_init_dist(self.seed))
        except BaseException:
            self.close()
            raise

    def _add(self, sampler) -> None:
        llama_cpp.llama_sampler_chain_add(self._chain, sampler)

    def sample(self, ctx, index: int) -> int:
        """Draw a token from the logits of batch entry ``index`` (and accept it)."""
        if self._history or self._hold:
            logits = llama_cpp.llama_get_logits_ith(ctx, index)
            if self._history:
                self._penalise(logits)
            if self._hold:
                self._hold -= 1
                for token in self._eog:
                    logits[token] = float("-inf")
        token = llama_cpp.llama_sampler_sample(self._chain, ctx, ctypes.c_int32(index))
        if self._history is not None:
            self._history.append(token)
        return token

    def _penalise(self, logits) -> None:
        """llama.cpp's repeat, frequency and presence penalties, in place on the logits."""
        s = self._s
        for token, count in Counter(self._history).items():
            v = logits[token]
            v = v / s.repeat_penalty if v > 0 else v * s.repeat_penalty
            logits[token] = v - count * s.frequency_penalty - s.presence_penalty

    def close(self) -> None:
        if self._chain is not None:
            llama_cpp.llama_sampler_free(self._chain)
            self._chain = None
