"""Message content read the same way by every family: a string, or a list of text
parts (each family names its text part types); any other part is a 400 that names
the part and its type."""

from __future__ import annotations

from typing import Any

from poly_ray.errors import BadRequest


def text_of(content: Any, where: str, kinds: tuple[str, ...] = ("text",)) -> str:
    """The text of ``content`` (None: none); ``where`` names the field in errors."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise BadRequest(f"{where}: a string or a list of text parts")
    out = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else type(part).__name__
        if kind not in kinds:
            allowed = ", ".join(repr(k) for k in kinds)
            raise BadRequest(f"{where}[{j}].type: only text parts ({allowed}) are supported, not {kind!r}")
        if not isinstance(part.get("text"), str):
            raise BadRequest(f"{where}[{j}].text must be a string")
        out.append(part["text"])
    return "".join(out)
