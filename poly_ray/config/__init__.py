"""The TOML configuration: its schema (``schema``), how a file becomes a checked
``Config`` (``loading``), Poly's sampler-chain syntax and the JWT public keys."""

from .loading import ENV_KEYS, ENV_NAMES, config_file, default_config_path, is_gguf, load, package_module, validate
from .schema import (
    DEFAULT_CACHE,
    JWT_PUBLIC_ALGORITHMS,
    NAME_PATTERN,
    Autoscaling,
    Biaser,
    Config,
    FileStore,
    LoraAdapter,
    Memorization,
    MemoryConfig,
    ModelConfig,
    PublicKey,
    QdrantStore,
    SchemaLimits,
    ScopedKey,
    StoreConfig,
    SymmetricKey,
    TaskConfig,
    default_state_dir,
    parse_hf,
    state_path,
)

__all__ = [
    "DEFAULT_CACHE", "ENV_KEYS", "ENV_NAMES", "JWT_PUBLIC_ALGORITHMS", "NAME_PATTERN", "Autoscaling", "Biaser",
    "Config", "FileStore", "LoraAdapter", "Memorization", "MemoryConfig", "ModelConfig", "PublicKey", "QdrantStore", "SchemaLimits", "ScopedKey",
    "StoreConfig", "SymmetricKey", "TaskConfig", "config_file", "default_state_dir", "parse_hf", "state_path", "default_config_path", "is_gguf", "load",
    "package_module", "validate",
]
