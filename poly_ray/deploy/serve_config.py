"""What ``poly-ray build`` writes: the ``serve deploy`` config of a graph, and the
digest that ties it to the TOML file it was written from."""

from __future__ import annotations

import hashlib
import json
import os
import tomllib
from pathlib import Path

from poly_ray import config as config_mod
from poly_ray.config import Config, config_file, default_config_path
from poly_ray.serve.builder import build_app
from poly_ray.serve.options import PLACEMENT_KEYS


def config_digest(path: Path) -> str:
    """A digest of a config file's settings, leaving out the models' placement (replica
    counts, CPUs, GPUs), which a Serve config carries as deployment options."""
    data = tomllib.loads(path.read_text())
    for model in data.get("models", {}).values():
        for key in PLACEMENT_KEYS:
            model.pop(key, None)
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


# The settings that are never written into a Serve config (see serve_config).
SECRET_ENV = ("POLY_ALLOWED_KEYS", "POLY_JWT_PRIVATE_KEY")


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
    # have this shell's environment. Secrets do not: a Serve config is read by anyone
    # who can read the cluster's state; they come from the nodes' environment instead.
    overrides = {k: v for k, v in sorted(os.environ.items()) if k in config_mod.ENV_NAMES and k not in SECRET_ENV}
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
