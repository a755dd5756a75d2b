"""The Assistants API (v2) shapes: request bodies checked (a BadRequest names the
path, e.g. ``messages[1].content[0].type``), and the objects the API returns
(assistant, thread, message, run, run step) with the fields the ``openai``
package's ``client.beta`` types read."""

from __future__ import annotations

import time
from typing import Any, Literal

from pydantic import Field

from poly_ray import grammars
from poly_ray import tools as tool_calls
from poly_ray.api.content import text_of
from poly_ray.api.fields import Body, ListQuery, Metadata, Tokens

# Messages given with a thread or a run, each stored by a call of its own.
MAX_GIVEN_MESSAGES = 100
from poly_ray.api.openai.protocol import ResponseFormat
from poly_ray.errors import BadRequest
from poly_ray.state.store import new_id

ACTIVE = ("queued", "in_progress", "requires_action", "cancelling")
TOOL_TYPES = ("function", "file_search")


class MessageCreate(Body):
    role: Literal["user", "assistant"]
    content: str | list[Any]
    attachments: list[Any] | None = None
    metadata: Metadata | None = None


class MessageUpdate(Body):
    metadata: Metadata | None = None


class AssistantCreate(Body):
    model: str
    name: str | None = Field(None, max_length=256)
    description: str | None = Field(None, max_length=512)
    instructions: str | None = Field(None, max_length=256_000)
    tools: list[Any] = Field(default_factory=list)
    tool_resources: dict[str, Any] | None = None
    metadata: Metadata | None = None
    response_format: str | dict[str, Any] | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)


class AssistantUpdate(AssistantCreate):
    model: str | None = None  # type: ignore[assignment]
    tools: list[Any] | None = None  # type: ignore[assignment]


class ThreadCreate(Body):
    messages: list[MessageCreate] = Field(default_factory=list, max_length=MAX_GIVEN_MESSAGES)
    metadata: Metadata | None = None
    tool_resources: dict[str, Any] | None = None


class ThreadUpdate(Body):
    metadata: Metadata | None = None
    tool_resources: dict[str, Any] | None = None


class RunCreate(Body):
    assistant_id: str
    model: str | None = None
    instructions: str | None = None
    additional_instructions: str | None = None
    additional_messages: list[MessageCreate] | None = Field(None, max_length=MAX_GIVEN_MESSAGES)
    tools: list[Any] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    response_format: str | dict[str, Any] | None = None
    metadata: Metadata | None = None
    stream: bool = False
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    max_completion_tokens: Tokens | None = None
    max_prompt_tokens: int | None = Field(None, ge=1)
    truncation_strategy: dict[str, Any] | None = None  # accepted; the task's context_overflow applies


class ThreadAndRunCreate(RunCreate):
    thread: ThreadCreate | None = None
    tool_resources: dict[str, Any] | None = None


class ToolOutput(Body):
    tool_call_id: str
    output: str


class SubmitToolOutputs(Body):
    tool_outputs: list[ToolOutput]
    stream: bool = False


class MessagesQuery(ListQuery):
    run_id: str | None = None  # only a run's


def check_tools(tools: list, where: str = "tools", caps: grammars.Caps = grammars.DEFAULT_CAPS) -> list[dict]:
    """Function tools (checked by the chat path's rules) and file_search."""
    for i, tool in enumerate(tools):
        kind = tool.get("type") if isinstance(tool, dict) else type(tool).__name__
        if kind not in TOOL_TYPES:
            raise BadRequest(f"{where}[{i}].type: 'function' or 'file_search', not {kind!r}")
        if kind == "function":
            try:
                tool_calls.check_tools([tool], where, caps)
            except BadRequest as err:
                raise BadRequest(err.message.replace(f"{where}[0]", f"{where}[{i}]", 1)) from None
    return tools


def function_tools(tools: list[dict]) -> list[dict]:
    return [t for t in tools if t.get("type") == "function"]


def format_grammar(value, where: str = "response_format", caps: grammars.Caps = grammars.DEFAULT_CAPS) -> str | None:
    """``response_format`` ("auto", or chat's shape) as the grammar that enforces it."""
    if value is None or value == "auto":
        return None
    if not isinstance(value, dict):
        raise BadRequest(f"{where}: 'auto' or an object with a type")
    try:
        return ResponseFormat.model_validate(value).grammar(caps)
    except ValueError as err:
        raise BadRequest(f"{where}: {err}".splitlines()[0]) from None


def memory_names(tool_resources: dict | None, where: str = "tool_resources") -> list[str]:
    """The memories file_search recalls from (``vector_store_ids`` name configured memories)."""
    search = (tool_resources or {}).get("file_search") or {}
    names = search.get("vector_store_ids") or []
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise BadRequest(f"{where}.file_search.vector_store_ids: a list of memory names")
    return names


