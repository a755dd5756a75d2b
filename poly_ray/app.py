"""The graph builder: ``serve run poly_ray.app:build config=config.toml``.

Ingress → TaskOrchestrator → one LlamaModel deployment per configured model,
and, with memories configured, a MemoryActor that the ingress and the
orchestrator both call (it embeds through the embedding models' deployments).
"""

from __future__ import annotations

import os
from importlib.resources import files
from pathlib import Path

from ray import serve
from ray.serve import Application

from . import config as config_mod
from .config import Config
from .placement import LIGHT_OPTIONS, MEMORY_OPTIONS, model_options
from .serve.ingress import Ingress
from .serve.memory import MemoryActor
from .serve.model import LlamaModel
from .serve.orchestrator import TaskOrchestrator


def default_config_path() -> Path:
    """The embedded default: config.example.toml with the Gemma 3 270M package model."""
    return Path(str(files("poly_ray").joinpath("config.example.toml")))


def build(args: dict | None = None) -> Application:
    """Application builder for ``serve run`` / ``serve build``; ``config`` names the TOML file."""
    args = args or {}
    path = args.get("config") or os.environ.get("POLY_CONFIG") or default_config_path()
    return build_app(config_mod.load(path))


def __getattr__(name: str):
    # ``serve build poly_ray.app:app`` wants an Application at an import path:
    # build it on first access from POLY_CONFIG (or the embedded default).
    if name == "app":
        return build()
    raise AttributeError(name)


def serve_config(cfg: Config, config_path: str | None = None) -> dict:
    """A ``serve deploy`` config for this graph: what ``serve build`` writes, but
    importing the builder with ``args.config`` so the cluster reads the same TOML."""
    from ray.serve._private.build_app import build_app as ray_build_app
    from ray.serve.deployment import deployment_to_schema
    from ray.serve.schema import ServeApplicationSchema, ServeDeploySchema

    built = ray_build_app(build_app(cfg), name="poly-ray")
    application = ServeApplicationSchema(
        name="poly-ray",
        route_prefix="/",
        import_path="poly_ray.app:build",
        # No path: the builder uses POLY_CONFIG or the embedded default.
        args={"config": config_path} if config_path else {},
        deployments=[deployment_to_schema(d) for d in built.deployments],
    ).model_dump(exclude_unset=True)
    deploy = {
        "proxy_location": "EveryNode",
        "http_options": {"host": cfg.host, "port": cfg.port},
        "applications": [application],
    }
    ServeDeploySchema.model_validate(deploy)
    return deploy


def build_app(cfg: Config) -> Application:
    models = {
        name: serve.deployment(LlamaModel, name=f"model-{name}", **model_options(m)).bind(
            name, m.model_dump(mode="json"), str(cfg.cache_path)
        )
        for name, m in cfg.models.items()
    }
    model_configs = {name: m.model_dump(mode="json") for name, m in cfg.models.items()}
    memory = None
    if cfg.memories:
        memory = serve.deployment(MemoryActor, name="memory", **MEMORY_OPTIONS).bind(
            {name: m.model_dump(mode="json") for name, m in cfg.memories.items()},
            model_configs,
            {m.embedding_model: models[m.embedding_model] for m in cfg.memories.values()},
            str(cfg.cache_path),
        )
    orchestrator = serve.deployment(TaskOrchestrator, name="orchestrator", **LIGHT_OPTIONS).bind(
        {name: t.model_dump(mode="json") for name, t in cfg.tasks.items()}, model_configs, models, memory,
        cfg.log_prompts,
    )
    ingress = serve.deployment(serve.ingress()(Ingress), name="ingress", **LIGHT_OPTIONS)
    return ingress.bind(orchestrator, cfg.model_dump(mode="json"), memory)
