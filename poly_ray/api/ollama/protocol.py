"""What Ollama clients send and receive: bodies, options and answers of /api/*."""


from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from poly_ray import grammars, tools
from poly_ray.api.fields import MAX_MESSAGES, Body, Count
from poly_ray.api.formats import format_grammar
from poly_ray.api.parsing import StopList
from poly_ray.errors import BadRequest

VERSION = "0.6.0"  # the Ollama API version whose shapes these routes follow


# Ollama's options that tune its own server (memory, threads, GPUs): accepted, and
# ignored, since a model's config decides them here. Any other unknown option is refused.
_SERVER_OPTIONS = ("numa", "num_ctx", "num_batch", "num_gpu", "main_gpu", "low_vram", "f16_kv", "logits_all",
                   "vocab_only", "use_mmap", "use_mlock", "embedding_only", "num_thread", "num_keep")


class Options(Body):
    """Ollama's runtime options."""

    num_predict: int | None = Field(None, ge=-2, le=1 << 20)
    temperature: float | None = Field(None, ge=0, le=100)
    top_k: Count | None = None
    top_p: float | None = Field(None, gt=0, le=1)
    min_p: float | None = Field(None, ge=0, le=1)
    seed: int | None = Field(None, ge=0, lt=1 << 32)
    stop: StopList = None
    repeat_penalty: float | None = Field(None, gt=0, le=100)
    repeat_last_n: Count | None = None
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    presence_penalty: float | None = Field(None, ge=-2, le=2)

    # Sampling options of Ollama's that poly-ray does not implement: refused when set.
    tfs_z: float | None = None
    typical_p: float | None = None
    mirostat: int | None = None
    mirostat_tau: float | None = None
    mirostat_eta: float | None = None
    penalize_newline: bool | None = None

    @model_validator(mode="before")
    @classmethod
    def _drop_server_options(cls, data):
        return {k: v for k, v in data.items() if k not in _SERVER_OPTIONS} if isinstance(data, dict) else data

    @model_validator(mode="after")
    def _supported(self):
        for name in ("tfs_z", "typical_p", "mirostat", "mirostat_tau", "mirostat_eta", "penalize_newline"):
            if getattr(self, name):
                raise ValueError(f"options.{name}: not supported")
        return self

    def overrides(self) -> dict:
        o = self.model_dump(exclude_none=True, exclude={"tfs_z", "typical_p", "mirostat", "mirostat_tau",
                                                        "mirostat_eta", "penalize_newline"})
        n = o.pop("num_predict", None)
        if n is not None and n > 0:  # -1 / -2: as much as the task allows
            o["max_tokens"] = n
        return o


# Tabby's template: the prompt as it is, which is what `raw` means.
PROMPT_ONLY = re.compile(r"\s*\{\{-?\s*\.Prompt\s*-?\}\}\s*")


class GenerationBody(Body):
    model: str
    stream: bool = True
    format: Literal["", "json"] | dict[str, Any] | None = None
    options: Options = Field(default_factory=Options)
    keep_alive: str | float | None = None
    think: bool | str | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None

    @model_validator(mode="after")
    def _supported(self):
        # Sent by clients with empty values; refused only when asked for.
        for name in ("logprobs", "top_logprobs", "images", "suffix", "context"):
            if getattr(self, name, None):
                raise ValueError(f"{name}: not supported")
        template = getattr(self, "template", None)
        if template and not PROMPT_ONLY.fullmatch(template):
            raise ValueError("template: only a template that places the prompt alone ('{{ .Prompt }}', the raw "
                             "prompt) is supported; the task's prefix and postfix are its template")
        return self

    @property
    def unloads(self) -> bool:
        """``keep_alive`` 0 (a number, or a duration such as "0s" or "0m"): Ollama's request to unload."""
        k = self.keep_alive
        if isinstance(k, int | float) and not isinstance(k, bool):
            return k == 0
        return isinstance(k, str) and bool(re.fullmatch(r"\s*-?0*(\.0*)?(ns|us|µs|ms|s|m|h)?\s*", k)) and any(
            c.isdigit() for c in k)

    def overrides(self, caps: grammars.Caps = grammars.DEFAULT_CAPS) -> dict:
        o = self.options.overrides()
        if self.format == "json" or isinstance(self.format, dict):  # any JSON, or a schema's
            kind = "json_object" if self.format == "json" else "json_schema"
            o["grammar"] = format_grammar(kind, self.format, "format", caps)
        if isinstance(self.think, bool):  # a reasoning model's thinking, on or off
            o.update(thinking=self.think, reasoning_field="think")
        elif self.think is not None:  # an effort level ("high", "medium", "low")
            o.update(reasoning_effort=self.think, reasoning_field="think")
        return o


class GenerateBody(GenerationBody):
    prompt: str = Field("", max_length=1_000_000)
    system: str | None = None
    raw: bool = False
    suffix: str | None = None
    template: str | None = None
    context: list[int] | None = None
    images: list[Any] | None = None

    @property
    def raw_prompt(self) -> bool:
        """``raw``, or a template that places the prompt alone (the validator refuses any other)."""
        return self.raw or bool(self.template)

    @model_validator(mode="after")
    def _raw(self):
        if self.raw_prompt and self.system:
            raise ValueError("system: a raw prompt is sent to the model as it is; put the system text in the prompt")
        return self

    def overrides(self, caps: grammars.Caps = grammars.DEFAULT_CAPS) -> dict:
        o = super().overrides(caps)
        if self.raw_prompt:
            o["raw"] = True  # no prelude, prefix, postfix or recall: the prompt as it is
        return o


