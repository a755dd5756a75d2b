"""Tool calling for models that were not trained for it: llama.cpp's "generic" way.

The offered tools go into the system turn as JSON, and the answer is one JSON
envelope, ``{"tool_calls": [{"name": ..., "arguments": {...}}]}`` or (with
``auto``) ``{"content": "..."}``, enforced by a grammar from the first token:
each call's name is one of the offered tools, and its arguments follow that
tool's schema. The grammar is composed of the per-tool grammars of
``grammars.from_schema``, so a tool's schema is checked (and refused by name)
exactly like a ``response_format`` schema. The name comes before the arguments,
so a stream can say which tool is called before its arguments are written.

``EnvelopeDecoder`` reads the envelope as it is generated and turns it into
content text and ``ToolCallDelta`` events (plain data, they cross handles).
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace

from . import grammars
from .errors import BadRequest
from .generation import Chunk, Done, Event, ToolCallDelta

MAX_TOOLS = 128
MAX_CALLS = 16  # parallel calls in one answer: a small model must not loop until max_tokens
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # OpenAI's rule for function names
_NO_ARGUMENTS = {"type": "object", "properties": {}}


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    parameters: dict  # a JSON schema of an object


@dataclass(frozen=True)
class Plan:
    """What a request asks of the model: ``mode`` is auto, required or none;
    ``forced`` names the one tool a named choice allows."""

    tools: tuple[Tool, ...]
    mode: str
    forced: str | None = None
    parallel: bool = True
    caps: grammars.Caps = grammars.DEFAULT_CAPS  # the config's schema_limits

    @property
    def active(self) -> bool:
        return bool(self.tools) and self.mode != "none"

    def callable(self) -> tuple[Tool, ...]:
        return tuple(t for t in self.tools if self.forced in (None, t.name))

    def instructions(self) -> str:
        """The system text that tells the model the tools and the envelope."""
        lines = ["You can call these tools. Each tool's arguments follow its JSON schema:"]
        lines += [json.dumps({"name": t.name, "description": t.description, "parameters": t.parameters},
                             ensure_ascii=False) for t in self.tools]
        calls = "one or more calls" if self.parallel else "exactly one call"
        lines.append(f'To call tools ({calls}), answer {{"tool_calls": [{{"name": "<tool name>", '
                     f'"arguments": {{<the arguments>}}}}]}}.')
        if self.forced:
            lines.append(f"Call the tool {self.forced}.")
        if self.mode == "auto":
            lines.append('To answer without a tool, answer {"content": "<your answer>"}.')
        lines.append("Answer with that one JSON object and nothing else.")
        return "\n".join(lines)

    def grammar(self) -> str:
        """The GBNF grammar of the envelope (root rule ``root``)."""
        rules = ['space ::= " "?']
        branches = []
        for i, tool in enumerate(self.callable()):
            args = _prefixed(grammars.from_schema(tool.parameters, f"tools[{i}].function.parameters", self.caps), f"t{i}-")
            rules += args
            rules.append(f'call-{i} ::= {_literal(json.dumps(tool.name))} space "," space '
                         f'"\\"arguments\\"" space ":" space t{i}-root')
            branches.append(f"call-{i}")
        rules.append(f'call ::= "{{" space "\\"name\\"" space ":" space ( {" | ".join(branches)} ) "}}" space')
        more = f'( "," space call ){{0,{MAX_CALLS - 1}}}' if self.parallel else ""
        calls = f'"{{" space "\\"tool_calls\\"" space ":" space "[" space call {more} "]" space "}}" space'
        if self.mode == "auto":
            rules += _prefixed(grammars.from_schema({"type": "string"}, "content", self.caps), "c-")
            rules.append(f"calls ::= {calls}")
            rules.append('content ::= "{" space "\\"content\\"" space ":" space c-root "}" space')
            rules.append("root ::= calls | content")
        else:
            rules.append(f"root ::= {calls}")
        return "\n".join(rules)


def check_tools(tools, where: str = "tools", caps: grammars.Caps = grammars.DEFAULT_CAPS) -> tuple[Tool, ...]:
    """OpenAI's (and Ollama's) tool definitions, checked; BadRequest names the field.
    Each schema is held to ``caps`` (the config's schema_limits)."""
    if not isinstance(tools, list):
        raise BadRequest(f"{where} must be a list")
    if len(tools) > MAX_TOOLS:
        raise BadRequest(f"{where}: at most {MAX_TOOLS} tools, not {len(tools)}")
    out, seen = [], set()
    for i, tool in enumerate(tools):
        here = f"{where}[{i}]"
        if not isinstance(tool, dict) or tool.get("type", "function") != "function":
            kind = tool.get("type") if isinstance(tool, dict) else type(tool).__name__
            raise BadRequest(f"{here}.type: only 'function' tools are supported, not {kind!r}")
        unknown = set(tool) - {"type", "function"}
        fn = tool.get("function")
        if unknown or not isinstance(fn, dict):
            raise BadRequest(f"{here}: a tool is {{'type': 'function', 'function': {{'name', 'description', 'parameters'}}}}")
        unknown = set(fn) - {"name", "description", "parameters", "strict"}
        if unknown:
            raise BadRequest(f"{here}.function.{sorted(unknown)[0]}: unknown field")
        name = fn.get("name")
        if not isinstance(name, str) or not _NAME.match(name):
            raise BadRequest(f"{here}.function.name: 1-64 letters, digits, '_' or '-'")
        if name in seen:
            raise BadRequest(f"{here}.function.name: '{name}' is offered twice")
        seen.add(name)
        description = fn.get("description") or ""
        if not isinstance(description, str):
            raise BadRequest(f"{here}.function.description must be a string")
        parameters = fn.get("parameters") or _NO_ARGUMENTS
        if not isinstance(parameters, dict) or parameters.get("type", "object") != "object":
            raise BadRequest(f"{here}.function.parameters must be a JSON schema of an object")
        parameters = {"type": "object", **parameters}
        grammars.from_schema(parameters, f"{here}.function.parameters", caps)  # refuses what it cannot enforce
        out.append(Tool(name, description, parameters))
    return tuple(out)


def plan(tools, tool_choice=None, parallel_tool_calls: bool | None = None,
         caps: grammars.Caps = grammars.DEFAULT_CAPS) -> Plan:
    """The plan of a request (OpenAI's ``tool_choice``; ``None``: auto, or none without tools).
    CPU-bound with tools (their schemas are converted): call it off the event loop."""
    checked = check_tools(tools, caps=caps) if tools else ()
    parallel = True if parallel_tool_calls is None else bool(parallel_tool_calls)
    if tool_choice is None:
        return Plan(checked, "auto" if checked else "none", parallel=parallel, caps=caps)
    if tool_choice in ("auto", "none", "required"):
        if tool_choice == "required" and not checked:
            raise BadRequest("tool_choice: 'required' needs tools")
        return Plan(checked, tool_choice, parallel=parallel, caps=caps)
    if isinstance(tool_choice, dict) and tool_choice.get("type") == "function":
        name = (tool_choice.get("function") or {}).get("name")
        if name not in {t.name for t in checked}:
            offered = ", ".join(t.name for t in checked) or "none"
            raise BadRequest(f"tool_choice.function.name: '{name}' is not an offered tool (tools: {offered})")
        # One call of a named function unless the request asks for more: the clients that force
        # one for structured output (instructor's TOOLS mode, LangChain's function calling) read
        # one, and a small model repeated the call until max_tokens.
        return Plan(checked, "required", forced=name, parallel=bool(parallel_tool_calls), caps=caps)
    raise BadRequest("tool_choice: 'auto', 'none', 'required' or {'type': 'function', 'function': {'name': ...}}")


def with_instructions(plan: Plan, messages: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The messages with the tools in the system turn (the first system message, or a new one)."""
    if messages and messages[0][0] in ("system", "developer"):
        return [(messages[0][0], messages[0][1] + "\n\n" + plan.instructions()), *messages[1:]]
    return [("system", plan.instructions()), *messages]


def envelope(calls: list[tuple[str, dict]], content: str = "") -> str:
    """An earlier assistant turn's calls as the model writes them (so it sees its own format)."""
    said = json.dumps({"tool_calls": [{"name": n, "arguments": a} for n, a in calls]}, ensure_ascii=False)
    return f"{content}\n{said}" if content else said


def tool_result(name: str | None, content: str) -> tuple[str, str]:
    """A tool's result as a turn the model reads (templates without a tool role accept a user turn)."""
    return ("user", f"Result of the tool {name}: {content}" if name else f"Tool result: {content}")


def new_call_id() -> str:
    return "call_" + secrets.token_hex(12)


async def decode(events: AsyncIterator[Event], plan: Plan) -> AsyncIterator[Event]:
    """The model's envelope as events: content as Chunks, calls as ToolCallDeltas;
    Done says ``tool_calls`` when the answer is calls, ``length`` when it was cut."""
    decoder = EnvelopeDecoder()
    async for event in events:
        if isinstance(event, Chunk):
            for out in decoder.feed(event.text):
                yield Chunk(out, event.tokens) if isinstance(out, str) else out
        elif isinstance(event, Done):
            if event.finish_reason != "length" and decoder.calls:
                event = replace(event, finish_reason="tool_calls")
            elif not decoder.complete:
                event = replace(event, finish_reason="length")
            yield event
        else:
            yield event


_WS = " \t\n\r"
_ESCAPES = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}


class EnvelopeDecoder:
    """Reads the envelope a character at a time (the grammar fixes its shape): content
    as text, each call as a first delta with its id and name, then fragments of its
    arguments' JSON text. ``feed`` returns what the new text completed."""

    def __init__(self):
        self.calls = 0
        self.complete = False
        self._out: list = []
        self._parser = self._parse()
        next(self._parser)

    def feed(self, text: str) -> list:
        for c in text:
            if self.complete:
                break  # the grammar's trailing space
            try:
                self._parser.send(c)
            except StopIteration:
                self.complete = True
        out, self._out = self._out, []
        merged: list = []
        for item in out:  # adjacent pieces of one kind become one
            if isinstance(item, str) and merged and isinstance(merged[-1], str):
                merged[-1] += item
            elif (isinstance(item, ToolCallDelta) and not item.id and merged and isinstance(merged[-1], ToolCallDelta)
                  and merged[-1].index == item.index):
                merged[-1] = replace(merged[-1], arguments=merged[-1].arguments + item.arguments)
            else:
                merged.append(item)
        return merged

    def _parse(self):
        c = yield from self._skip()
        if c != "{":
            return
        key = yield from self._key()
        if key == "content":
            yield from self._skip()  # its opening quote
            yield from self._string(lambda c: self._out.append(c))
            yield from self._skip()  # the envelope's "}"
        elif key == "tool_calls":
            c = yield from self._skip()
            while c in "[,":
                c = yield from self._skip()  # the call's "{"
                name = yield from self._key()  # "name"
                yield from self._skip()  # its opening quote
                name = yield from self._string(lambda _: None)
                index, self.calls = self.calls, self.calls + 1
                self._out.append(ToolCallDelta(index, new_call_id(), name))
                yield from self._key()  # "arguments"
                yield from self._value(lambda s, i=index: self._out.append(ToolCallDelta(i, arguments=s)))
                yield from self._skip()  # the call's "}"
                c = yield from self._skip()  # "," or "]"
            yield from self._skip()  # the envelope's "}"

    def _skip(self):
        c = yield
        while c in _WS:
            c = yield
        return c

    def _key(self):
        """Up to the first non-space after the next key's colon; the key."""
        c = yield from self._skip()
        while c != '"':
            c = yield from self._skip()
        key = yield from self._string(lambda _: None)
        yield from self._skip()  # ":"
        return key

    def _string(self, emit):
        """A JSON string's body after its opening quote, decoded piece by piece."""
        text: list[str] = []
        while True:
            c = yield
            if c == '"':
                return "".join(text)
            if c == "\\":
                e = yield
                if e == "u":
                    code = yield from self._hex4()
                    if 0xD800 <= code < 0xDC00:  # a surrogate pair: \uD83D\uDE00
                        yield
                        yield
                        low = yield from self._hex4()
                        code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)
                    c = chr(code) if code < 0xD800 or code > 0xDFFF else "\ufffd"
                else:
                    c = _ESCAPES.get(e, e)
            text.append(c)
            emit(c)

    def _hex4(self):
        digits = ""
        for _ in range(4):
            digits += yield
        return int(digits, 16)

    def _value(self, emit):
        """A JSON object's text as written (its first character is the next non-space)."""
        c = yield from self._skip()
        emit(c)
        depth, in_string, escaped = 1, False, False
        while depth:
            c = yield
            emit(c)
            if in_string:
                if escaped:
                    escaped = False
                elif c == "\\":
                    escaped = True
                elif c == '"':
                    in_string = False
            elif c == '"':
                in_string = True
            elif c in "{[":
                depth += 1
            elif c in "}]":
                depth -= 1


_TOKEN = re.compile(r'"(?:\\.|[^"\\])*"|\[(?:\\.|[^\]\\])*\]|\{[0-9, ]*\}|[A-Za-z0-9-]+|\s+|.', re.S)


def _prefixed(grammar: str, prefix: str) -> list[str]:
    """A converter grammar's rules with every rule name prefixed, so that several
    grammars live in one (literals and character classes are left alone)."""
    lines = [line for line in grammar.splitlines() if line.strip()]
    names = {line.split("::=", 1)[0].strip() for line in lines}
    out = []
    for line in lines:
        name, body = line.split("::=", 1)
        body = "".join(prefix + t if t in names else t for t in _TOKEN.findall(body))
        out.append(f"{prefix}{name.strip()} ::= {body.strip()}")
    return out


def _literal(text: str) -> str:
    """A GBNF literal that matches ``text`` exactly."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
