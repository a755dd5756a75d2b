"""Wire models of the Anthropic Messages API (``/v1/messages``, ``/v1/messages/count_tokens``).

Content blocks are read one by one (``conversation``), so that a block poly-ray
cannot take is refused naming its place (``messages[1].content[0]``) and saying
why (an image, a block type it does not know). Fields Anthropic's SDK and Claude
Code send are accepted: ``cache_control`` as a hint, ``metadata`` and ``service_tier``
as labels; other unknown fields are a 400. ``thinking`` switches a reasoning model's
thinking on or off and bounds it (``budget_tokens``); earlier thinking blocks sent back
are left out of the prompt, as the models' templates do.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from poly_ray import grammars, tools
from poly_ray.api.fields import MAX_MESSAGES
from poly_ray.api.parsing import StopList, describe
from poly_ray.errors import BadRequest


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class CacheControl(_Body):
    """A cache breakpoint: the prompt up to the first one names a durable KV snapshot of the
    conversation (``MessagesRequest.cache_breakpoint``)."""

    type: Literal["ephemeral"]
    ttl: Literal["5m", "1h"] | None = None


class TextBlock(_Body):
    type: Literal["text"]
    text: str
    cache_control: CacheControl | None = None
    citations: list[dict[str, Any]] | None = None


class ToolUseBlock(_Body):
    type: Literal["tool_use"]
    id: str = Field(min_length=1, max_length=256)
    name: str
    input: dict[str, Any]
    cache_control: CacheControl | None = None


class ToolResultBlock(_Body):
    type: Literal["tool_result"]
    tool_use_id: str
    content: str | list[dict[str, Any]] = ""
    is_error: bool = False
    cache_control: CacheControl | None = None


class ThinkingBlock(_Body):
    """An earlier answer's thinking, sent back: left out of the prompt."""

    type: Literal["thinking", "redacted_thinking"]
    thinking: str | None = None
    data: str | None = None
    signature: str | None = None
    cache_control: CacheControl | None = None


class ThinkingConfig(_Body):
    """``thinking``: a reasoning model thinks (``enabled``, at most ``budget_tokens``; ``adaptive``, as much
    as the task allows) or not (``disabled``). A model that does not think takes it as a hint."""

    type: Literal["enabled", "disabled", "adaptive"]
    budget_tokens: int | None = None
    display: str | None = None


class Message(_Body):
    role: Literal["user", "assistant"]
    content: str | list[dict[str, Any]]


class Metadata(_Body):
    user_id: str | None = None


_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class Tool(_Body):
    name: str = Field(pattern=_NAME.pattern)
    description: str | None = None
    input_schema: dict[str, Any]
    type: Literal["custom"] | None = None
    cache_control: CacheControl | None = None
    strict: bool | None = None


class ToolChoice(_Body):
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: bool | None = None


class OutputFormat(_Body):
    type: Literal["json_schema"]
    schema_: dict[str, Any] = Field(alias="schema")


class OutputConfig(_Body):
    effort: Literal["low", "medium", "high", "xhigh", "max"] | None = None  # a hint
    format: OutputFormat | None = None  # enforced by grammar


