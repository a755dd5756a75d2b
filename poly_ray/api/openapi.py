"""The OpenAPI document (``/openapi.json``): what each route reads and answers.

Routes read their own bodies (``parsing.parse_params``: the body limit, JSON
whatever the content type, one error shape), so FastAPI cannot see their models.
A route declares them with ``doc(...)``, and ``document()`` finishes FastAPI's
document: schemas of the declared models, the error statuses each route may
answer in its family's shape, and the names of the configured tasks and models.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

REF = "#/components/schemas/{model}"

# What a route may be refused with, by what it does. 400 for any route: a query
# string that is not UTF-8.
PLAIN = (400,)
AUTHORIZED = (400, 401, 403, 404)
WITH_BODY = (*AUTHORIZED, 408, 413)
GENERATES = (*WITH_BODY, 429, 503)

# Streamed answers, by media type; the schema is that of one event or line.
SSE = {"text/event-stream": {"type": "object", "properties": {"event": {"type": "string"}, "data": {"type": "string"}},
                             "required": ["data"]}}
NDJSON = {"application/x-ndjson": {"type": "object"}}
TEXT = {"text/plain": {"type": "string"}}

_DESCRIPTIONS = {400: "Bad request", 401: "No valid credentials", 403: "Outside the credentials' scope",
                 404: "No such task, model, memory or route", 408: "The body took over body_timeout_s to arrive",
                 413: "The body is over max_request_bytes",
                 415: "Not a document type the memory reads", 422: "A document that cannot be read (or is empty)",
                 429: "Over max_streams_per_credential", 502: "A download from the model's source failed",
                 503: "Busy (max_concurrent, or the model's queue)"}


_registry: dict[str, type[BaseModel]] = {}


def ref(model: type[BaseModel]) -> dict:
    """A reference to ``model``'s schema, which the document will hold."""
    if _registry.setdefault(model.__name__, model) is not model:
        raise TypeError(f"two documented models are called {model.__name__}")
    return {"$ref": REF.format(model=model.__name__)}


def doc(
    *,
    body: type[BaseModel] | None = None,
    query: type[BaseModel] | None = None,
    ok: type[BaseModel] | dict | None = None,
    accepted: type[BaseModel] | None = None,
    streams: dict[str, dict] | None = None,
    errors: tuple[int, ...] = AUTHORIZED,
) -> dict:
    """``openapi_extra`` for a route: its JSON body or query parameters, its answer
    (``ok``: a model or a schema; ``accepted``: a 202's body; ``streams``: other media types it may answer
    with, by their schema) and the error statuses it may answer (in the shape of the route's family:
    ``family.FamilyRoute`` adds it)."""
    extra: dict[str, Any] = {}
    if body is not None:
        extra["requestBody"] = {"required": True, "content": {"application/json": {"schema": ref(body)}}}
    if query is not None:
        extra["parameters"] = _query_parameters(query)
    content = {}
    if ok is not None:
        content["application/json"] = {"schema": ref(ok) if isinstance(ok, type) else ok}
    content.update({media: {"schema": schema} for media, schema in (streams or {}).items()})
    extra["responses"] = {
        "200": {"description": "Success", "content": content},
        **({"202": {"description": "Accepted: runs as a job", "content": {"application/json": {"schema": ref(accepted)}}}}
           if accepted else {}),
        **{str(s): {"description": _DESCRIPTIONS[s]} for s in errors},
    }
    return extra


def _query_parameters(model: type[BaseModel]) -> list[dict]:
    schema = model.model_json_schema()
    required = set(schema.get("required", ()))
    params = []
    for name, prop in schema["properties"].items():
        if any(branch.get("type") == "object" for branch in [prop, *prop.get("anyOf", ())]):
            continue  # objects travel in a POST body only
        params.append({"name": name, "in": "query", "required": name in required, "schema": prop})
    return params


def document(app: FastAPI, tasks: list[str], models: list[str], memories: Sequence[str] = ()) -> dict:
    """FastAPI's document, finished with the declared models and the configured names."""
    spec = get_openapi(title=app.title, version=app.version, routes=app.routes)
    _, definitions = models_json_schema([(m, "validation") for m in _registry.values()], ref_template=REF)
    spec["components"] = {"schemas": definitions.get("$defs", {})}
    names = {k: v for k, v in {"task": tasks, "model": models, "memory": list(memories)}.items() if v}
    for operations in spec["paths"].values():
        for operation in operations.values():
            # Validation errors are 400 here (FastAPI's default 422 never happens).
            if "HTTPValidationError" in str(operation["responses"].get("422")):
                del operation["responses"]["422"]
            for param in operation.get("parameters", ()):
                if param["in"] == "path" and param["name"] in names:
                    param["schema"] = {"type": "string", "enum": names[param["name"]]}
    # A client's `model` names a task or a model.
    for schema in spec["components"]["schemas"].values():
        if "model" in schema.get("properties", {}) and schema["properties"]["model"].get("type") == "string":
            schema["properties"]["model"] = {"type": "string", "enum": tasks + models}
    return spec