def message_text(content, where: str) -> str:
    """A message's content (a string, or text parts) as its text."""
    return text_of(content, where)


def now() -> int:
    return int(time.time())


def assistant_object(body: AssistantCreate, aid: str | None = None) -> dict:
    return {"id": aid or new_id("asst"), "object": "assistant", "created_at": now(), "name": body.name,
            "description": body.description, "model": body.model, "instructions": body.instructions,
            "tools": body.tools, "tool_resources": body.tool_resources or {}, "metadata": body.metadata or {},
            "response_format": body.response_format or "auto", "temperature": body.temperature,
            "top_p": body.top_p}


def thread_object(metadata: dict | None, tool_resources: dict | None) -> dict:
    return {"id": new_id("thread"), "object": "thread", "created_at": now(), "metadata": metadata or {},
            "tool_resources": tool_resources or {}}


def message_object(thread_id: str, role: str, text: str, *, run_id: str | None = None,
                   assistant_id: str | None = None, status: str = "completed", metadata: dict | None = None,
                   attachments: list | None = None) -> dict:
    return {"id": new_id("msg"), "object": "thread.message", "created_at": now(), "thread_id": thread_id,
            "role": role, "content": [text_part(text)] if text or status == "completed" else [],
            "assistant_id": assistant_id, "run_id": run_id, "attachments": attachments or [],
            "metadata": metadata or {}, "status": status, "incomplete_details": None,
            "completed_at": now() if status == "completed" else None, "incomplete_at": None}


def new_message(thread_id: str, m: MessageCreate, where: str) -> dict:
    return message_object(thread_id, m.role, message_text(m.content, f"{where}.content"), metadata=m.metadata,
                          attachments=m.attachments)


def text_part(text: str) -> dict:
    return {"type": "text", "text": {"value": text, "annotations": []}}


def run_object(thread_id: str, assistant: dict, body: RunCreate) -> dict:
    instructions = body.instructions if body.instructions is not None else assistant.get("instructions") or ""
    if body.additional_instructions:
        instructions = f"{instructions}\n\n{body.additional_instructions}".strip()
    return {"id": new_id("run"), "object": "thread.run", "created_at": now(), "thread_id": thread_id,
            "assistant_id": assistant["id"], "status": "queued", "required_action": None, "last_error": None,
            "expires_at": None, "started_at": None, "cancelled_at": None, "failed_at": None, "completed_at": None,
            "incomplete_details": None, "model": body.model or assistant["model"], "instructions": instructions,
            "tools": body.tools if body.tools is not None else assistant.get("tools") or [],
            "metadata": body.metadata or {}, "usage": None, "temperature": body.temperature
            if body.temperature is not None else assistant.get("temperature"),
            "top_p": body.top_p if body.top_p is not None else assistant.get("top_p"),
            "max_completion_tokens": body.max_completion_tokens, "max_prompt_tokens": body.max_prompt_tokens,
            "truncation_strategy": body.truncation_strategy or {"type": "auto", "last_messages": None},
            "tool_choice": body.tool_choice or "auto", "parallel_tool_calls": body.parallel_tool_calls is not False,
            "response_format": body.response_format or assistant.get("response_format") or "auto"}


def step_object(run: dict, details: dict, status: str = "in_progress") -> dict:
    return {"id": new_id("step"), "object": "thread.run.step", "created_at": now(), "run_id": run["id"],
            "assistant_id": run["assistant_id"], "thread_id": run["thread_id"], "type": details["type"],
            "status": status, "step_details": details, "last_error": None, "expired_at": None,
            "cancelled_at": None, "failed_at": None, "completed_at": None, "metadata": {}, "usage": None}


def message_step(message_id: str) -> dict:
    return {"type": "message_creation", "message_creation": {"message_id": message_id}}


def calls_step(calls: list[dict]) -> dict:
    return {"type": "tool_calls", "tool_calls": [
        {"id": c["id"], "type": "function", "function": {**c["function"], "output": c["function"].get("output")}}
        for c in calls]}


def usage(prompt_tokens: int, completion_tokens: int, cached_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "prompt_tokens_details": {"cached_tokens": cached_tokens}}


def message_delta(message_id: str, text: str) -> dict:
    return {"id": message_id, "object": "thread.message.delta",
            "delta": {"content": [{"index": 0, "type": "text", "text": {"value": text, "annotations": []}}]}}


def deleted(oid: str, kind: str) -> dict:
    return {"id": oid, "object": f"{kind}.deleted", "deleted": True}
