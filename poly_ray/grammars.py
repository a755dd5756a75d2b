"""GBNF grammars that make the model's output valid JSON (llama.cpp's converter)."""

from __future__ import annotations

import json

from llama_cpp.llama_grammar import JSON_GBNF, json_schema_to_gbnf

from .errors import BadRequest

ANY_JSON = JSON_GBNF


def from_schema(schema: dict, where: str) -> str:
    """The grammar of a JSON schema; a schema the converter cannot take is the client's 400."""
    try:
        return json_schema_to_gbnf(json.dumps(schema))
    except Exception as e:
        raise BadRequest(f"{where} is not supported: {e}") from None
