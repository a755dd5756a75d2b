"""Reading requests the same way on every route: bodies bounded while they are
read, strict JSON, a GET's query string or a POST's body into one pydantic model,
and validation errors as one readable line."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from typing import Annotated, Any

from fastapi import Request
from pydantic import AfterValidator, BaseModel, ValidationError

from poly_ray.errors import BadRequest, PayloadTooLarge, RequestTimeout
from poly_ray.generation import MAX_STOP_CHARS, MAX_STOPS
from poly_ray.grammars import SchemaError
from poly_ray.tasks.turn import Overrides


def _bounded_stops(value):
    stops = [value] if isinstance(value, str) else value or []
    if len(stops) > MAX_STOPS:
        raise ValueError(f"at most {MAX_STOPS} stop sequences, not {len(stops)}")
    if any(len(s) > MAX_STOP_CHARS for s in stops):
        raise ValueError(f"a stop sequence has at most {MAX_STOP_CHARS} characters")
    return value


# A request's `stop` on every route: one sequence or a list, bounded (see generation.MAX_STOPS).
Stop = Annotated[list[str] | str | None, AfterValidator(_bounded_stops)]
StopList = Annotated[list[str] | None, AfterValidator(_bounded_stops)]


async def parse_params(request: Request, model: type[BaseModel]) -> Any:
    """A request's parameters: the JSON body of a POST, or the query string of a GET."""
    if request.method == "GET":
        data: dict[str, Any] = {}
        for key, value in request.query_params.multi_items():
            if key == "api_key":
                continue
            if key == "stop":
                data.setdefault("stop", []).append(value)
            else:
                data[key] = value
    else:
        data = loads_json(await read_body(request), "the request body")
        if not isinstance(data, dict):
            raise BadRequest("the request body must be a JSON object")
    try:
        return model.model_validate(data, strict=False)
    except ValidationError as e:
        raise BadRequest(describe(e.errors()), param=first_field(e.errors())) from None


def loads_json(raw: str | bytes, what: str) -> Any:
    """Strict JSON: UTF-8, and no NaN or Infinity (Python's json accepts them; JSON does not)."""

    def refuse(constant: str):
        raise BadRequest(f"{what} is not valid JSON: {constant} is not a JSON value")

    try:
        return json.loads(raw.decode() if isinstance(raw, bytes) else raw, parse_constant=refuse)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BadRequest(f"{what} is not valid JSON: {e}") from None
    except RecursionError:  # json's parser recurses per nested array or object
        raise BadRequest(f"{what} is nested too deeply") from None


async def read_body(request: Request, limit_key: str = "max_request_bytes") -> bytes:
    """The body, refused with 413 as soon as it passes the server's limit (never read whole first)."""
    limit = getattr(request.app.state, limit_key)
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"the request body is {declared} bytes; the limit ({limit_key}) is {limit}")
    parts, size = [], 0
    deadline = request.app.state.config.body_timeout_s
    try:
        async with asyncio.timeout(deadline):
            async for part in request.stream():
                size += len(part)
                if size > limit:
                    raise PayloadTooLarge(f"the request body is over the limit ({limit_key}) of {limit} bytes")
                parts.append(part)
    except TimeoutError:
        raise RequestTimeout(f"the request body took longer than {deadline} s to arrive (body_timeout_s)") from None
    return b"".join(parts)


def describe(errors: Sequence[Mapping[str, Any]]) -> str:
    parts = []
    for err in errors:
        loc = ".".join(str(p) for p in err["loc"] if p not in ("body", "query", "path"))
        msg = "unknown field" if err["type"] == "extra_forbidden" else err["msg"]
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(parts)


def first_field(errors: Sequence[Mapping[str, Any]]) -> str | None:
    """The field the first error names (dotted, as ``describe`` writes it), if it names one."""
    loc = [str(p) for p in errors[0]["loc"] if p not in ("body", "query", "path")] if errors else []
    return ".".join(loc) or None


async def overrides_off_loop(app, body) -> Overrides:
    """``body.overrides(caps)`` in a thread: a schema's grammar is CPU work, kept off the
    event loop and cut off after ``schema_limits.timeout_s`` (the caps keep the thread short)."""
    caps = app.state.schema_caps
    try:
        return Overrides.of(await asyncio.wait_for(asyncio.to_thread(body.overrides, caps), caps.timeout_s))
    except TimeoutError:
        raise SchemaError(f"the schema took longer than {caps.timeout_s} s to convert "
                          "(schema_limits.timeout_s)") from None
