"""The graph builder: ``serve run poly_ray.app:build config=config.toml``.

Ingress → TaskOrchestrator → one LlamaModel deployment per configured model,
and, with memories configured, a MemoryActor that the ingress and the
orchestrator both call (it embeds through the embedding models' deployments).
"""

from __future__ import annotations

import hashlib
import json
import os
import tomllib
from importlib.resources import files
from pathlib import Path

from ray import serve
from ray.serve import Application

from . import config as config_mod
from .config import Config
from .errors import ConfigError
from .placement import LIGHT_OPTIONS, MEMORY_OPTIONS, PLACEMENT_KEYS, model_options
from .serve.ingress import Ingress
from .serve.memory import MemoryActor
from .serve.model import LlamaModel
from .serve.orchestrator import TaskOrchestrator


def default_config_path() -> Path:
    """The embedded default: config.example.toml with the Gemma 3 270M package model."""
    return Path(str(files("poly_ray").joinpath("config.example.toml")))


def config_file(path: str | None = None) -> Path:
    """The TOML file to serve: ``path``, else POLY_CONFIG, else the embedded default."""
    return Path(path or os.environ.get("POLY_CONFIG") or default_config_path())


def config_digest(path: Path) -> str:
    """A digest of a config file's settings, leaving out the models' placement (replica
    counts, CPUs, GPUs), which a Serve config carries as deployment options."""
    data = tomllib.loads(path.read_text())
    for model in data.get("models", {}).values():
        for key in PLACEMENT_KEYS:
            model.pop(key, None)
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


def build(args: dict | None = None) -> Application:
    """Application builder for ``serve run`` / ``serve build`` / ``serve deploy``;
    ``config`` names the TOML file. ``config_digest`` (written by ``poly-ray build``)
    must match it: Serve rebuilds an application only when its arguments change,
    so the digest is how an edited config reaches the cluster, and a config that
    changed since the Serve config was written is refused rather than half applied."""
    args = args or {}
    path = config_file(args.get("config"))
    expected = args.get("config_digest")
    if expected is not None and expected != config_digest(path):
        raise ConfigError(
            f"{path} changed since this Serve config was written (config_digest {expected}, "
            f"now {config_digest(path)}): write it again with poly-ray build"
        )
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
    path = config_file(config_path)
    embedded = path == default_config_path()
    # POLY_* overrides travel with the application: the cluster's processes do not
    # have this shell's environment (they may hold secrets: keep the file private).
    overrides = {k: v for k, v in sorted(os.environ.items()) if k in config_mod.ENV_NAMES}
    application = ServeApplicationSchema(
        name="poly-ray",
        route_prefix="/",
        import_path="poly_ray.app:build",
        # No path: the embedded default. A file's absolute path: the cluster does not
        # run in this directory.
        args={**({} if embedded else {"config": str(path.resolve())}), "config_digest": config_digest(path)},
        **({"runtime_env": {"env_vars": overrides}} if overrides else {}),
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
    # The deployments' arguments leave placement out: a new replica count is then
    # a change of options only, which Serve applies by scaling, without restarting
    # the replicas that run.
    model_configs = {name: m.model_dump(mode="json", exclude=PLACEMENT_KEYS) for name, m in cfg.models.items()}
    models = {
        name: serve.deployment(LlamaModel, name=f"model-{name}", **model_options(m)).bind(
            name, model_configs[name], str(cfg.cache_path)
        )
        for name, m in cfg.models.items()
    }
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
