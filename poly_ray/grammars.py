"""JSON schemas to the GBNF grammars that make the model's output follow them.

llama.cpp's converter enforces most of JSON Schema but skips what it does not
know. So a schema is walked first: Poly's own keywords are translated, and a
keyword the grammar cannot enforce is refused by name rather than silently
dropped, which would let unconstrained JSON through.
"""

from __future__ import annotations

import functools
import json

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


def normalise(schema, where: str = "schema") -> dict:
    """The schema in standard JSON Schema; SchemaError names a keyword that cannot be enforced."""
    if not isinstance(schema, dict):
        raise SchemaError(f"{where} must be a JSON object")
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
        if key in ("properties", "$defs", "definitions"):
            value = {name: normalise(sub, f"{here}.{name}") for name, sub in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            value = normalise(value, here)
        elif key in ("anyOf", "oneOf", "allOf", "prefixItems"):
            value = [normalise(sub, f"{here}[{i}]") for i, sub in enumerate(value)]
        out[key] = value
    return out


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


def from_schema(schema: dict, where: str = "schema") -> str:
    """The grammar of a JSON schema (standard or Poly's dialect); SchemaError if it cannot be enforced."""
    return _grammar(json.dumps(schema, sort_keys=True), where)


@functools.lru_cache(maxsize=256)
def _grammar(schema_json: str, where: str) -> str:
    # The same task schema comes with every request: convert it once.
    try:
        return json_schema_to_gbnf(json.dumps(normalise(json.loads(schema_json), where)))
    except SchemaError:
        raise
    except Exception as e:
        raise SchemaError(f"{where} is not supported: {e}") from None
