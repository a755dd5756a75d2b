"""``poly-ray import KIND FILE``: read another server's config, write poly-ray's TOML
(to stdout or ``-o``), say on stderr each key that was not mapped and why, and check
the result as ``poly-ray check`` would. A file that is not of that kind: one line,
exit code 2."""

from __future__ import annotations

import sys
from pathlib import Path

from poly_ray.config import validate
from poly_ray.errors import ConfigError

from . import llm_api, poly_config
from .imported import NotThatFormat
from .toml_out import dumps

KINDS = {"llm-api": llm_api, "poly": poly_config}


def import_config(kind: str, source: str, output: str | None) -> int:
    module = KINDS[kind]
    path = Path(source)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        print(f"poly-ray import: no such file: {path}", file=sys.stderr)
        return 2
    except (OSError, UnicodeDecodeError) as e:
        print(f"poly-ray import: cannot read {path} as text: {e}", file=sys.stderr)
        return 2
    try:
        imported = module.convert(module.parse(text, str(path)))
    except NotThatFormat as e:
        print(f"poly-ray import: {e}", file=sys.stderr)
        return 2
    comments = [f"Written by `poly-ray import {kind} {path.name}`."]
    comments += [f"not mapped: {u}" for u in imported.unmapped] + [f"note: {n}" for n in imported.notes]
    toml = dumps(imported.config, comments)
    for line in imported.unmapped:
        print(f"poly-ray import: not mapped: {line}", file=sys.stderr)
    for line in imported.notes:
        print(f"poly-ray import: note: {line}", file=sys.stderr)
    if output:
        Path(output).write_text(toml, encoding="utf-8")
    else:
        sys.stdout.write(toml)
    # Checked without the files it names (a model to download, paths relative to it).
    try:
        validate(_without_files(imported.config), env={})
    except ConfigError as e:
        problem = "; ".join(line.strip() for line in str(e).splitlines() if line.strip())
        print(f"poly-ray import: the written config needs a fix before it starts: {problem}", file=sys.stderr)
    return 0


def _without_files(config: dict) -> dict:
    """The config with each model_path given a url, so a missing file is not an error
    here (it is at start-up, naming the key)."""
    models = {}
    for name, model in (config.get("models") or {}).items():
        if isinstance(model, dict) and "model_path" in model and "url" not in model:
            model = {**model, "url": "file:///not-checked-by-import"}
        if isinstance(model, dict):
            model = {k: v for k, v in model.items() if k != "lora_adapters"}
        models[name] = model
    return {**config, "models": models}
