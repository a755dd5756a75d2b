"""Wire models of the OpenAI-compatible API (``/v1/completions``, ``/v1/chat/completions``, ...).

Fields OpenAI clients commonly send are accepted; values poly-ray cannot honour
(``n`` other than 1, say) are refused with a 400 rather than ignored.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from poly_ray import grammars, tools
from poly_ray.api.content import text_of
from poly_ray.api.fields import MAX_MESSAGES, Body, Count, Tokens
from poly_ray.api.formats import format_grammar
from poly_ray.api.parsing import Stop
from poly_ray.errors import BadRequest

_UINT32 = 1 << 32
# OpenAI's logit_bias: a token id (a JSON key, so a string) to a bias from -100 (banned) to 100 (forced).
TokenId = Annotated[int, Field(ge=0, lt=_UINT32)]
Bias = Annotated[float, Field(ge=-100, le=100)]


def logprob_content(entries) -> list[dict]:
    """Log-probabilities (``generation.TokenLogprob``) as chat's ``logprobs.content`` and the
    Responses API's ``output_text.logprobs`` write them."""

    def entry(token: str, logprob: float) -> dict:
        return {"token": token, "logprob": logprob, "bytes": list(token.encode())}

    return [{**entry(e.token, e.logprob), "top_logprobs": [entry(t, lp) for t, lp in e.top]} for e in entries]


class StreamOptions(Body):
    include_usage: bool = False


class JsonSchemaFormat(Body):
    name: str = "response"
    description: str | None = None
    schema_: dict[str, Any] = Field(default_factory=dict, alias="schema")
    strict: bool | None = None


class ResponseFormat(Body):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None

    def grammar(self, caps: grammars.Caps = grammars.DEFAULT_CAPS) -> str | None:
        """The GBNF grammar that enforces this format, or None for free text."""
        schema = self.json_schema.schema_ if self.json_schema is not None else None
        return format_grammar(self.type, schema, "response_format.json_schema.schema", caps)


class _Sampling(Body):
    model: str
    max_tokens: Tokens | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    seed: int | None = Field(None, ge=0, lt=_UINT32)
    stop: Stop = None
    n: int = Field(1, ge=1, le=128)
    stream: bool = False
    stream_options: StreamOptions | None = None
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    user: str | None = None
    # What clients pass through the SDK's extra_body, as llama-server and vLLM take them.
    top_k: Count | None = None
    min_p: float | None = Field(None, ge=0, le=1)
    repetition_penalty: float | None = Field(None, gt=0, le=100)  # vLLM's name
    repeat_penalty: float | None = Field(None, gt=0, le=100)  # llama-server's
    logit_bias: dict[TokenId, Bias] | None = Field(None, max_length=1024)
    # OpenAI's cache hint: requests with the same key go to the model replica that holds
    # their prefix (docs/guides/clusters.md); the key is the caller's own.
    prompt_cache_key: str | None = Field(None, max_length=256)
    # vLLM's and llama-server's extension: generate max_tokens whatever the model says (benchmarks).
    ignore_eos: bool | None = None

    @field_validator("n")
    @classmethod
    def _one(cls, n: int) -> int:
        if n != 1:  # named in the error's param too, for the SDK's BadRequestError.param
            raise PydanticCustomError("unsupported", "only n = 1 is supported")
        return n

    @model_validator(mode="after")
    def _supported(self):
        if None not in (self.repeat_penalty, self.repetition_penalty) and self.repeat_penalty != self.repetition_penalty:
            raise ValueError("repeat_penalty and repetition_penalty are one setting: send one of them")
        return self

    def overrides(self, caps: grammars.Caps = grammars.DEFAULT_CAPS) -> dict:
        o: dict[str, Any] = {
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "seed": self.seed,
            "frequency_penalty": self.frequency_penalty,
            "presence_penalty": self.presence_penalty,
            "top_k": self.top_k,
            "min_p": self.min_p,
            "repeat_penalty": self.repeat_penalty if self.repeat_penalty is not None else self.repetition_penalty,
            "logit_bias": tuple(sorted(self.logit_bias.items())) if self.logit_bias else None,
            "ignore_eos": self.ignore_eos or None,
        }
        if self.stop:
            o["stop"] = [self.stop] if isinstance(self.stop, str) else self.stop
        return {k: v for k, v in o.items() if v is not None}


class CompletionRequest(_Sampling):
    prompt: str | list[str] = Field(max_length=1_000_000)
    logprobs: int | None = Field(None, ge=0, le=20)  # alternatives per token
    echo: bool = False
    suffix: str | None = None
    best_of: int | None = None

    @model_validator(mode="after")
    def _completion_supported(self):
        if isinstance(self.prompt, list) and len(self.prompt) != 1:
            raise ValueError("prompt: exactly one prompt per request is supported")
        if self.echo or self.suffix or (self.best_of not in (None, 1)):
            raise ValueError("echo, suffix and best_of are not supported")
        return self

    def text(self) -> str:
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]

    def overrides(self, caps: grammars.Caps = grammars.DEFAULT_CAPS) -> dict:
        o = super().overrides(caps)
        if self.logprobs is not None:
            o["logprobs"] = self.logprobs
        return o


class FunctionCall(Body):
    name: str
    arguments: str = "{}"  # JSON text, as the model wrote it


