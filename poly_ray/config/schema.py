"""The TOML configuration's schema: the top level (``Config``) and ``schema_limits``
here, each named table in a module of its own (``models``, ``tasks``, ``memories``,
``credentials``), re-exported from here.

Key names follow Poly's config (``bind_address``, ``[models.NAME]``,
``[tasks.NAME]``, ...). Every problem is reported as a ``ConfigError`` whose
message starts with the dotted TOML key, e.g. ``tasks.chat.model: ...``, so a
server refuses to start with a message that says what to fix. Every key has a
``Field(description=...)``: ``poly-ray docs`` writes the configuration reference
from them (config/docs.py).
"""

from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path

from pydantic import Field, field_validator

from poly_ray.grammars import Caps

from .base import Strict
from .bounds import Bounds
from .credentials import JWT_PUBLIC_ALGORITHMS, PublicKey, ScopedKey, SymmetricKey
from .memories import EMBED_BATCH, FileStore, MemoryConfig, QdrantStore, StoreConfig
from .models import Autoscaling, LoraAdapter, ModelConfig, parse_hf
from .tasks import Biaser, Memorization, TaskConfig

__all__ = [
    "DEFAULT_CACHE", "EMBED_BATCH", "JWT_PUBLIC_ALGORITHMS", "NAME_PATTERN", "Autoscaling", "Biaser", "Config",
    "FileStore", "LoraAdapter", "Memorization", "MemoryConfig", "ModelConfig", "PublicKey", "QdrantStore",
    "SchemaLimits", "ScopedKey", "StoreConfig", "SymmetricKey", "TaskConfig", "default_state_dir", "parse_hf",
    "state_path",
]

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
DEFAULT_CACHE = Path("~/.cache/poly-ray")


def default_state_dir() -> Path:
    """Where durable state lives unless ``state_dir`` says otherwise: the user's data
    directory (XDG), so one folder holds everything worth backing up."""
    base = os.environ.get("XDG_DATA_HOME") or "~/.local/share"
    return Path(base) / "poly-ray"

class SchemaLimits(Strict):
    """What a request's JSON schema may ask of a grammar (see ``grammars.Caps``); over a
    limit, the request gets a 400 naming it."""

    max_length: int = Field(Caps.max_length, ge=1, le=100_000)
    max_items: int = Field(Caps.max_items, ge=1, le=100_000)
    max_repeat: int = Field(Caps.max_repeat, ge=1, le=1_000_000)
    max_depth: int = Field(Caps.max_depth, ge=1, le=1000)
    max_properties: int = Field(Caps.max_properties, ge=1, le=10_000)
    max_schema_bytes: int = Field(Caps.max_schema_bytes, ge=256, le=1 << 26)
    max_grammar_bytes: int = Field(Caps.max_grammar_bytes, ge=1024, le=1 << 28)
    # llama.cpp's GBNF parser recurses once per group; far past ~10,000 it crashes.
    max_grammar_nesting: int = Field(Caps.max_grammar_nesting, ge=16, le=5000)
    timeout_s: float = Field(Caps.timeout_s, gt=0, le=600)

    def caps(self) -> Caps:
        return Caps(**self.model_dump())


class Config(Strict, Bounds):
    bind_address: str = "127.0.0.1:8000"
    public: bool = False
    allowed_keys: list[ScopedKey] = []
    jwt_private_key: SymmetricKey | None = None
    jwt_public_key: PublicKey | None = None
    # When set, a token's `aud` / `iss` claim must match (and be present).
    jwt_audience: str | None = None
    jwt_issuer: str | None = None
    allowed_origins: list[str] = []
    # Host names served besides the bind host, loopback and IP literals (DNS rebinding; "*": any).
    allowed_hosts: list[str] = []
    # Proxies (addresses or networks) whose X-Forwarded-For names the client, for the
    # per-client limits of anonymous callers; none by default: the header is ignored.
    trusted_proxies: list[str] = []
    max_concurrent: int = Field(64, ge=1, le=100_000)
    # Generations in flight and open WebSocket chats per credential (a key, a
    # token's subject, or an anonymous client's address); beyond, 429.
    max_streams_per_credential: int = Field(16, ge=1, le=100_000)
    # Largest request body accepted; larger ones get 413.
    max_request_bytes: int = Field(8 << 20, ge=1024, le=1 << 32)
    # Largest document upload (PUT /v1/memory/NAME); larger ones get 413.
    max_upload_bytes: int = Field(64 << 20, ge=1024, le=1 << 34)
    # What the simple /generate, /agenerate, /stream and /embeddings routes run:
    # a task or a model name (default: the first task, else the first model).
    default_task: str | None = None
    # Put each request's prompt in its log line (off: prompts are private).
    log_prompts: bool = False
    schema_limits: SchemaLimits = SchemaLimits()
    cache_path: Path = DEFAULT_CACHE
    # Durable state (conversations, responses, assistants, ingestion jobs, KV snapshots):
    # one folder to back up. Each feature keeps a subfolder of its own (see state_path).
    state_dir: Path = Field(default_factory=default_state_dir)
    models: dict[str, ModelConfig] = {}
    tasks: dict[str, TaskConfig] = {}
    memories: dict[str, MemoryConfig] = {}

    @field_validator("bind_address")
    @classmethod
    def _bind(cls, v):
        host, sep, port = v.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError('must look like "HOST:PORT", e.g. "127.0.0.1:8000"')
        return v

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies(cls, v):
        for p in v:
            try:
                ipaddress.ip_network(p, strict=False)
            except ValueError:
                raise ValueError(f"{p!r} is not an IP address or network (e.g. 10.0.0.0/8)") from None
        return v

    @field_validator("allowed_keys")
    @classmethod
    def _keys(cls, v):
        if len({k.key for k in v}) != len(v):
            raise ValueError("a key is listed twice")
        return v

    @field_validator("models", "tasks", "memories")
    @classmethod
    def _names(cls, v):
        for name in v:
            if not re.match(NAME_PATTERN, name):
                raise ValueError(f"name {name!r} must match {NAME_PATTERN} (it appears in URLs)")
        return v

    @property
    def default_target(self) -> tuple[str, str] | None:
        """("task" | "model", name) that the simple APIs run."""
        name = self.default_task
        if name is None:
            name = next(iter(self.tasks), None) or next(iter(self.models), None)
        if name is None:
            return None
        return ("task", name) if name in self.tasks else ("model", name)

    @property
    def host(self) -> str:
        return self.bind_address.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.bind_address.rpartition(":")[2])


def state_path(config: "Config", *parts: str) -> Path:
    """A path under ``state_dir`` (created), e.g. ``state_path(cfg, "kv", "gemma")``."""
    path = config.state_dir.expanduser().joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path
