"""Server-sent events framing (https://html.spec.whatwg.org/#server-sent-events)."""

from __future__ import annotations

import json

KEEP_ALIVE = b": keep-alive\n\n"


def event(data: str, name: str | None = None) -> bytes:
    """One event. Newlines in data become several ``data:`` lines, which clients join with "\\n".

    Every line gets ``data: `` with a space: clients strip exactly one space, so a
    token's own leading space survives.
    """
    head = f"event: {name}\n" if name else ""
    lines = data.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return (head + "".join(f"data: {line}\n" for line in lines) + "\n").encode()


def json_event(name: str, payload: dict) -> bytes:
    return event(json.dumps(payload, separators=(",", ":")), name)