class MessageToolCall(Body):
    id: str = Field(min_length=1, max_length=256)
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(Body):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_calls: list[MessageToolCall] | None = None  # an assistant's earlier calls
    tool_call_id: str | None = None  # a tool's result answers this call
    # An earlier answer's thinking, as this API returned it: accepted and left out of the
    # prompt, as the models' templates do.
    reasoning_content: str | None = None

    def text(self, where: str) -> str:
        return text_of(self.content, f"{where}.content")


class TemplateSwitches(Body):
    """``chat_template_kwargs``: the chat template's switches a request may set."""

    enable_thinking: bool | None = None


class ChatCompletionRequest(_Sampling):
    messages: list[ChatMessage] = Field(min_length=1, max_length=MAX_MESSAGES)
    max_completion_tokens: Tokens | None = None
    response_format: ResponseFormat | None = None
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=20)
    # Checked by tools.plan (each problem named by its field).
    tools: list[Any] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    # A reasoning model's thinking: an effort level (none switches it off; docs/api/openai.md),
    # or the chat template's switch, as vLLM and llama-server take it.
    reasoning_effort: str | None = None
    chat_template_kwargs: TemplateSwitches | None = None

    def conversation(self) -> list[tuple[str, str]]:
        """The messages as (role, content) pairs: earlier calls in the model's envelope,
        tool results as turns that name their tool."""
        names: dict[str, str] = {}  # call id → tool name
        out = []
        for i, m in enumerate(self.messages):
            if m.role == "tool":
                if m.tool_call_id not in names:
                    raise BadRequest(f"messages[{i}].tool_call_id: {m.tool_call_id!r} is not the id of a tool call "
                                     "in an earlier assistant message")
                out.append(tools.tool_result(names[m.tool_call_id], m.text(f"messages[{i}]")))
            elif m.tool_calls:
                if m.role != "assistant":
                    raise BadRequest(f"messages[{i}].tool_calls: only assistant messages carry tool calls")
                calls = []
                for j, call in enumerate(m.tool_calls):
                    try:
                        arguments = json.loads(call.function.arguments or "{}")
                    except (ValueError, RecursionError):  # RecursionError: nested too deeply
                        raise BadRequest(f"messages[{i}].tool_calls[{j}].function.arguments is not valid JSON") from None
                    names[call.id] = call.function.name
                    calls.append((call.function.name, arguments))
                out.append(("assistant", tools.envelope(calls, m.text(f"messages[{i}]"))))
            else:
                out.append((m.role, m.text(f"messages[{i}]")))
        return out

    def overrides(self, caps: grammars.Caps = grammars.DEFAULT_CAPS) -> dict:
        o = super().overrides(caps)
        for key in ("tools", "tool_choice", "parallel_tool_calls"):
            if getattr(self, key) is not None:
                o[key] = getattr(self, key)
        if self.logprobs:
            o["logprobs"] = self.top_logprobs or 0
        elif self.top_logprobs:
            raise BadRequest("top_logprobs: needs logprobs = true")
        if self.max_completion_tokens is not None:
            o["max_tokens"] = self.max_completion_tokens
        if self.response_format is not None and (grammar := self.response_format.grammar(caps)):
            o["grammar"] = grammar
        if self.chat_template_kwargs is not None and self.chat_template_kwargs.enable_thinking is not None:
            o["thinking"] = self.chat_template_kwargs.enable_thinking
            o["reasoning_field"] = "chat_template_kwargs.enable_thinking"
        if self.reasoning_effort is not None:
            o["reasoning_effort"] = self.reasoning_effort
            o["reasoning_field"] = "reasoning_effort"
        return o


class EmbeddingRequest(Body):
    model: str
    input: str | list[str] = Field(min_length=1)
    encoding_format: Literal["float", "base64"] = "float"
    user: str | None = None
    dimensions: int | None = Field(None, ge=1, le=1 << 16)


# What the routes answer. Documentation only (the routes build plain dicts); the
# fuzz test checks every answer against these.

class ModelCard(BaseModel):
    """A task or model, in OpenAI's fields and Anthropic's (type, display_name, created_at)."""

    id: str
    object: Literal["model"]
    created: int
    owned_by: str
    type: Literal["model"]
    display_name: str
    created_at: str


class ModelPage(BaseModel):
    object: Literal["list"]
    data: list[ModelCard]
    has_more: bool
    first_id: str | None
    last_id: str | None


class CompletionChoice(BaseModel):
    index: int
    text: str
    logprobs: dict[str, Any] | None
    finish_reason: Literal["stop", "length"] | None


# prompt_tokens, completion_tokens, total_tokens; prompt_tokens_details.cached_tokens on completions and chat.
Usage = dict[str, int | dict[str, int]]


class CompletionResponse(BaseModel):
    id: str
    object: Literal["text_completion"]
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage


class ToolCallFunction(BaseModel):
    name: str
    arguments: str


class ToolCallAnswer(BaseModel):
    id: str
    type: Literal["function"]
    function: ToolCallFunction


class AssistantMessage(BaseModel):
    role: Literal["assistant"]
    content: str | None
    tool_calls: list[ToolCallAnswer] | None = None
    reasoning_content: str | None = None  # a reasoning model's thinking, apart from the answer


class ChatChoice(BaseModel):
    index: int
    message: AssistantMessage
    logprobs: dict[str, Any] | None
    finish_reason: Literal["stop", "length", "tool_calls"] | None


class ChatCompletionResponse(BaseModel):
    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage


class EmbeddingData(BaseModel):
    object: Literal["embedding"]
    index: int
    embedding: list[float] | str  # str: base64


class EmbeddingResponse(BaseModel):
    object: Literal["list"]
    model: str
    data: list[EmbeddingData]
    usage: dict[str, int]
