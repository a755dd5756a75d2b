"""The import path that Serve configs name: ``serve run poly_ray.app:build config=config.toml``.

The graph itself is built in ``poly_ray.serve.builder``; this module only reads
the config a Serve config points at, so deployed configs keep working whatever
moves inside the package.
"""

from __future__ import annotations

from ray.serve import Application

from . import config as config_mod
from .config import config_file
from .deploy.serve_config import config_digest
from .errors import ConfigError
from .serve.builder import build_app


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
