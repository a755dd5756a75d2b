"""The Conversations API's shapes: a conversation object with metadata, its
items (the Responses API's items, checked by the same rules)."""

from __future__ import annotations

import time

from poly_ray.api.responses.protocol import input_items
from poly_ray.errors import BadRequest, PayloadTooLarge
from poly_ray.state.store import new_id

# OpenAI's limits on metadata, and on the items one request may add.
MAX_METADATA_KEYS = 16
MAX_KEY_CHARS = 64
MAX_VALUE_CHARS = 512
MAX_ITEMS_PER_REQUEST = 20


def metadata(value, where: str = "metadata") -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BadRequest(f"{where}: an object of string values")
    if len(value) > MAX_METADATA_KEYS:
        raise BadRequest(f"{where}: at most {MAX_METADATA_KEYS} keys, not {len(value)}")
    for key, item in value.items():
        if len(key) > MAX_KEY_CHARS:
            raise BadRequest(f"{where}.{key[:20]}...: keys are at most {MAX_KEY_CHARS} characters")
        if not isinstance(item, str):
            raise BadRequest(f"{where}.{key}: values are strings")
        if len(item) > MAX_VALUE_CHARS:
            raise BadRequest(f"{where}.{key}: values are at most {MAX_VALUE_CHARS} characters")
    return dict(value)


def new_items(value, where: str = "items") -> list[dict]:
    """Items a create or items.create request adds (at most MAX_ITEMS_PER_REQUEST)."""
    if value is None:
        return []
    if isinstance(value, list) and len(value) > MAX_ITEMS_PER_REQUEST:
        raise PayloadTooLarge(f"{where}: at most {MAX_ITEMS_PER_REQUEST} items per request, not {len(value)}")
    if isinstance(value, str):  # only the Responses API's input may be a bare string
        raise BadRequest(f"{where}: a list of items")
    return input_items(value, where)


def conversation_object(meta: dict[str, str], *, cid: str | None = None, created_at: int | None = None) -> dict:
    return {"id": cid or new_id("conv"), "object": "conversation",
            "created_at": created_at or int(time.time()), "metadata": meta}


def deleted(cid: str) -> dict:
    return {"id": cid, "object": "conversation.deleted", "deleted": True}