class CountTokensRequest(_Body):
    model: str
    messages: list[Message] = Field(min_length=1, max_length=MAX_MESSAGES)
    system: str | list[TextBlock] | None = None
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None
    thinking: ThinkingConfig | None = None
    cache_control: CacheControl | None = None
    output_config: OutputConfig | None = None
    speed: Literal["standard", "fast"] | None = None  # a hint

    def conversation(self) -> list[tuple[str, str]]:
        """The system text and the messages as (role, text) turns: an assistant's tool_use
        blocks in the model's envelope, tool results as turns that name their tool."""
        out = []
        if isinstance(self.system, str) and self.system:
            out.append(("system", self.system))
        elif self.system:
            out.append(("system", "\n\n".join(b.text for b in self.system)))
        names: dict[str, str] = {}  # tool_use id → tool name
        for i, m in enumerate(self.messages):
            blocks = [{"type": "text", "text": m.content}] if isinstance(m.content, str) else m.content
            texts, calls = [], []
            for j, raw in enumerate(blocks):
                where = f"messages[{i}].content[{j}]"
                block = _block(raw, where, m.role)
                if isinstance(block, ThinkingBlock):
                    continue  # an earlier answer's thinking stays out of the prompt
                if isinstance(block, TextBlock):
                    texts.append(block.text)
                elif isinstance(block, ToolUseBlock):
                    names[block.id] = block.name
                    calls.append((block.name, block.input))
                else:
                    if block.tool_use_id not in names:
                        raise BadRequest(f"{where}.tool_use_id: {block.tool_use_id!r} is not the id of a tool_use "
                                         "block in an earlier assistant message")
                    result = _result_text(block, where)
                    texts.append(tools.tool_result(names[block.tool_use_id], result)[1])
            if calls:
                out.append(("assistant", tools.envelope(calls, "\n\n".join(texts))))
            else:
                out.append((m.role, "\n\n".join(texts)))
        return out

    def overrides(self, caps: grammars.Caps = grammars.DEFAULT_CAPS) -> dict:
        """The tools in the chat path's (OpenAI's function) shape, and the choice among them.
        CPU-bound with tools (each schema is converted here, to name its field): off the loop."""
        o: dict[str, Any] = {}
        offered = {t.name for t in self.tools or ()}
        if self.tools:
            if len(offered) != len(self.tools):
                raise BadRequest("tools: each tool's name must be different")
            for i, t in enumerate(self.tools):
                if t.input_schema.get("type", "object") != "object":
                    raise BadRequest(f"tools[{i}].input_schema: must be a JSON schema of an object")
                grammars.from_schema(t.input_schema, f"tools[{i}].input_schema", caps)
            o["tools"] = [{"type": "function", "function": {
                "name": t.name, "description": t.description or "", "parameters": t.input_schema}}
                for t in self.tools]
        c = self.tool_choice
        if c is not None:
            if c.type == "tool":
                if c.name not in offered:
                    raise BadRequest(f"tool_choice.name: {c.name!r} is not an offered tool "
                                     f"(tools: {', '.join(sorted(offered)) or 'none'})")
                o["tool_choice"] = {"type": "function", "function": {"name": c.name}}
            elif c.name is not None:
                raise BadRequest("tool_choice.name: only with type 'tool'")
            elif c.type == "any":
                if not self.tools:
                    raise BadRequest("tool_choice: 'any' needs tools")
                o["tool_choice"] = "required"
            else:
                o["tool_choice"] = c.type
            if c.disable_parallel_tool_use is not None:
                o["parallel_tool_calls"] = not c.disable_parallel_tool_use
        if self.thinking is not None:
            o.update(thinking=self.thinking.type != "disabled", reasoning_field="thinking.type")
            if self.thinking.type == "enabled" and self.thinking.budget_tokens is not None:
                o.update(reasoning_budget=self.thinking.budget_tokens, reasoning_field="thinking.budget_tokens")
        return o