class CallFunction(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)
    index: int | None = None


class MessageToolCall(BaseModel):
    model_config = ConfigDict(extra="forbid")

    function: CallFunction
    id: str | None = None


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "user", "assistant", "tool"]
    content: str = ""
    # An earlier answer's thinking: accepted, and left out of the prompt as the models' templates do.
    thinking: str | None = None
    # Sent by clients with empty values; refused only when set.
    images: list[Any] | None = None
    tool_name: str | None = None  # a tool message: whose result it is
    tool_calls: list[MessageToolCall] | None = None  # an assistant's earlier calls

    @model_validator(mode="after")
    def _supported(self):
        if self.images:
            raise ValueError("images: not supported")
        return self


class ChatBody(GenerationBody):
    # No messages: Ollama's request to load (or, with keep_alive 0, unload) the model.
    messages: list[Message] = Field(default_factory=list, max_length=MAX_MESSAGES)
    tools: list[Any] | None = None

    def conversation(self) -> list[tuple[str, str]]:
        """The messages as (role, content) pairs, as on the OpenAI route."""
        out = []
        for i, m in enumerate(self.messages):
            if m.tool_calls:
                if m.role != "assistant":
                    raise BadRequest(f"messages[{i}].tool_calls: only assistant messages carry tool calls")
                calls = [(c.function.name, c.function.arguments) for c in m.tool_calls]
                out.append(("assistant", tools.envelope(calls, m.content)))
            elif m.role == "tool":
                out.append(tools.tool_result(m.tool_name, m.content))
            else:
                out.append((m.role, m.content))
        return out

    def overrides(self, caps: grammars.Caps = grammars.DEFAULT_CAPS) -> dict:
        o = super().overrides(caps)
        if self.tools:
            o["tools"] = self.tools
        return o


class EmbedBody(Body):
    model: str
    input: str | list[str] = Field(min_length=1)
    truncate: bool = True
    keep_alive: str | int | None = None
    options: dict | None = None


class _Named(BaseModel):
    """A body naming a model as ``model``, or as ``name`` (Ollama's older field, still sent by some clients)."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = None
    name: str | None = None

    @model_validator(mode="after")
    def _one_name(self):
        if self.model is None and self.name is None:
            raise ValueError("model: Field required")
        if self.model is not None and self.name is not None and self.model != self.name:
            raise ValueError("name: differs from model; send one of them")
        self.model = self.model if self.model is not None else self.name
        return self


class ShowBody(_Named):
    verbose: bool | None = None


class PullBody(_Named):
    insecure: bool | None = None  # Ollama's registry TLS; nothing here is fetched from its registry
    stream: bool = True
    username: str | None = None
    password: str | None = None


# What the routes answer. Documentation only (the routes build plain dicts); the
# fuzz test checks every answer against these.

class OllamaVersion(BaseModel):
    version: str


class OllamaModelDetails(BaseModel):
    format: str
    family: str
    parameter_size: str
    quantization_level: str


class OllamaModelEntry(BaseModel):
    name: str
    model: str
    modified_at: str
    size: int
    digest: str
    details: OllamaModelDetails


class OllamaTags(BaseModel):
    models: list[OllamaModelEntry]


class OllamaShow(BaseModel):
    modelfile: str
    parameters: str
    template: str
    details: OllamaModelDetails
    model_info: dict[str, Any]
    capabilities: list[str]


class _OllamaDone(BaseModel):
    model: str
    created_at: str
    done: Literal[True]
    done_reason: Literal["stop", "length"]
    total_duration: int
    load_duration: int
    prompt_eval_count: int
    prompt_eval_duration: int
    eval_count: int
    eval_duration: int


class OllamaGenerateResponse(_OllamaDone):
    response: str
    thinking: str | None = None  # a reasoning model's thinking, with think


class OllamaLoaded(BaseModel):
    """The answer to an empty prompt (load) or to one with keep_alive 0 (unload)."""

    model: str
    created_at: str
    response: str | None = None
    message: dict[str, str] | None = None
    done: Literal[True]
    done_reason: Literal["load", "unload"] | None = None


class OllamaRunning(BaseModel):
    name: str
    model: str
    size: int
    digest: str
    details: OllamaModelDetails
    expires_at: str
    size_vram: int
    context_length: int


class OllamaPs(BaseModel):
    models: list[OllamaRunning]


class OllamaProgress(BaseModel):
    status: str
    digest: str | None = None
    total: int | None = None
    completed: int | None = None


class OllamaCallFunction(BaseModel):
    name: str
    arguments: dict[str, Any]


class OllamaToolCall(BaseModel):
    function: OllamaCallFunction


class OllamaChatMessage(BaseModel):
    role: Literal["assistant"]
    content: str
    thinking: str | None = None  # a reasoning model's thinking, with think
    tool_calls: list[OllamaToolCall] | None = None


class OllamaChatResponse(_OllamaDone):
    message: OllamaChatMessage


class OllamaEmbedResponse(BaseModel):
    model: str
    embeddings: list[list[float]]
    total_duration: int
    load_duration: int
