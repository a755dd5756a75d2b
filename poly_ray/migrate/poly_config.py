"""``poly-ray import poly config.toml``: Poly's own config as poly-ray's.

poly-ray reads Poly's keys as they are (``architecture``, ``hora`` stores, LoRA paths,
``samplers``...). What differs is written out: Poly's first configs named models
``[endpoints.NAME]`` and set ``batch_size`` per task (a model's here), and where a key
is left out, Poly's defaults differ from poly-ray's, so they are written explicitly:
a model's context of 512 tokens, a task's repeat penalty of 1.30, no min-p, and no
token limit but the context.
"""

from __future__ import annotations

import copy
import tomllib
from typing import Any

from .imported import Imported, NotThatFormat

POLY_TABLES = ("models", "tasks", "memories", "endpoints")
POLY_CONTEXT = 512
POLY_REPEAT_PENALTY = 1.30


def parse(text: str, source: str) -> dict[str, Any]:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise NotThatFormat(f"{source} is not TOML: {e}") from None
    if not any(isinstance(data.get(t), dict) for t in POLY_TABLES):
        raise NotThatFormat(f"{source} is not a Poly config.toml: no [models.NAME], [tasks.NAME] or [memories.NAME]")
    return data


def convert(data: dict[str, Any]) -> Imported:
    config = copy.deepcopy(data)
    out = Imported(config)
    if endpoints := config.pop("endpoints", None):
        config.setdefault("models", {}).update(endpoints)
        out.notes.append(f"endpoints: Poly's first name for models: [endpoints.{next(iter(endpoints))}] is "
                         f"[models.{next(iter(endpoints))}]")
    models, tasks = config.get("models", {}), config.get("tasks", {})
    for name, model in models.items():
        if isinstance(model, dict) and "context_size" not in model:
            model["context_size"] = POLY_CONTEXT
            out.notes.append(f"models.{name}.context_size: {POLY_CONTEXT}, Poly's default (poly-ray's is 2048)")
    for name, task in tasks.items():
        if not isinstance(task, dict):
            continue
        if (batch := task.pop("batch_size", None)) is not None:
            model = models.get(task.get("model"))
            if isinstance(model, dict):
                model["batch_size"] = max(batch, model.get("batch_size", 0))
                out.notes.append(f"tasks.{name}.batch_size: a model's key here: models.{task['model']}.batch_size")
            else:
                out.unmapped.append(f"tasks.{name}.batch_size: its model {task.get('model')!r} is not configured")
        if "samplers" not in task:  # a sampler chain says all of it; otherwise Poly's defaults
            if "repeat_penalty" not in task:
                task["repeat_penalty"] = POLY_REPEAT_PENALTY
            task.setdefault("min_p", 0.0)
        if "max_tokens" not in task:
            model = models.get(task.get("model"))
            task["max_tokens"] = model.get("context_size", POLY_CONTEXT) if isinstance(model, dict) else POLY_CONTEXT
            out.notes.append(f"tasks.{name}.max_tokens: Poly had no limit but the context: {task['max_tokens']}")
    return out
