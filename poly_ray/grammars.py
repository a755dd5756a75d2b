"""JSON schemas to the GBNF grammars that make the model's output follow them.

llama.cpp's converter enforces most of JSON Schema but skips what it does not
know. So a schema is walked first: Poly's own keywords are translated, and a
keyword the grammar cannot enforce is refused by name rather than silently
dropped, which would let unconstrained JSON through.

A schema is also a way to attack the server: the converter writes
``maxLength: 100000`` as 100,000 nested groups, which llama.cpp's GBNF parser
walks recursively (a crash of the model replica), and nested pattern repeats
multiply the grammar's size on the ingress. So every bound is capped (``Caps``,
the config's ``schema_limits``), remote ``$ref`` is refused, and the grammar's
size and nesting are checked before it leaves the ingress.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass

from llama_cpp.llama_grammar import JSON_GBNF, json_schema_to_gbnf

from .errors import BadRequest

ANY_JSON = JSON_GBNF

# Poly's schema dialect → JSON Schema.
_POLY = {"min": "minimum", "max": "maximum", "max_length": "maxLength", "min_length": "minLength",
         "min_items": "minItems", "max_items": "maxItems"}
_ANNOTATIONS = {"title", "description", "default", "examples", "$schema", "$id", "$comment"}
_ENFORCED = {
    "type", "properties", "required", "additionalProperties", "items", "prefixItems", "minItems", "maxItems",
    "enum", "const", "minLength", "maxLength", "pattern", "format", "anyOf", "oneOf", "allOf", "$ref", "$defs",
    "definitions",
} | _ANNOTATIONS
_INTEGER_BOUNDS = {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"}


class SchemaError(BadRequest):
    code = "unsupported_schema"


@dataclass(frozen=True)
class Caps:
    """What one schema may ask of a grammar (the config's ``schema_limits``; these defaults
    keep llama.cpp's parser well inside its stack and the grammar small)."""

    max_length: int = 1000  # maxLength / minLength of a string
    max_items: int = 100  # maxItems / minItems / prefixItems of an array
    max_repeat: int = 1000  # characters a `pattern` expands to, repeats multiplied out
    max_depth: int = 32  # schemas nested in schemas
    max_properties: int = 100  # properties of one object
    max_schema_bytes: int = 64 << 10  # the schema as JSON
    max_grammar_bytes: int = 256 << 10  # the GBNF grammar it becomes
    max_grammar_nesting: int = 1100  # parentheses open at once in a rule (llama.cpp recurses per group)
    timeout_s: float = 5.0  # converting, off the event loop


DEFAULT_CAPS = Caps()
_LENGTHS = {"maxLength": "max_length", "minLength": "max_length", "maxItems": "max_items", "minItems": "max_items"}


def normalise(schema, where: str = "schema", caps: Caps = DEFAULT_CAPS, depth: int = 0) -> dict:
    """The schema in standard JSON Schema; SchemaError names a keyword that cannot be enforced
    or a bound over ``caps``."""
    if not isinstance(schema, dict):
        raise SchemaError(f"{where} must be a JSON object")
    if depth > caps.max_depth:
        raise SchemaError(f"{where}: schemas are nested more than {caps.max_depth} deep (schema_limits.max_depth)")
    schema = {_POLY.get(k, k): v for k, v in schema.items()}
    if _INTEGER_BOUNDS & schema.keys():
        schema = _bounded_integer(schema, where)
    out = {}
    for key, value in schema.items():
        here = f"{where}.{key}"
        if key == "max_decimals":
            raise SchemaError(f"{where}.max_decimals cannot be enforced by a grammar")
        elif key not in _ENFORCED:
            raise SchemaError(f"{here} cannot be enforced by a grammar")
        _check_bound(key, value, here, caps)
        if key in ("properties", "$defs", "definitions"):
            if not isinstance(value, dict):
                raise SchemaError(f"{here} must be an object")
            value = {name: normalise(sub, f"{here}.{name}", caps, depth + 1) for name, sub in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            value = normalise(value, here, caps, depth + 1)
        elif key in ("anyOf", "oneOf", "allOf", "prefixItems"):
            if not isinstance(value, list):
                raise SchemaError(f"{here} must be a list")
            value = [normalise(sub, f"{here}[{i}]", caps, depth + 1) for i, sub in enumerate(value)]
        out[key] = value
    return out


def _check_bound(key: str, value, here: str, caps: Caps) -> None:
    if key in _LENGTHS:
        cap = getattr(caps, _LENGTHS[key])
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise SchemaError(f"{here} must be a non-negative integer")
        if value > cap:
            raise SchemaError(f"{here} is {value}; at most {cap} can be enforced (schema_limits.{_LENGTHS[key]})")
    elif key == "prefixItems" and isinstance(value, list) and len(value) > caps.max_items:
        raise SchemaError(f"{here} has {len(value)} items; at most {caps.max_items} (schema_limits.max_items)")
    elif key == "properties" and isinstance(value, dict) and len(value) > caps.max_properties:
        raise SchemaError(f"{here} has {len(value)} properties; at most {caps.max_properties} "
                          "(schema_limits.max_properties)")
    elif key == "$ref" and not (isinstance(value, str) and value.startswith("#")):
        raise SchemaError(f"{here}: only references within the schema ('#/...') are followed, not {value!r}")
    elif key == "pattern":
        if not isinstance(value, str):
            raise SchemaError(f"{here} must be a string")
        size = pattern_size(value)
        if size > caps.max_repeat:
            raise SchemaError(f"{here} expands to {size} characters; at most {caps.max_repeat} "
                              "(schema_limits.max_repeat)")


def pattern_size(pattern: str) -> int:
    """How many characters a regex's grammar spells out with its repeats multiplied out
    (`(ab){3}` is 6, `a*` is 1): an upper bound of what the converter writes."""
    stack: list[list[int]] = [[0, 0]]  # per open group: [best alternative so far, this alternative]
    last = 0  # the size of the atom a quantifier applies to
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            i += 2
            last = 1
            stack[-1][1] += 1
            continue
        if c == "[":
            j = i + 1
            while j < len(pattern) and pattern[j] != "]":
                j += 2 if pattern[j] == "\\" else 1
            i = j + 1
            last = 1
            stack[-1][1] += 1
            continue
        if c == "(":
            stack.append([0, 0])
            i += 3 if pattern.startswith("(?:", i) else 1
            continue
        if c == ")" and len(stack) > 1:
            best, this = stack.pop()
            last = max(best, this)
            stack[-1][1] += last
        elif c == "|":
            stack[-1][0] = max(stack[-1][0], stack[-1][1])
            stack[-1][1] = 0
        elif c == "{":
            j = pattern.find("}", i)
            bounds = pattern[i + 1:j].split(",") if j > 0 else []
            if bounds and all(b.strip().isdigit() or b.strip() == "" for b in bounds) and bounds[0].strip():
                times = max(int(b) for b in bounds if b.strip())
                stack[-1][1] += last * (times - 1)
                last *= times
                i = j + 1
                continue
            stack[-1][1] += 1
            last = 1
        elif c not in "*+?^$":
            last = 1
            stack[-1][1] += 1
        i += 1
    while len(stack) > 1:  # an unclosed group: the converter refuses it, count it anyway
        best, this = stack.pop()
        stack[-1][1] += max(best, this)
    return max(stack[0])


# The converter skips integer bounds; a bounded range is enforced as its values.
_MAX_RANGE = 1000


def _bounded_integer(schema: dict, where: str) -> dict:
    if schema.get("type") != "integer":
        raise SchemaError(f"{where}: minimum/maximum can only be enforced on integers, not on {schema.get('type')!r}")
    lo = schema.get("minimum", schema.get("exclusiveMinimum", None))
    hi = schema.get("maximum", schema.get("exclusiveMaximum", None))
    if lo is None or hi is None or not isinstance(lo, int) or not isinstance(hi, int):
        raise SchemaError(f"{where}: an integer range is enforced only with both bounds as integers")
    lo += "exclusiveMinimum" in schema
    hi -= "exclusiveMaximum" in schema
    if hi - lo > _MAX_RANGE:
        raise SchemaError(f"{where}: an integer range of more than {_MAX_RANGE} values cannot be enforced")
    rest = {k: v for k, v in schema.items() if k not in _INTEGER_BOUNDS and k != "type"}
    return {**rest, "enum": list(range(lo, hi + 1))}


def from_schema(schema: dict, where: str = "schema", caps: Caps = DEFAULT_CAPS) -> str:
    """The grammar of a JSON schema (standard or Poly's dialect); SchemaError if it cannot be
    enforced or asks more than ``caps``. CPU-bound: call it off the event loop."""
    try:
        schema_json = json.dumps(schema, sort_keys=True)
    except (TypeError, ValueError, RecursionError):
        raise SchemaError(f"{where} must be JSON") from None
    if len(schema_json) > caps.max_schema_bytes:
        raise SchemaError(f"{where} is {len(schema_json)} bytes as JSON; at most {caps.max_schema_bytes} "
                          "(schema_limits.max_schema_bytes)")
    return _grammar(schema_json, where, caps)


@functools.lru_cache(maxsize=256)
def _grammar(schema_json: str, where: str, caps: Caps) -> str:
    # The same task schema comes with every request: convert it once.
    normalised = normalise(json.loads(schema_json), where, caps)
    try:
        grammar = json_schema_to_gbnf(json.dumps(normalised))
    except RecursionError:
        raise SchemaError(f"{where} refers to itself too deeply") from None
    except Exception as e:
        raise SchemaError(f"{where} is not supported: {e}") from None
    check_grammar(grammar, where, caps)
    return grammar


def check_grammar(grammar: str, where: str, caps: Caps = DEFAULT_CAPS) -> None:
    """SchemaError unless the grammar is small enough and nested shallowly enough for llama.cpp."""
    if len(grammar) > caps.max_grammar_bytes:
        raise SchemaError(f"{where} becomes a grammar of {len(grammar)} bytes; at most {caps.max_grammar_bytes} "
                          "(schema_limits.max_grammar_bytes)")
    nesting = grammar_nesting(grammar)
    if nesting > caps.max_grammar_nesting:
        raise SchemaError(f"{where} becomes a grammar nested {nesting} deep; at most {caps.max_grammar_nesting} "
                          "(schema_limits.max_grammar_nesting)")


def grammar_nesting(grammar: str) -> int:
    """The most parentheses open at once in a GBNF grammar, outside literals and character classes."""
    deepest = depth = 0
    quote = None  # '"' inside a literal, "]" inside a class
    escaped = False
    for c in grammar:
        if quote:
            if escaped:
                escaped = False
            elif c == "\\":
                escaped = True
            elif c == quote:
                quote = None
        elif c == '"':
            quote = '"'
        elif c == "[":
            quote = "]"
        elif c == "(":
            depth += 1
            deepest = max(deepest, depth)
        elif c == ")":
            depth -= 1
        elif c == "\n":
            depth = 0
    return deepest
