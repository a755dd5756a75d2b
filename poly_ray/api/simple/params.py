"""llm-api's ``params``: what its three back-ends document, mapped onto a task's overrides.

llm-api passes ``params`` on to its model family: llama-cpp-python's completion
arguments (``suffix``, ``logprobs``, ``echo``, ...), a Hugging Face
``GenerationConfig`` (``max_new_tokens``, ``max_length``, ``do_sample``,
``num_beams``, ...) or GPTQ-for-LLaMa's (``temp``, ``min_length``, ``max_length``).
Each name with a meaning here is mapped; the rest are refused naming what to use
instead, never dropped: a client that asks for beam search should hear it gets none.
"""

from __future__ import annotations

import difflib

from pydantic import Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from poly_ray.api.fields import COUNT_BOUND, Body, Count, Tokens
from poly_ray.api.parsing import Stop

# Names with no meaning here, and what to use instead.
REFUSED = {
    "typical_p": "locally typical sampling is not available; use min_p or top_p",
    "tfs_z": "tail-free sampling was removed from llama.cpp; use min_p",
    "mirostat_mode": "Mirostat is set per task (mirostat, mirostat_tau, mirostat_eta in the config)",
    "mirostat_tau": "Mirostat is set per task (mirostat, mirostat_tau, mirostat_eta in the config)",
    "mirostat_eta": "Mirostat is set per task (mirostat, mirostat_tau, mirostat_eta in the config)",
    "logits_processor": "use a task's biaser (a JSON schema) or a request's schema",
    "grammar": "use a task's biaser (a JSON schema) or POST /v1/task/{task}/completion with a schema",
    "no_repeat_ngram_size": "use repetition_penalty (or repeat_penalty)",
    "encoder_repetition_penalty": "use repetition_penalty (or repeat_penalty)",
    "bad_words_ids": "use stop, or a task's private_tokens",
    "force_words_ids": "use a request's schema",
    "eos_token_id": "use stop",
    "pad_token_id": "padding has no meaning for one prompt; leave it out",
    "max_time": "use max_new_tokens",
    "penalty_alpha": "contrastive search is not available; use do_sample",
    "guidance_scale": "classifier-free guidance is not available",
    "output_scores": "use /v1/completions with logprobs",
    "return_dict_in_generate": "/generate answers the text; use /v1/completions for more",
    "model": "/generate runs the config's default_task; use /v1/completions to name a model",
}
# Beam search: only its off values are accepted.
BEAM_ONLY = {"num_beams": 1, "num_beam_groups": 1, "length_penalty": 1.0, "early_stopping": False,
             "diversity_penalty": 0.0}


class Params(Body):
    """llama-cpp-python's, Hugging Face's and GPTQ-for-LLaMa's generation parameters."""


    # llama-cpp-python
    max_tokens: Tokens | None = None
    temperature: float | None = Field(None, ge=0, le=100)
    top_k: Count | None = None
    top_p: float | None = Field(None, gt=0, le=1)
    min_p: float | None = Field(None, ge=0, le=1)
    repeat_penalty: float | None = Field(None, gt=0, le=100)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    seed: int | None = Field(None, ge=0, lt=1 << 32)
    stop: Stop = None
    suffix: str | None = Field(None, max_length=100_000)  # appended to the generated text
    echo: bool | None = None  # the text starts with the prompt
    logprobs: int | None = Field(None, ge=0, le=20)
    # Hugging Face GenerationConfig
    max_new_tokens: Tokens | None = None
    min_new_tokens: Count | None = None
    max_length: Tokens | None = None  # prompt tokens included
    min_length: Count | None = None  # prompt tokens included
    do_sample: bool | None = None
    repetition_penalty: float | None = Field(None, gt=0, le=100)
    num_return_sequences: int | None = Field(None, ge=1, le=1)
    stop_strings: Stop = None
    num_beams: int | None = Field(None, ge=1, le=1 << 10)
    num_beam_groups: int | None = Field(None, ge=1, le=1 << 10)
    length_penalty: float | None = Field(None, ge=-100, le=100)
    early_stopping: bool | None = None
    diversity_penalty: float | None = Field(None, ge=0, le=100)
    # GPTQ-for-LLaMa, and llm-api's first llama.cpp back-end (what langchain-llm-api's docs send:
    # {"n_predict": 300, "temp": 0.2}); n_predict -1 is llama.cpp's "until the end": the task's limit.
    temp: float | None = Field(None, ge=0, le=100)
    n_predict: int | None = Field(None, ge=-1, le=COUNT_BOUND)
    repeat_last_n: Count | None = None

    @model_validator(mode="before")
    @classmethod
    def _known(cls, data):
        if not isinstance(data, dict):
            return data
        for name in data:
            if name in REFUSED:
                raise PydanticCustomError("unsupported", "'{name}' is not supported: {advice}",
                                          {"name": name, "advice": REFUSED[name]})
            if name not in cls.model_fields:
                near = difflib.get_close_matches(name, [*cls.model_fields], n=1, cutoff=0.6)
                hint = f" (the nearest supported is '{near[0]}')" if near else ""
                raise PydanticCustomError("unknown", "unknown parameter '{name}'{hint}", {"name": name, "hint": hint})
        return data

    @field_validator(*BEAM_ONLY)
    @classmethod
    def _no_beams(cls, v, info):
        if v is not None and v != BEAM_ONLY[info.field_name]:
            raise PydanticCustomError(
                "unsupported", "beam search is not supported: leave it out, or use do_sample = false for greedy decoding"
            )
        return v

    @field_validator("logprobs")
    @classmethod
    def _logprobs(cls, v):
        if v:
            raise PydanticCustomError(
                "unsupported", "/generate answers only the text: use /v1/completions with logprobs"
            )
        return v

    @field_validator("n_predict")
    @classmethod
    def _predict(cls, v):
        if v == 0:
            raise PydanticCustomError("unsupported", "at least 1 token, or -1 for as many as the task allows")
        return v

    @field_validator("num_return_sequences", mode="before")
    @classmethod
    def _one(cls, v):
        if v not in (None, 1):
            raise PydanticCustomError("unsupported", "one answer per request: send several requests (with other seeds)")
        return v

    def overrides(self) -> dict:
        """The task overrides these stand for (suffix and echo are the route's)."""
        o = {
            "max_tokens": self.max_new_tokens or self.max_tokens or (self.n_predict if self.n_predict != -1 else None),
            "temperature": self.temperature if self.temperature is not None else self.temp,
            "top_k": self.top_k,
            "top_p": self.top_p,
            "min_p": self.min_p,
            "repeat_penalty": self.repeat_penalty if self.repeat_penalty is not None else self.repetition_penalty,
            "repeat_last_n": self.repeat_last_n,
            "frequency_penalty": self.frequency_penalty,
            "presence_penalty": self.presence_penalty,
            "seed": self.seed,
            "stop": _stops(self.stop) + _stops(self.stop_strings) or None,
            "min_tokens": self.min_new_tokens,
            "min_length": self.min_length,
            # Hugging Face: max_new_tokens wins over max_length.
            "max_length": None if self.max_new_tokens else self.max_length,
        }
        if self.do_sample is False:  # greedy, as transformers decodes without sampling
            o["temperature"] = 0.0
        return {k: v for k, v in o.items() if v is not None}


def _stops(value: list[str] | str | None) -> list[str]:
    return [value] if isinstance(value, str) else list(value or [])
