"""The configuration reference, written from the schema: one section per TOML table,
each key with its type, default and ``Field(description=...)``.

``poly-ray docs`` writes it to ``docs/operations/configuration.md``;
tests/config/test_config_docs.py fails when the committed page is not what it writes,
so the page cannot drift from the schema the server validates against.
"""

from __future__ import annotations

import inspect
import json
import re
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Union

import annotated_types
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from .loading import ENV_KEYS
from .schema import Config

# Where the page lives, from the repository's root.
PAGE = Path("docs/operations/configuration.md")

_INTRO = """\
# Configuration reference

<!-- Written by `poly-ray docs` from the descriptions in poly_ray/config/; edit those, not this page. -->

poly-ray reads one TOML file, with Poly's key names:
`poly-ray serve -c my.toml` (or `POLY_CONFIG=my.toml`; without either, the embedded
[config.example.toml](../../config.example.toml)). It is validated at start-up: a bad key,
a wrong type, a missing model file or a task naming an unknown model stops the server
with a message naming the key (`tasks.qa.model: unknown model 'gemm' (models: gemma)`).
`poly-ray check -c my.toml` validates a file without starting anything.

Paths are relative to the config file. A key left out takes its default; *required*
keys have none. Some top-level keys can be set from the environment instead
(`POLY_` and the key in capitals, noted below; a list is comma-separated or a JSON
list, a table is JSON), which is how a cluster's secrets stay out of the file.
"""


@dataclass(frozen=True)
class _Section:
    title: str  # the TOML table, e.g. "[models.NAME.autoscaling]"
    model: type[BaseModel]


def reference() -> str:
    """The whole page, as ``poly-ray docs`` writes it."""
    parts = [_INTRO]
    titles: dict[type[BaseModel], str] = {Config: "Top level"}
    stack = [_Section("Top level", Config)]
    while stack:  # depth first: a table's own tables follow it
        section = stack.pop()
        text, nested = _section(section, titles)
        parts.append(text)
        stack.extend(reversed(nested))
    return "\n".join(parts)


def _section(section: _Section, titles: dict[type[BaseModel], str]) -> tuple[str, list[_Section]]:
    """The section's text, and the sections of the tables it holds that have none yet
    (a model met twice, like the store's ``file`` and ``hora``, is written once)."""
    model = section.model
    lines = [f"## {_heading(section.title)}", ""]
    if model.__doc__ and model is not Config:
        lines += ["\n\n".join(_prose(p) for p in inspect.cleandoc(model.__doc__).split("\n\n")), ""]
    lines += ["| key | type | default | description |", "|---|---|---|---|"]
    nested = []
    for name, field in _fields(model):
        table = _table_of(field.annotation)
        if table is not None:
            kind, sub = table
            if sub not in titles:
                titles[sub] = _child_title(section.title, name, kind)
                nested.append(_Section(titles[sub], sub))
            kind_text = {"table": "table", "list": "list of tables", "named": "tables by name"}[kind]
            type_text = f"{kind_text}: see {_link(titles[sub])}"
        else:
            type_text = _type(field.annotation) + _range(field)
        description = _description(model, name, field)
        if model is Config and name in ENV_KEYS:
            description += f" Environment: `POLY_{name.upper()}`."
        default = _default(model, name, field)
        lines.append(f"| `{name}` | {_cell(type_text)} | {_cell(default)} | {_cell(description)} |")
    for name, (type_text, description) in getattr(model, "EXTRA_KEYS", {}).items():
        lines.append(f"| `{name}` | {_cell(type_text)} | not set | {_cell(description)} |")
    lines.append("")
    return "\n".join(lines), nested


def _fields(model: type[BaseModel]) -> list[tuple[str, FieldInfo]]:
    """The model's fields in the order a TOML file has them: plain keys before tables
    (TOML wants them so), each group as the model declares it, its own keys before
    those of its bases (Config's before Bounds')."""
    own = [name for name in vars(model).get("__annotations__", {}) if name in model.model_fields]
    names = own + [name for name in model.model_fields if name not in own]
    names.sort(key=lambda name: _table_of(model.model_fields[name].annotation) is not None)
    return [(name, model.model_fields[name]) for name in names]


def _description(model: type[BaseModel], name: str, field: FieldInfo) -> str:
    if not field.description:
        raise ValueError(f"{model.__name__}.{name} has no Field(description=...): "
                         "the configuration reference needs one")
    return _prose(field.description)


