"""A response format (every family has one: OpenAI's response_format, Responses'
text.format, Ollama's format, Poly's schema) as the grammar that enforces it."""

from __future__ import annotations

from typing import Any

from poly_ray import grammars
from poly_ray.errors import BadRequest

KINDS = ("text", "json_object", "json_schema")


def format_grammar(kind: str | None, schema: Any, where: str, caps: grammars.Caps) -> str | None:
    """None for free text (``text`` or no format), any JSON for ``json_object``, the
    schema (required then, at ``where``) for ``json_schema``; CPU-bound with a schema."""
    if kind is None or kind == "text":
        return None
    if kind == "json_object":
        return grammars.ANY_JSON
    if kind == "json_schema":
        if not isinstance(schema, dict):
            raise BadRequest(f"{where}: a JSON schema object is required with type 'json_schema'")
        return grammars.from_schema(schema, where, caps)
    raise BadRequest(f"{where.rsplit('.', 1)[0]}.type: 'text', 'json_object' or 'json_schema', not {kind!r}")