class MessagesRequest(CountTokensRequest):
    max_tokens: int = Field(ge=1, le=1 << 20)
    stop_sequences: StopList = None
    stream: bool = False
    temperature: float | None = Field(None, ge=0, le=1)
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=0, le=1 << 20)
    metadata: Metadata | None = None
    # Labels and placement, which mean nothing on one server.
    service_tier: Literal["auto", "standard_only"] | None = None
    inference_geo: str | None = None
    user_profile_id: str | None = None
    workspace_id: str | None = None

    def cache_breakpoint(self) -> str | None:
        """A digest of the prompt up to its first ``cache_control`` block, in Anthropic's order
        (tools, system, messages); with only the request's own ``cache_control``, of the tools
        and system (else the first message). None: nothing is marked. The first breakpoint,
        not the last: a client moves its last one forward each turn (Claude Code marks the
        system prompt and the newest message), and the first stays where it was."""
        parts: list[str] = []
        for tool in self.tools or ():
            parts.append(tool.model_dump_json())
            if tool.cache_control is not None:
                return _digest(parts)
        system = [TextBlock(type="text", text=self.system)] if isinstance(self.system, str) else self.system or []
        for block in system:
            parts.append(block.text)
            if block.cache_control is not None:
                return _digest(parts)
        for m in self.messages:
            for raw in [{"type": "text", "text": m.content}] if isinstance(m.content, str) else m.content:
                parts.append(json.dumps([m.role, raw], sort_keys=True))
                if isinstance(raw, dict) and raw.get("cache_control") is not None:
                    return _digest(parts)
        if self.cache_control is None:
            return None
        return _digest(parts[:len(self.tools or ()) + len(system)] or parts[:1])

    def overrides(self, caps: grammars.Caps = grammars.DEFAULT_CAPS) -> dict:
        o = {"max_tokens": self.max_tokens, "temperature": self.temperature, "top_p": self.top_p,
             "top_k": self.top_k, "stop": self.stop_sequences or None, **super().overrides(caps)}
        if self.output_config and self.output_config.format:
            o["grammar"] = grammars.from_schema(self.output_config.format.schema_, "output_config.format.schema", caps)
        return {k: v for k, v in o.items() if v is not None}


def _digest(parts: list[str]) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:24]


Block = TextBlock | ToolUseBlock | ToolResultBlock | ThinkingBlock
_BLOCKS: dict[str, type[Block]] = {"text": TextBlock, "tool_use": ToolUseBlock, "tool_result": ToolResultBlock,
                                   "thinking": ThinkingBlock, "redacted_thinking": ThinkingBlock}
_ROLES = {"text": ("user", "assistant"), "tool_use": ("assistant",), "tool_result": ("user",),
          "thinking": ("assistant",), "redacted_thinking": ("assistant",)}
_IMAGES = ("image", "document")


def _block(raw: dict, where: str, role: str) -> Block:
    kind = raw.get("type")
    if kind in _IMAGES:
        raise BadRequest(f"{where}: {kind} blocks are not supported (images are not supported)")
    if kind not in _BLOCKS:
        raise BadRequest(f"{where}.type: unknown block type {kind!r} (supported: {', '.join(_BLOCKS)})")
    if role not in _ROLES[kind]:
        raise BadRequest(f"{where}: a {kind} block belongs in a {' or '.join(_ROLES[kind])} message")
    try:
        return _BLOCKS[kind].model_validate(raw)
    except ValidationError as e:
        raise BadRequest(f"{where}." + describe(e.errors())) from None


def _result_text(block: ToolResultBlock, where: str) -> str:
    if isinstance(block.content, str):
        text = block.content
    else:
        parts = []
        for k, raw in enumerate(block.content):
            here = f"{where}.content[{k}]"
            if raw.get("type") in _IMAGES:
                raise BadRequest(f"{here}: {raw.get('type')} blocks are not supported (images are not supported)")
            if raw.get("type") != "text":
                raise BadRequest(f"{here}.type: a tool result holds text blocks, not {raw.get('type')!r}")
            try:
                parts.append(TextBlock.model_validate(raw).text)
            except ValidationError as e:
                raise BadRequest(f"{here}." + describe(e.errors())) from None
        text = "\n\n".join(parts)
    return f"(error) {text}" if block.is_error else text


# What the routes answer. Documentation only (the routes build plain dicts).

class Usage(BaseModel):
    input_tokens: int
    output_tokens: int
    cache_read_input_tokens: int
    cache_creation_input_tokens: int


class MessageResponse(BaseModel):
    id: str
    type: Literal["message"]
    role: Literal["assistant"]
    model: str
    content: list[dict[str, Any]]
    stop_reason: Literal["end_turn", "max_tokens", "stop_sequence", "tool_use"] | None
    stop_sequence: str | None
    usage: Usage


class TokenCount(BaseModel):
    input_tokens: int


def tool_input(arguments: str) -> dict:
    """A call's arguments as the object a tool_use block holds ({} when cut short)."""
    try:
        value = json.loads(arguments or "{}")
    except (ValueError, RecursionError):
        return {}
    return value if isinstance(value, dict) else {}