def _child_title(parent: str, name: str, kind: str) -> str:
    base = "" if parent == "Top level" else parent.strip("[]") + "."
    if kind == "named":
        return f"[{base}{name}.NAME]"
    if kind == "list":
        return f"[[{base}{name}]]"
    return f"[{base}{name}]"


def _heading(title: str) -> str:
    return title if title == "Top level" else f"`{title}`"


def _link(title: str) -> str:
    return f"[{_heading(title)}](#{_slug(_heading(title))})"


def _slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces as dashes."""
    return re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")


def _table_of(annotation) -> tuple[str, type[BaseModel]] | None:
    """("table" | "list" | "named", the model) when the key holds tables of a model."""
    for arg in _without_none(annotation):
        origin = typing.get_origin(arg)
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return "table", arg
        if origin is list and _is_model(typing.get_args(arg)[0]):
            return "list", typing.get_args(arg)[0]
        if origin is dict and _is_model(typing.get_args(arg)[1]):
            return "named", typing.get_args(arg)[1]
    return None


def _is_model(t) -> bool:
    return isinstance(t, type) and issubclass(t, BaseModel)


def _without_none(annotation) -> list:
    if typing.get_origin(annotation) in (Union, types.UnionType):
        return [a for a in typing.get_args(annotation) if a is not type(None)]
    return [annotation]


_NAMES = {int: "integer", float: "number", bool: "boolean", str: "string", Path: "path", Any: "any"}


def _type(annotation) -> str:
    args = _without_none(annotation)
    if len(args) > 1:
        return " or ".join(_type(a) for a in args)
    t = args[0]
    origin = typing.get_origin(t)
    if origin is Literal:
        return " or ".join(f"`{json.dumps(v)}`" for v in typing.get_args(t))
    if origin is list:
        return f"list of {_plural(_type(typing.get_args(t)[0]))}"
    if origin is dict:
        return "table"
    return _NAMES.get(t, getattr(t, "__name__", str(t)))


def _plural(name: str) -> str:
    return {"any": "values", "path": "paths"}.get(name, name + "s")


def _range(field: FieldInfo) -> str:
    """The bounds pydantic checks, as ", 1 to 256" or ", > 0"."""
    found = {}
    for m in field.metadata:
        for kind in (annotated_types.Ge, annotated_types.Gt, annotated_types.Le, annotated_types.Lt):
            if isinstance(m, kind):
                found[kind.__name__.lower()] = _number(getattr(m, kind.__name__.lower()))
    if "ge" in found and "le" in found:
        return f", {found['ge']} to {found['le']}"
    signs = {"ge": "≥", "gt": ">", "le": "≤", "lt": "<"}
    return "".join(f", {signs[k]} {v}" for k, v in found.items())


def _number(n) -> str:
    return f"{n:,}" if isinstance(n, int) and not isinstance(n, bool) and abs(n) >= 10_000 else str(n)


def _default(model: type[BaseModel], name: str, field: FieldInfo) -> str:
    extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
    if "default_text" in extra:
        return str(extra["default_text"])
    if field.default_factory is not None:
        raise ValueError(f"{model.__name__}.{name}: a computed default needs "
                         "json_schema_extra={'default_text': ...} for the configuration reference")
    value = field.default
    if value is PydanticUndefined:
        return "*required*"
    if value is None:
        return "not set"
    if isinstance(value, BaseModel):
        return "its defaults"
    if isinstance(value, bool):
        return f"`{'true' if value else 'false'}`"
    if isinstance(value, int) and name.endswith("_bytes") and value >= 1024:
        return f"`{value}` ({_size(value)})"
    if isinstance(value, int | float):
        return f"`{value}`"
    return f"`{json.dumps(value if not isinstance(value, Path) else str(value))}`"


def _size(n: int) -> str:
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift and n % (1 << shift) == 0:
            return f"{n >> shift} {unit}"
    return f"{n:,} bytes"


def _prose(text: str) -> str:
    """Docstring markup (``x``) as Markdown, one paragraph on one line."""
    return re.sub(r"``([^`]+)``", r"`\1`", re.sub(r"\s*\n\s*", " ", text.strip()))


def _cell(text: str) -> str:
    return text.replace("|", r"\|").replace("\n", " ")
