"""``[tasks.NAME]``: a way of using a model (prompt text around the user's, sampling,
limits, a JSON-schema biaser, recall from a memory, tools)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, StrictBool, field_validator, model_validator

from poly_ray import tools as tool_calls
from poly_ray.chat_template import check as check_template
from poly_ray.errors import ConfigError
from poly_ray.grammars import Caps, from_schema

from . import sampler_chain
from .base import Strict
from .models import Speculative
from .reasoning import REASONING_DOC, Reasoning


class Biaser(Strict):
    """Output that follows a JSON schema, enforced token by token with a grammar: exactly
    one of ``json_schema`` and ``json_schema_file``. Standard JSON Schema or Poly's dialect
    (``min``, ``max``, ``max_decimals``, ...), held to ``schema_limits``; a keyword a grammar
    cannot enforce stops start-up naming it. A request's own schema wins over it."""

    json_schema: dict[str, Any] | None = Field(None, description="The schema, inline (a TOML table).")
    json_schema_file: Path | None = Field(None, description=(
        "A JSON file holding the schema, relative to the config; read at start-up."))

    @model_validator(mode="after")
    def _one(self):
        if (self.json_schema is None) == (self.json_schema_file is None):
            raise ValueError("set exactly one of json_schema, json_schema_file")
        return self


class Memorization(Strict):
    """A task that recalls from a memory: ``memorization = { memory = "docs", retrieve = 3 }``.
    Recall and storing use the memory's embedding model, never the task's. A task with a
    memory runs in the orchestrator deployment; one without runs in the ingress."""

    memory: str = Field(description="The memory (a `[memories.NAME]`).")
    retrieve: int = Field(3, ge=0, le=100, description=(
        "How many of the best chunks for the prompt go before the prefix of every turn (0: none)."))
    store_prompts: bool = Field(False, description=(
        "Store every prompt of the task in the memory (beside the generation, once the model accepted the "
        "prompt), as its caller's: the key's name, the token's `sub`, or an anonymous client's address. A caller "
        "recalls the documents and its own prompts only, never another credential's."))


_MIROSTAT = "Not beside top_k, top_p, min_p or typical_p."


