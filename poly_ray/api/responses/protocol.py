"""The Responses API's shapes, as plain functions: request items checked (a
BadRequest names the path, e.g. ``input[2].content[0].type``), turned into the
(role, text) turns the chat path already renders, and the response object and
stream events built back (the sequence the ``openai`` client's
``responses.stream()`` helper folds into a Response).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

from poly_ray import tools as tool_calls
from poly_ray.errors import BadRequest
from poly_ray.state.store import new_id

ROLES = ("user", "assistant", "system", "developer")
TEXT_PARTS = ("input_text", "output_text", "text")


def flat_tools(tools) -> tuple[tool_calls.Tool, ...]:
    """The Responses API's flat function tools (``{"type": "function", "name",
    "parameters"}``), checked by the chat path's rules."""
    if not isinstance(tools, list):
        raise BadRequest("tools must be a list")
    nested = []
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict) or tool.get("type", "function") != "function":
            kind = tool.get("type") if isinstance(tool, dict) else type(tool).__name__
            raise BadRequest(f"tools[{i}].type: only 'function' tools are supported, not {kind!r}")
        fn = {k: v for k, v in tool.items() if k != "type"}
        nested.append({"type": "function", "function": fn})
    try:
        return tool_calls.check_tools(nested)
    except BadRequest as err:  # name the flat path the client sent
        raise BadRequest(err.message.replace(".function.", ".").replace(".function:", ":")) from None


def _text(content, where: str) -> str:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise BadRequest(f"{where}: a string or a list of text parts")
    out = []
    for j, part in enumerate(content):
        if not isinstance(part, dict) or part.get("type") not in TEXT_PARTS:
            kind = part.get("type") if isinstance(part, dict) else type(part).__name__
            allowed = ", ".join(TEXT_PARTS)
            raise BadRequest(f"{where}[{j}].type: only text parts ({allowed}) are supported, not {kind!r}")
        if not isinstance(part.get("text"), str):
            raise BadRequest(f"{where}[{j}].text must be a string")
        out.append(part["text"])
    return "".join(out)


def input_items(value, where: str = "input") -> list[dict]:
    """A request's ``input`` (a string or a list of items) as stored items, each
    with an id: messages, function_call and function_call_output items."""
    if isinstance(value, str):
        value = [{"type": "message", "role": "user", "content": value}]
    if not isinstance(value, list):
        raise BadRequest(f"{where}: a string or a list of items")
    items = []
    for i, item in enumerate(value):
        here = f"{where}[{i}]"
        if not isinstance(item, dict):
            raise BadRequest(f"{here}: an item is an object")
        kind = item.get("type", "message")
        if kind == "message":
            role = item.get("role")
            if role not in ROLES:
                raise BadRequest(f"{here}.role: one of {', '.join(ROLES)}, not {role!r}")
            text = _text(item.get("content"), f"{here}.content")
            part = "output_text" if role == "assistant" else "input_text"
            items.append({"id": item.get("id") or new_id("msg"), "type": "message", "role": role,
                          "status": "completed", "content": [{"type": part, "text": text}]})
        elif kind == "function_call":
            for key in ("call_id", "name", "arguments"):
                if not isinstance(item.get(key), str):
                    raise BadRequest(f"{here}.{key} must be a string")
            try:
                json.loads(item["arguments"])
            except ValueError:
                raise BadRequest(f"{here}.arguments: not JSON") from None
            items.append({"id": item.get("id") or new_id("fc"), "type": "function_call", "status": "completed",
                          **{k: item[k] for k in ("call_id", "name", "arguments")}})
        elif kind == "function_call_output":
            if not isinstance(item.get("call_id"), str):
                raise BadRequest(f"{here}.call_id must be a string")
            output = item.get("output")
            if not isinstance(output, str):
                output = _text(output, f"{here}.output")
            items.append({"id": item.get("id") or new_id("fco"), "type": "function_call_output", "status": "completed",
                          "call_id": item["call_id"], "output": output})
        else:
            raise BadRequest(f"{here}.type: 'message', 'function_call' or 'function_call_output', not {kind!r}")
    return items


