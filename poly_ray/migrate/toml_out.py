"""Writing a config as TOML (the standard library reads TOML but does not write it).
Enough for poly-ray's configs: top-level keys, then one ``[table.NAME]`` per entry of
each table, nested values as inline tables."""

from __future__ import annotations

import json
import math
import re
from typing import Any

_BARE = re.compile(r"[A-Za-z0-9_-]+")


def dumps(data: dict[str, Any], comments: list[str] = ()) -> str:
    lines = [f"# {c}" for c in comments]
    tables = {k: v for k, v in data.items() if isinstance(v, dict) and all(isinstance(e, dict) for e in v.values())}
    lines += [f"{_key(k)} = {_value(v)}" for k, v in data.items() if k not in tables]
    for table, entries in tables.items():
        for name, entry in entries.items():
            lines += ["", f"[{_key(table)}.{_key(name)}]"]
            lines += [f"{_key(k)} = {_value(v)}" for k, v in entry.items() if v is not None]
    return "\n".join(lines) + "\n"


def _key(k: str) -> str:
    return k if _BARE.fullmatch(k) else json.dumps(k, ensure_ascii=False)


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return ("inf" if v > 0 else "-inf") if math.isinf(v) else "nan" if math.isnan(v) else repr(v)
    if isinstance(v, str):
        # A JSON string without \u escapes of astral characters is a TOML basic string.
        return json.dumps(v, ensure_ascii=False).replace("\x7f", "\\u007f")  # TOML escapes DEL too
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_value(e) for e in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{_key(k)} = {_value(e)}" for k, e in v.items() if e is not None) + " }"
    raise TypeError(f"no TOML for {type(v).__name__}")
