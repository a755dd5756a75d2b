"""The Responses API's shapes, as plain functions: request items checked (a
BadRequest names the path, e.g. ``input[2].content[0].type``), turned into the
(role, text) turns the chat path already renders, and the response object and
stream events built back (the sequence the ``openai`` client's
``responses.stream()`` helper folds into a Response).
"""

from __future__ import annotations

import json
import time
from typing import Any

from poly_ray import grammars
from poly_ray import tools as tool_calls
from poly_ray.api import formats
from poly_ray.api.content import text_of
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


def chat_tools(tools) -> list[dict]:
    """Flat tools (checked, see flat_tools) in the nested shape the chat path takes."""
    return [{"type": "function", "function": {k: v for k, v in t.items() if k != "type"}} for t in tools]


def chat_tool_choice(choice, tools) -> str | dict:
    """The Responses API's ``tool_choice`` (``{"type": "function", "name"}``) as chat's."""
    if choice in ("auto", "none", "required"):
        return choice
    if isinstance(choice, dict) and choice.get("type") == "function":
        name = choice.get("name")
        offered = [t.get("name") for t in tools or []]
        if name not in offered:
            raise BadRequest(f"tool_choice.name: {name!r} is not an offered tool (tools: {', '.join(offered) or 'none'})")
        return {"type": "function", "function": {"name": name}}
    raise BadRequest("tool_choice: 'auto', 'none', 'required' or {'type': 'function', 'name': ...}")


def format_grammar(text, caps: grammars.Caps = grammars.DEFAULT_CAPS) -> str | None:
    """``text.format`` as the grammar that enforces it (None for free text), like
    chat's ``response_format``: json_object any JSON, json_schema its schema."""
    if text is None:
        return None
    if not isinstance(text, dict):
        raise BadRequest("text: an object with a format")
    fmt = text.get("format")
    if fmt is None:
        return None
    if not isinstance(fmt, dict):
        raise BadRequest("text.format: an object with a type")
    return formats.format_grammar(fmt.get("type"), fmt.get("schema"), "text.format.schema", caps)


def _text(content, where: str) -> str:
    return text_of(content, where, TEXT_PARTS)


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
            except (ValueError, RecursionError):  # RecursionError: nested too deeply
                raise BadRequest(f"{here}.arguments: not JSON") from None
            items.append({"id": item.get("id") or new_id("fc"), "type": "function_call", "status": "completed",
                          **{k: item[k] for k in ("call_id", "name", "arguments")}})
        elif kind == "reasoning":
            continue  # an earlier answer's thinking, sent back: left out of the prompt, as the templates do
        elif kind == "function_call_output":
            if not isinstance(item.get("call_id"), str):
                raise BadRequest(f"{here}.call_id must be a string")
            output = item.get("output")
            if not isinstance(output, str):
                output = _text(output, f"{here}.output")
            items.append({"id": item.get("id") or new_id("fco"), "type": "function_call_output", "status": "completed",
                          "call_id": item["call_id"], "output": output})
        else:
            raise BadRequest(f"{here}.type: 'message', 'function_call', 'function_call_output' or 'reasoning', "
                             f"not {kind!r}")
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
            if item.get("status") == "incomplete":
                continue  # cut off by max_output_tokens: never called
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


def output_message(text: str, *, item_id: str | None = None, status: str = "completed",
                   logprobs: list[dict] | None = None) -> dict:
    """An assistant message; ``logprobs`` (chat's entries) when the request included them."""
    part: dict[str, Any] = {"type": "output_text", "text": text, "annotations": []}
    if logprobs is not None:
        part["logprobs"] = logprobs
    return {"id": item_id or new_id("msg"), "type": "message", "role": "assistant", "status": status,
            "content": [part]}


def function_call(call_id: str, name: str, arguments: str, *, item_id: str | None = None,
                  status: str = "completed") -> dict:
    return {"id": item_id or new_id("fc"), "type": "function_call", "status": status, "call_id": call_id,
            "name": name, "arguments": arguments}


def cut_short(item: dict) -> dict:
    """A function call whose arguments max_output_tokens cut off is ``incomplete``
    (and left out of a chained turn's prompt)."""
    if item["type"] != "function_call":
        return item
    try:
        json.loads(item["arguments"])
        return item
    except (ValueError, RecursionError):
        return dict(item, status="incomplete")


def reasoning_item(text: str, *, item_id: str | None = None, status: str = "completed") -> dict:
    """A reasoning model's thinking, as its own output item."""
    return {"id": item_id or new_id("rs"), "type": "reasoning", "status": status, "summary": [],
            "content": [{"type": "reasoning_text", "text": text}]}


def output_items(text: str, calls, logprobs: list[dict] | None = None, reasoning: str = "") -> list[dict]:
    """A whole answer's output: its thinking first (a reasoning model's), its text as a message
    (always one when nothing was called), then one function_call item per call (``generation.ToolCall``)."""
    out = [reasoning_item(reasoning)] if reasoning else []
    out += [output_message(text, logprobs=logprobs)] if text or not calls else []
    return out + [function_call(c.id, c.name, c.arguments) for c in calls]


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


def usage(prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0, reasoning_tokens: int = 0) -> dict:
    return {"input_tokens": prompt_tokens,
            "input_tokens_details": {"cached_tokens": cached_tokens, "cache_write_tokens": 0},
            "output_tokens": completion_tokens, "output_tokens_details": {"reasoning_tokens": reasoning_tokens},
            "total_tokens": prompt_tokens + completion_tokens}