class TaskConfig(Strict):
    """A way of using a model; many tasks may share one. Per turn the model sees
    ``[recalled chunks] + prefix + prompt + postfix``, with the prelude once at the start of
    a session. A task's own text (prelude, prefix, postfix) may spell special tokens such as
    ``<start_of_turn>``; a user's prompt is always tokenized as plain text. A request may set
    its own temperature, top_k, top_p, min_p, penalties, seed, stop sequences and schema,
    and ask for fewer tokens than ``max_tokens``."""

    model: str = Field(description="The model it runs (a `[models.NAME]`).")
    prelude: str = Field("", description="Fed once, at the start of each session (a system prompt).")
    prefix: str = Field("", description="Goes before each prompt.")
    postfix: str = Field("", description="Goes after each prompt.")
    stop_sequences: list[str] = Field([], description="Text that ends the answer where the model writes it.")
    private_tokens: list[str] = Field([], description=(
        "Text a user's prompt may not hold (400), and that ends the answer when the model writes it: the "
        "template's own turn markers, such as `<end_of_turn>`."))
    max_tokens: int = Field(256, ge=1, le=1 << 20, description=(
        "Tokens an answer may have; a request may ask for fewer, never more (400)."))
    temperature: float = Field(0.8, ge=0, le=100, description=(
        "Sampling temperature; 0 always picks the likeliest token."))
    top_k: int = Field(40, ge=0, le=1 << 20, description="Only the k likeliest tokens are drawn from (0: off).")
    top_p: float = Field(0.95, gt=0, le=1, description=(
        "Nucleus sampling: the likeliest tokens up to this probability (1: off)."))
    min_p: float = Field(0.05, ge=0, le=1, description=(
        "Tokens less likely than this share of the likeliest one's probability are dropped (0: off)."))
    repeat_penalty: float = Field(1.1, gt=0, le=100, description=(
        "Penalty on tokens among the last `repetition_penalty_last_n` (1: off)."))
    repetition_penalty_last_n: int = Field(
        64, ge=0, le=1 << 20, description="How many of the last tokens the penalties look at.")
    frequency_penalty: float = Field(0.0, ge=-2, le=2, description=(
        "Penalty per earlier occurrence of a token (0: off)."))
    presence_penalty: float = Field(0.0, ge=-2, le=2, description="Penalty on any token that occurred (0: off).")
    mirostat: Literal[0, 1, 2] = Field(0, description=f"Mirostat sampling, version 1 or 2 (0: off). {_MIROSTAT}")
    mirostat_tau: float = Field(5.0, gt=0, le=100, description="Mirostat's target surprise.")
    mirostat_eta: float = Field(0.1, gt=0, le=1, description="Mirostat's learning rate.")
    mirostat_m: int = Field(100, ge=1, le=1 << 20, description="Mirostat 1: the candidates its estimate uses (m).")
    # Poly's configs give n_vocab.
    mirostat_n_vocab: int | None = Field(None, ge=1, le=1 << 24, description=(
        "Mirostat 1: the vocabulary size in its formula (not set: the model's own)."))
    typical_p: float = Field(1.0, gt=0, le=1, description="Locally typical sampling (1: off).")
    min_keep: int = Field(1, ge=1, le=1 << 20, description=(
        "Tokens top-k, top-p, min-p and typical sampling always keep."))
    seed: int | None = Field(None, ge=0, lt=1 << 32, description=(
        "Sampling seed, for answers that repeat (not set: random)."))
    biaser: Biaser | None = Field(None, description=(
        'The answer follows a JSON schema: `{ json_schema = {...} }` or `{ json_schema_file = "x.json" }`.'))
    bias_prompt: str | None = Field(None, description=(
        "With a biaser: the free answer is generated first (not returned), then this is fed, then the biased "
        "answer is generated and returned."))
    memorization: Memorization | None = Field(None, description=(
        "Recall from a memory, and optionally store the prompts in it."))
    chat_template: str | None = Field(None, description=(
        "How message lists (OpenAI's and Ollama's chat APIs) are written for the model: a Jinja template in "
        "Hugging Face's style (`messages`, `add_generation_prompt`, `bos_token`, `eos_token`). Not set: the "
        "model's own template from its GGUF, else prefix + message + postfix for each user message. The "
        "messages' text never becomes a special token, and a template that cuts or rewrites it is refused (400)."))
    context_overflow: Literal["error", "drop_oldest"] = Field("error", description=(
        'A chat session whose next turn does not fit the context: end the turn with `context_full` ("error"), '
        "or keep the prelude and drop the oldest turns."))
    tools: list[dict[str, Any]] | None = Field(None, description=(
        "Tools in OpenAI's shape (`{ type = \"function\", function = { name, description, parameters } }`), "
        "offered when a chat request brings none, so a task can be an agent step; their schemas are held to "
        "`schema_limits` at start-up."))
    tool_choice: str | dict[str, Any] | None = Field(None, description=(
        'How the model may use the tools, as OpenAI\'s `tool_choice`: "auto" (not set), "none", "required", or '
        '`{ type = "function", function = { name = "..." } }`.'))
    reasoning: Reasoning | None = Field(None, description=(
        "Where the model's thinking is, for this task (not set: the model's `reasoning`). " + REASONING_DOC))
    max_reasoning_tokens: int | None = Field(None, ge=0, le=1 << 20, description=(
        "Tokens the model may think before the engine writes the end marker itself and the answer follows "
        "(0: no thinking; not set: up to max_tokens). A request's budget or effort may ask for fewer, never more."))
    # A strict bool: "false" or 0 is no switch (pydantic would read them as False).
    speculative: Speculative | StrictBool | None = Field(None, description=(
        "Speculative decoding for this task (not set: the model's `speculative`): a table as the model's turns "
        "it on with those settings, `true` with the defaults, `false` off; on for a task whose answers copy its "
        "documents, off for free-form chat on the same model."))

    # Keys the TOML may hold that are no field: a validator turns them into fields.
    EXTRA_KEYS: ClassVar[dict[str, tuple[str, str]]] = {
        "samplers": ("list of strings", (
            "Sampling written as Poly's sampler chains, read as Poly's `llm` crate reads them, e.g. "
            '`["repetition:penalty=1.1:last_n=64/topk:k=40/topp:p=0.9/temperature:0.7"]` or '
            '`["mirostat1:n_vocab=32000"]`. Entries are `name[:key=value...]`, separated by `/` or spaces. The '
            "chain sets the keys above, and may not be combined with them. As in Poly, llm's default chain stays "
            "where a chain does not name a sampler: repetition 1.30 over 64 tokens and temperature 0.8 always, "
            "top-k 40 and top-p 0.95 unless it names a Mirostat sampler; the rest are off. A sampler llama.cpp "
            "lacks is refused naming the nearest one.")),
    }

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
        if self.biaser is None:
            return None
        if self.biaser.json_schema is None:  # load() reads json_schema_file into json_schema
            raise ConfigError("biaser.json_schema_file was not read: load the config with load()")
        return from_schema(self.biaser.json_schema, "biaser.json_schema", caps)

    @field_validator("stop_sequences")
    @classmethod
    def _stops(cls, v):
        if any(s == "" for s in v):
            raise ValueError("stop sequences must not be empty strings")
        return v
