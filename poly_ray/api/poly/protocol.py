"""Wire models of poly-ray's native HTTP API (Poly's paths and shapes)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from poly_ray import grammars
from poly_ray.api.fields import Body, Count, Tokens
from poly_ray.api.formats import format_grammar
from poly_ray.api.parsing import Stop

_UINT32 = 1 << 32


class CompletionParams(Body):
    """A prompt and the sampling settings a request may override (within the task's limits)."""

    prompt: str = Field(max_length=1_000_000)
    max_tokens: Tokens | None = None
    temperature: float | None = Field(None, ge=0, le=100)
    top_k: Count | None = None
    top_p: float | None = Field(None, gt=0, le=1)
    seed: int | None = Field(None, ge=0, lt=_UINT32)
    stop: Stop = None
    ignore_eos: bool | None = None
    # A JSON schema the answer must follow (this request only; beats the task's biaser).
    schema_: dict | None = Field(None, alias="schema")
    # A reasoning model's thinking: an effort level ("none" switches it off), as on OpenAI's chat.
    reasoning_effort: str | None = None

    def overrides(self, caps: grammars.Caps = grammars.DEFAULT_CAPS) -> dict:
        o = self.model_dump(exclude={"prompt", "schema_"}, exclude_none=True)
        if self.schema_ is not None:
            o["grammar"] = format_grammar("json_schema", self.schema_, "schema", caps)
        if self.reasoning_effort is not None:
            o["reasoning_field"] = "reasoning_effort"
        return o


class PromptBody(Body):
    prompt: str = Field(max_length=1_000_000)


class EmbeddingBody(Body):
    prompt: str | list[str] = Field(min_length=1)


class EmbeddingQuery(Body):
    """``GET /v1/model/{m}/embedding?prompt=...`` (Poly's): one text."""

    prompt: str = Field(min_length=1, max_length=1_000_000)


# What the routes answer. Documentation only (the routes build plain dicts); the
# fuzz test checks every answer against these.

class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    completion_tokens_details: dict[str, int] | None = None  # reasoning_tokens: of completion_tokens, the thinking


class ToolCall(BaseModel):
    id: str
    name: str
    arguments: dict


class Completion(BaseModel):
    text: str
    finish_reason: str
    usage: Usage
    timings: dict[str, float]
    tool_calls: list[ToolCall] | None = None  # a task with tools: the calls it made
    reasoning: str | None = None  # a reasoning model's thinking, apart from the text


class Status(BaseModel):
    status: str


class Readiness(BaseModel):
    ready: bool
    # What has not answered yet: "model NAME", "memories", "orchestrator".
    waiting: list[str]


class TaskStats(BaseModel):
    requests: int
    cycles: int
    errors: int
    cancelled: int
    prompt_tokens: int
    predict_tokens: int
    prompt_duration_s: float
    predict_duration_s: float


class Stats(BaseModel):
    tasks: dict[str, TaskStats]
    # Each model's engine stats (slots, active, waiting, kv_cache_usage, ...) from one
    # replica; null for a model that did not answer (not loaded yet).
    models: dict[str, dict | None]


class TaskList(BaseModel):
    tasks: list[str]


class ModelList(BaseModel):
    models: list[str]


class Embedding(BaseModel):
    embedding: list[float]


class Embeddings(BaseModel):
    embeddings: list[list[float]]


class Token(BaseModel):
    token: int  # Poly's name for the id
    id: int
    text: str


class Tokenization(BaseModel):
    tokens: list[Token]
