"""The served graph the benchmarks start: the example config's Gemma alone.

Its memory and the embedding model behind it are left out (with the tasks that
recall from it), so the graph holds one model replica and the benchmark's CPU
goes to that model.
"""

from __future__ import annotations


def gemma_only(**model_updates):
    from poly_ray import config as config_mod
    from poly_ray.config import default_config_path

    cfg = config_mod.load(default_config_path(), env={})
    model = cfg.models["gemma"].model_copy(update=model_updates)
    tasks = {name: t for name, t in cfg.tasks.items() if t.model == "gemma" and t.memorization is None}
    return cfg.model_copy(update={"models": {"gemma": model}, "memories": {}, "tasks": tasks, "public": True}), model
