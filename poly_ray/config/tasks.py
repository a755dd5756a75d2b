"""``[tasks.NAME]``: a way of using a model (prompt text around the user's, sampling,
limits, a JSON-schema biaser, recall from a memory, tools)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from poly_ray import tools as tool_calls
from poly_ray.chat_template import check as check_template
from poly_ray.errors import ConfigError
from poly_ray.grammars import Caps, from_schema

from . import sampler_chain
from .base import Strict


class Biaser(Strict):
    """Output that follows a JSON schema: inline, or from a file (relative to the config)."""

    json_schema: dict[str, Any] | None = None
    json_schema_file: Path | None = None

    @model_validator(mode="after")
    def _one(self):
        if (self.json_schema is None) == (self.json_schema_file is None):
            raise ValueError("set exactly one of json_schema, json_schema_file")
        return self


class Memorization(Strict):
    """A task that recalls from a memory: the ``retrieve`` best chunks go before
    the prefix of every turn; with ``store_prompts`` the user's prompts are stored."""

    memory: str
    retrieve: int = Field(3, ge=0, le=100)
    store_prompts: bool = False


class TaskConfig(Strict):
    model: str
    prelude: str = ""
    prefix: str = ""
    postfix: str = ""
    stop_sequences: list[str] = []
    private_tokens: list[str] = []
    max_tokens: int = Field(256, ge=1, le=1 << 20)
    temperature: float = Field(0.8, ge=0, le=100)
    top_k: int = Field(40, ge=0, le=1 << 20)
    top_p: float = Field(0.95, gt=0, le=1)
    min_p: float = Field(0.05, ge=0, le=1)
    repeat_penalty: float = Field(1.1, gt=0, le=100)
    repetition_penalty_last_n: int = Field(64, ge=0, le=1 << 20)
    frequency_penalty: float = Field(0.0, ge=-2, le=2)
    presence_penalty: float = Field(0.0, ge=-2, le=2)
    mirostat: Literal[0, 1, 2] = 0
    mirostat_tau: float = Field(5.0, gt=0, le=100)
    mirostat_eta: float = Field(0.1, gt=0, le=1)
    # Mirostat 1's candidates for its estimate (m) and the vocabulary size in its formula
    # (Poly's configs give n_vocab; by default, the model's own).
    mirostat_m: int = Field(100, ge=1, le=1 << 20)
    mirostat_n_vocab: int | None = Field(None, ge=1, le=1 << 24)
    typical_p: float = Field(1.0, gt=0, le=1)  # locally typical sampling (1: off)
    min_keep: int = Field(1, ge=1, le=1 << 20)  # tokens top-k, top-p, min-p and typical always keep
    seed: int | None = Field(None, ge=0, lt=1 << 32)
    biaser: Biaser | None = None
    # With a biaser: the free answer is generated (not returned), this is fed,
    # then the biased answer is generated and returned.
    bias_prompt: str | None = None
    memorization: Memorization | None = None
    # How message lists (OpenAI/Ollama chat) are written for the model: a Jinja
    # chat template (Hugging Face style). Without one: the model's GGUF template
    # when it has one, else prefix/postfix around each user message.
    chat_template: str | None = None
    # A chat session whose next turn does not fit the context: end the turn with
    # context_full ("error"), or keep the prelude and drop the oldest turns.
    context_overflow: Literal["error", "drop_oldest"] = "error"
    # Tools (OpenAI's shape) offered when a chat request brings none, and how the
    # model may use them (OpenAI's tool_choice; default auto), so a task can be an agent step.
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None

    @model_validator(mode="before")
    @classmethod
    def _samplers(cls, data):
        """Poly's sampler chain becomes the standard keys (which it then owns)."""
        if not isinstance(data, dict) or "samplers" not in data:
            return data
        chains = data["samplers"]
        if isinstance(chains, str):
            chains = [chains]
        if not isinstance(chains, list) or not all(isinstance(c, str) for c in chains):
            raise ValueError("samplers must be a list of strings")
        values = sampler_chain.parse(chains)
        both = sorted(set(values) & set(data) - {"samplers"})
        if both:
            raise ValueError(f"samplers sets {', '.join(both)}: remove the separate key(s) or the chain")
        return {**{k: v for k, v in data.items() if k != "samplers"}, **values}

    @model_validator(mode="after")
    def _combinations(self):
        truncating = self.top_k > 0 or self.top_p < 1 or self.min_p > 0 or self.typical_p < 1
        if self.mirostat and {"top_k", "top_p", "min_p", "typical_p"} & self.model_fields_set and truncating:
            raise ValueError("mirostat replaces top_k, top_p, min_p and typical_p: set one or the other")
        if self.bias_prompt is not None and self.biaser is None:
            raise ValueError("bias_prompt needs a biaser")
        if any(not t for t in self.private_tokens):
            raise ValueError("private_tokens must not be empty strings")
        if self.chat_template is not None:
            try:
                check_template(self.chat_template)
            except ConfigError as e:
                raise ValueError(str(e)) from None
        # The tools are checked with the whole config, against its schema_limits (loading.validate).
        return self

    # The grammars take the config's schema_limits as an argument, never from the task:
    # each deployment validates its tasks on its own, and all of them must hold the
    # biaser and the tools to the same, configured caps (Config.schema_limits.caps()).
    def tool_plan(self, caps: Caps) -> tool_calls.Plan:
        """The task's own tools and tool_choice, their schemas held to ``caps``."""
        return tool_calls.plan(self.tools, self.tool_choice, caps=caps)

    def biaser_grammar(self, caps: Caps) -> str | None:
        """The task's biaser as a grammar held to ``caps`` (its schema file is read at start-up)."""
        return from_schema(self.biaser.json_schema, "biaser.json_schema", caps) if self.biaser else None

    @field_validator("stop_sequences")
    @classmethod
    def _stops(cls, v):
        if any(s == "" for s in v):
            raise ValueError("stop sequences must not be empty strings")
        return v
