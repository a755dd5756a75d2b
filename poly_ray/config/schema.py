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
from .tiers import Tier

__all__ = [
    "DEFAULT_CACHE", "EMBED_BATCH", "JWT_PUBLIC_ALGORITHMS", "NAME_PATTERN", "Autoscaling", "Biaser", "Config",
    "FileStore", "LoraAdapter", "Memorization", "MemoryConfig", "ModelConfig", "PublicKey", "QdrantStore",
    "SchemaLimits", "ScopedKey", "StoreConfig", "SymmetricKey", "TaskConfig", "Tier", "default_state_dir", "parse_hf",
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
    """What a JSON schema may ask of the grammar it becomes (``grammars.Caps``): a request's
    (``schema``, ``response_format``, ``format``, ``tools``) and a task's ``biaser`` and
    ``tools``. A request over a limit gets a 400 naming the key; a task over one stops
    start-up naming it. llama.cpp's grammar parser recurses once per nested group (it
    refuses ``maxLength`` 2000 and crashes the model replica far beyond), so the grammar is
    bounded before it reaches the model."""

    max_length: int = Field(Caps.max_length, ge=1, le=100_000, description="A string's `maxLength` / `minLength`.")
    max_items: int = Field(Caps.max_items, ge=1, le=100_000, description=(
        "An array's `maxItems` / `minItems` / `prefixItems`."))
    max_repeat: int = Field(Caps.max_repeat, ge=1, le=1_000_000, description=(
        "The characters a `pattern` spells out, its repeats multiplied out."))
    max_pattern_stacks: int = Field(Caps.max_pattern_stacks, ge=1, le=10_000, description=(
        "Places a `pattern` can match at once (optional parts in a row, alternatives): llama.cpp "
        "checks the whole vocabulary once per place for every token, and more than linearly."))
    max_enum: int = Field(Caps.max_enum, ge=1, le=100_000, description=(
        "Values of one `enum`, alternatives of one `anyOf` / `oneOf`: llama.cpp tries each at once at a value's "
        "first tokens, about 2 ms per value and token on 2 cores (1,000 values: 1.7 s per token)."))
    max_depth: int = Field(Caps.max_depth, ge=1, le=1000, description="Schemas nested in schemas.")
    max_properties: int = Field(Caps.max_properties, ge=1, le=10_000, description="Properties of one object.")
    max_schema_bytes: int = Field(Caps.max_schema_bytes, ge=256, le=1 << 26, description="The schema's size as JSON.")
    max_grammar_bytes: int = Field(Caps.max_grammar_bytes, ge=1024, le=1 << 28, description=(
        "The size of the GBNF grammar the schema becomes."))
    # llama.cpp's GBNF parser recurses once per group; far past ~10,000 it crashes.
    max_grammar_nesting: int = Field(Caps.max_grammar_nesting, ge=16, le=5000, description=(
        "Groups open at once in one rule of the converted grammar."))
    timeout_s: float = Field(Caps.timeout_s, gt=0, le=600, description=(
        "Seconds a request's schema may take to convert (off the event loop)."))

    def caps(self) -> Caps:
        return Caps(**self.model_dump())


class Config(Strict, Bounds):
    """The whole file: the server's own keys at the top level, then the named tables."""

    bind_address: str = Field("127.0.0.1:8000", description='Where the HTTP server listens: `"HOST:PORT"`.')
    public: bool = Field(False, description=(
        "Let requests without credentials in (a request with wrong credentials is refused all the same). A "
        "public server with no `allowed_keys` and no JWT key lets any key in as anonymous, as OpenAI clients "
        "always send one."))
    allowed_keys: list[ScopedKey] = Field([], description="Static API keys: strings, or tables that limit a key.")
    jwt_private_key: SymmetricKey | None = Field(None, description=(
        'HS256 JWTs, checked with a shared secret: `{ symmetric = "..." }`.'))
    jwt_public_key: PublicKey | None = Field(None, description=(
        "RS256/RS384/RS512/ES256/ES384/ES512 JWTs, checked with a public key."))
    # A token with an `aud` is refused when no jwt_audience is set.
    jwt_audience: str | None = Field(None, description="When set, a token's `aud` claim must be present and match.")
    jwt_issuer: str | None = Field(None, description="When set, a token's `iss` claim must be present and match.")
    allowed_origins: list[str] = Field([], description=(
        'CORS: the origins whose pages may call (`["*"]`: any), and open a WebSocket.'))
    # Against DNS rebinding: a page's own name pointed at the server.
    allowed_hosts: list[str] = Field([], description=(
        '`Host` names served besides the bind host, `localhost` and IP addresses (`["*"]`: any); else 400 naming '
        "the key. Behind a load balancer or a Kubernetes service, list the names clients use."))
    trusted_proxies: list[str] = Field([], description=(
        "Addresses or networks of proxies whose `X-Forwarded-For` names the client, for the per-client limits "
        "of anonymous callers: the client is the last address in it that is not a trusted proxy. None by "
        "default: the header is ignored, and everyone behind a proxy shares one budget."))
    max_concurrent: int = Field(64, ge=1, le=100_000, description=(
        "Generations in flight through the server, all ingress replicas together; beyond, 503."))
    max_streams_per_credential: int = Field(16, ge=1, le=100_000, description=(
        "Generations in flight and open WebSocket chats per credential (a key, a token's subject, or an "
        "anonymous client's address), all ingress replicas together; beyond, 429."))
    max_request_bytes: int = Field(8 << 20, ge=1024, le=1 << 32, description=(
        "Largest request body or WebSocket message; beyond, 413."))
    max_upload_bytes: int = Field(64 << 20, ge=1024, le=1 << 34, description=(
        "Largest document upload to a memory (`PUT /v1/memory/NAME`); beyond, 413."))
    default_task: str | None = Field(None, description=(
        "The task or model that the simple `/generate`, `/agenerate`, `/stream` and `/embeddings` routes run "
        "(not set: the first task, else the first model)."))
    stream_task: str | None = Field(None, description=(
        "A task that `/stream` runs (its prelude, prefix, postfix and `max_tokens`). Not set: `/stream` completes the "
        "raw prompt on the default model (`default_task`'s model), bounded by its context, as the Rust server did."))
    log_prompts: bool = Field(False, description=(
        "Put each request's prompt in its log line (off: prompts stay out of logs)."))
    schema_limits: SchemaLimits = Field(SchemaLimits(), description="What a JSON schema may ask of a grammar.")
    cache_path: Path = Field(DEFAULT_CACHE, description=(
        "Where downloaded (`url`) and converted (`package`) models are kept."))
    # Each feature keeps a subfolder of its own (see state_path).
    state_dir: Path = Field(default_factory=default_state_dir, description=(
        "Durable state, one folder to back up: conversations, responses, assistants, ingestion jobs, KV "
        "snapshots."), json_schema_extra={"default_text": "`$XDG_DATA_HOME/poly-ray`, else `~/.local/share/poly-ray`"})
    models: dict[str, ModelConfig] = Field({}, description="The models, by name.")
    tasks: dict[str, TaskConfig] = Field({}, description="The tasks, by name (the name appears in URLs).")
    memories: dict[str, MemoryConfig] = Field({}, description="The memories, by name.")
    ingress: Tier = Field(Tier(), description=(
        "Replicas of the ingress (the HTTP app): more than one spreads the HTTP tier over the nodes."))
    orchestrator: Tier = Field(Tier(), description="Replicas of the task orchestrator (the tasks with a memory).")

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
        names = [k.name for k in v if k.name is not None]
        if len(set(names)) != len(names):
            # A name is the owner of the key's responses, assistants, ...: two keys would share them.
            twice = sorted({n for n in names if names.count(n) > 1})
            raise ValueError(f"the name {twice[0]!r} is given to two keys (a key's name owns its stored objects)")
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

    def model_of(self, name: str) -> ModelConfig | None:
        """The model that a task or a model ``name`` runs (None: neither)."""
        return self.models.get(self.tasks[name].model if name in self.tasks else name)

    def context_of(self, name: str) -> int | None:
        """The context size of the model that a task or a model ``name`` runs (None: neither)."""
        model = self.model_of(name)
        return model.context_size if model is not None else None

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