def to_turns(items: list[dict]) -> list[tuple[str, str]]:
    """Stored items as the (role, text) turns a chat template renders. Function
    calls are written the way the model writes them (tools.envelope), their
    outputs as the tool-result turn the chat path uses, so a chained turn's
    prompt starts with exactly the previous turn's text (the prefix cache hits)."""
    turns: list[tuple[str, str]] = []
    names: dict[str, str] = {}
    pending: list[tuple[str, dict]] = []

    def flush():
        if pending:
            turns.append(("assistant", tool_calls.envelope(list(pending))))
            pending.clear()

    for item in items:
        if item["type"] == "function_call":
            names[item["call_id"]] = item["name"]
            pending.append((item["name"], json.loads(item["arguments"])))
            continue
        flush()
        if item["type"] == "function_call_output":
            turns.append(tool_calls.tool_result(names.get(item["call_id"]), item["output"]))
        elif item["type"] == "message":
            turns.append((item["role"], "".join(p["text"] for p in item["content"])))
    flush()
    return turns


def output_message(text: str, *, item_id: str | None = None, status: str = "completed") -> dict:
    return {"id": item_id or new_id("msg"), "type": "message", "role": "assistant", "status": status,
            "content": [{"type": "output_text", "text": text, "annotations": []}]}


def response_object(rid: str, model: str, *, status: str, output: list[dict], usage: dict | None = None,
                    error: dict | None = None, created_at: int | None = None,
                    **fields) -> dict:
    """A Response as the API returns it (the fields the ``openai`` types require)."""
    return {
        "id": rid, "object": "response", "created_at": created_at or int(time.time()), "status": status,
        "model": model, "output": output, "usage": usage, "error": error,
        "incomplete_details": None,
        "instructions": None, "metadata": {}, "parallel_tool_calls": True, "temperature": None, "top_p": None,
        "tool_choice": "auto", "tools": [], "previous_response_id": None, "conversation": None,
        "max_output_tokens": None, "store": True, "text": {"format": {"type": "text"}}, **fields,
    }


def usage(prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0) -> dict:
    return {"input_tokens": prompt_tokens,
            "input_tokens_details": {"cached_tokens": cached_tokens, "cache_write_tokens": 0},
            "output_tokens": completion_tokens, "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": prompt_tokens + completion_tokens}


class EventStream:
    """The stream events of one response with a single text message, numbered:
    created, in_progress, output_item.added, content_part.added, the deltas,
    output_text.done, content_part.done, output_item.done, then completed (or
    failed / incomplete)."""

    def __init__(self, response: dict):
        self.response = dict(response, status="in_progress", output=[])
        self.item = output_message("", status="in_progress")
        self.text: list[str] = []
        self._n = 0

    def _event(self, kind: str, **fields) -> dict:
        event = {"type": kind, "sequence_number": self._n, **fields}
        self._n += 1
        return event

    def _where(self) -> dict:
        return {"item_id": self.item["id"], "output_index": 0, "content_index": 0}

    def start(self) -> Iterator[dict]:
        yield self._event("response.created", response=dict(self.response, status="in_progress"))
        yield self._event("response.in_progress", response=self.response)
        yield self._event("response.output_item.added", output_index=0, item=self.item)
        yield self._event("response.content_part.added", part={"type": "output_text", "text": "", "annotations": []},
                          **self._where())

    def delta(self, text: str) -> dict:
        self.text.append(text)
        return self._event("response.output_text.delta", delta=text, logprobs=[], **self._where())

    def finish(self, final: dict) -> Iterator[dict]:
        """``final``: the stored response (its status completed, incomplete or failed)."""
        text = "".join(self.text)
        part = {"type": "output_text", "text": text, "annotations": []}
        yield self._event("response.output_text.done", text=text, logprobs=[], **self._where())
        yield self._event("response.content_part.done", part=part, **self._where())
        item = output_message(text, item_id=self.item["id"])
        yield self._event("response.output_item.done", output_index=0, item=item)
        ends = {"completed": "response.completed", "incomplete": "response.incomplete"}
        yield self._event(ends.get(final["status"], "response.failed"), response=final)
