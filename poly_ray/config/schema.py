"""The TOML configuration's schema: one pydantic model per section.

Key names follow Poly's config (``bind_address``, ``[models.NAME]``,
``[tasks.NAME]``, ...). Every problem is reported as a ``ConfigError`` whose
message starts with the dotted TOML key, e.g. ``tasks.chat.model: ...``, so a
server refuses to start with a message that says what to fix.
"""

from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from poly_ray import tools as tool_calls
from poly_ray.chat_template import check as check_template
from poly_ray.errors import ConfigError
from poly_ray.grammars import Caps, from_schema

from . import sampler_chain
from .bounds import Bounds

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
DEFAULT_CACHE = Path("~/.cache/poly-ray")


def parse_hf(spec: str) -> tuple[str, str | None, str]:
    """A Hugging Face model reference: ``(repo_id, revision, filename)``.

    ``author/repo/file.gguf`` is the file on the default branch; with four or more
    parts, as the Go llm package writes them (``hf:author/repo/REVISION/file.gguf``,
    the ``hf:`` optional), the third is the revision (a branch, tag or commit) and
    the rest the file's path in the repository. ValueError says what is wrong."""
    ref = spec.removeprefix("hf:").strip("/")
    parts = ref.split("/")
    if len(parts) < 3 or not all(parts):
        raise ValueError('must look like "author/repo/file.gguf" or "hf:author/repo/REVISION/file.gguf"')
    if len(parts) == 3:
        return f"{parts[0]}/{parts[1]}", None, parts[2]
    return f"{parts[0]}/{parts[1]}", parts[2], "/".join(parts[3:])


def default_state_dir() -> Path:
    """Where durable state lives unless ``state_dir`` says otherwise: the user's data
    directory (XDG), so one folder holds everything worth backing up."""
    base = os.environ.get("XDG_DATA_HOME") or "~/.local/share"
    return Path(base) / "poly-ray"

# Chunks a memory embeds per call to its model (memory.memory): its uploads must fit
# the model's max_embedding_tokens.
EMBED_BATCH = 32


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Autoscaling(_Strict):
    """Ray Serve autoscaling for one model deployment."""

    min_replicas: int = Field(1, ge=0)
    max_replicas: int = Field(1, ge=1)
    initial_replicas: int | None = Field(None, ge=0)
    target_ongoing_requests: float = Field(2.0, gt=0)
    upscale_delay_s: float = Field(30.0, ge=0)
    downscale_delay_s: float = Field(600.0, ge=0)
    # The window over which Serve averages ongoing requests before deciding (Ray
    # wants it above its 10 s metrics interval).
    look_back_period_s: float = Field(30.0, gt=10)

    @model_validator(mode="after")
    def _bounds(self):
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas ({self.min_replicas}) is above max_replicas ({self.max_replicas})")
        return self


class LoraAdapter(_Strict):
    """A GGUF LoRA adapter applied to the model's weights (Poly's ``lora_adapters``)."""

    path: Path
    scale: float = Field(1.0, ge=-100, le=100, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _plain(cls, data):
        if isinstance(data, str):  # Poly's form: a list of paths
            return {"path": data}
        return data


class ModelConfig(_Strict):
    # Exactly one source (model_path may have a url to download it from when the file is missing, as in Poly).
    model_path: Path | None = None
    package: str | None = None
    package_file: str | None = None
    url: str | None = None
    sha256: str | None = Field(None, pattern=r"^[0-9a-fA-F]{64}$")
    hf: str | None = None
    # Accepted for Poly compatibility; a GGUF file names its own architecture.
    architecture: str | None = None
    lora_adapters: list[LoraAdapter] = []

    # Tokens of context per slot; a replica decodes `slots` sequences together.
    context_size: int = Field(2048, ge=16, le=1 << 20)
    slots: int = Field(4, ge=1, le=256)
    threads_per_session: int = Field(default_factory=lambda: min(os.cpu_count() or 1, 8), ge=1, le=256)
    batch_size: int = Field(512, ge=1, le=1 << 16)
    use_gpu: bool = False
    gpu_layers: int | None = Field(None, ge=-1)
    gpus: float = Field(0.0, ge=0)
    cpus: float = Field(1.0, ge=0)
    replicas: int | None = Field(None, ge=1)
    autoscaling: Autoscaling | None = None
    max_queued_requests: int = Field(16, ge=0, le=100_000)
    # Whether the model embeds (the embedding routes, a memory's model); per request at
    # most this many texts and tokens in all (a memory embeds 32 chunks a call).
    embeddings: bool = True
    max_embedding_inputs: int = Field(256, ge=1, le=1_000_000)
    max_embedding_tokens: int = Field(65536, ge=16, le=1 << 26)
    # Streamed text is sent at most this often (the first chunk at once): fewer,
    # larger messages leave more CPU to the model. 0 sends every token alone.
    stream_interval_ms: float = Field(100.0, ge=0, le=10_000)
    # Bytes of durable KV snapshots (`/stream` cache ids, task preludes) kept under
    # state_dir/kv/<model>, least recently used evicted; 0 turns them off.
    kv_snapshot_bytes: int = Field(2 << 30, ge=0, le=1 << 50)

    @field_validator("url")
    @classmethod
    def _url(cls, v):
        if v is not None and not re.match(r"^(https?|file)://", v):
            raise ValueError("must start with http://, https:// or file://")
        return v

    @field_validator("hf")
    @classmethod
    def _hf(cls, v):
        if v is not None:
            parse_hf(v)
        return v

    @field_validator("gpus")
    @classmethod
    def _gpus(cls, v):
        if v > 1 and v != int(v):
            raise ValueError("a share above 1 GPU must be a whole number (Ray places fractions on one GPU)")
        return v

    @model_validator(mode="after")
    def _one_source(self):
        sources = [k for k in ("model_path", "package", "url", "hf") if getattr(self, k) is not None]
        if sources == ["model_path", "url"]:
            sources = ["model_path"]  # Poly's fallback: the url is downloaded to model_path when it is missing
        if len(sources) != 1:
            found = ", ".join(sources) if sources else "none"
            raise ValueError(f"set exactly one of model_path, package, url, hf, or model_path with a url to "
                             f"download it from (found: {found})")
        if self.sha256 and not (self.url or self.hf):
            raise ValueError("sha256 only applies to a url or hf source")
        if self.package_file and not self.package:
            raise ValueError("package_file only applies to a package source")
        if self.replicas is not None and self.autoscaling is not None:
            raise ValueError("set replicas or autoscaling, not both")
        return self

    @property
    def source(self) -> str:
        return next(k for k in ("model_path", "package", "url", "hf") if getattr(self, k) is not None)

    @property
    def n_gpu_layers(self) -> int:
        """Layers llama.cpp offloads: all of them with use_gpu unless gpu_layers says otherwise."""
        if not self.use_gpu:
            return 0
        return -1 if self.gpu_layers is None else self.gpu_layers


class Biaser(_Strict):
    """Output that follows a JSON schema: inline, or from a file (relative to the config)."""

    json_schema: dict[str, Any] | None = None
    json_schema_file: Path | None = None

    @model_validator(mode="after")
    def _one(self):
        if (self.json_schema is None) == (self.json_schema_file is None):
            raise ValueError("set exactly one of json_schema, json_schema_file")
        return self


class Memorization(_Strict):
    """A task that recalls from a memory: the ``retrieve`` best chunks go before
    the prefix of every turn; with ``store_prompts`` the user's prompts are stored."""

    memory: str
    retrieve: int = Field(3, ge=0, le=100)
    store_prompts: bool = False


class TaskConfig(_Strict):
    model: str
    prelude: str = ""
    prefix: str = ""
    postfix: str = ""
    stop_sequences: list[str] = []
    private_tokens: list[str] = []
    max_tokens: int = Field(256, ge=1, le=1 << 20)
    temperature: float = Field(0.8, ge=0, le=100)
    top_k: int = Field(40, ge=0, le=1 << 20)
    top_p: float = Field(0.95, gt=0, le=1)
    min_p: float = Field(0.05, ge=0, le=1)
    repeat_penalty: float = Field(1.1, gt=0, le=100)
    repetition_penalty_last_n: int = Field(64, ge=0, le=1 << 20)
    frequency_penalty: float = Field(0.0, ge=-2, le=2)
    presence_penalty: float = Field(0.0, ge=-2, le=2)
    mirostat: Literal[0, 1, 2] = 0
    mirostat_tau: float = Field(5.0, gt=0, le=100)
    mirostat_eta: float = Field(0.1, gt=0, le=1)
    # Mirostat 1's candidates for its estimate (m) and the vocabulary size in its formula
    # (Poly's configs give n_vocab; by default, the model's own).
    mirostat_m: int = Field(100, ge=1, le=1 << 20)
    mirostat_n_vocab: int | None = Field(None, ge=1, le=1 << 24)
    typical_p: float = Field(1.0, gt=0, le=1)  # locally typical sampling (1: off)
    min_keep: int = Field(1, ge=1, le=1 << 20)  # tokens top-k, top-p, min-p and typical always keep
    seed: int | None = Field(None, ge=0, lt=1 << 32)
    biaser: Biaser | None = None
    # With a biaser: the free answer is generated (not returned), this is fed,
    # then the biased answer is generated and returned.
    bias_prompt: str | None = None
    memorization: Memorization | None = None
    # How message lists (OpenAI/Ollama chat) are written for the model: a Jinja
    # chat template (Hugging Face style). Without one: the model's GGUF template
    # when it has one, else prefix/postfix around each user message.
    chat_template: str | None = None
    # A chat session whose next turn does not fit the context: end the turn with
    # context_full ("error"), or keep the prelude and drop the oldest turns.
    context_overflow: Literal["error", "drop_oldest"] = "error"
    # Tools (OpenAI's shape) offered when a chat request brings none, and how the
    # model may use them (OpenAI's tool_choice; default auto), so a task can be an agent step.
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None

    @model_validator(mode="before")
    @classmethod
    def _samplers(cls, data):
        """Poly's sampler chain becomes the standard keys (which it then owns)."""
        if not isinstance(data, dict) or "samplers" not in data:
            return data
        chains = data["samplers"]
        if isinstance(chains, str):
            chains = [chains]
        if not isinstance(chains, list) or not all(isinstance(c, str) for c in chains):
            raise ValueError("samplers must be a list of strings")
        values = sampler_chain.parse(chains)
        both = sorted(set(values) & set(data) - {"samplers"})
        if both:
            raise ValueError(f"samplers sets {', '.join(both)}: remove the separate key(s) or the chain")
        return {**{k: v for k, v in data.items() if k != "samplers"}, **values}

    @model_validator(mode="after")
    def _combinations(self):
        truncating = self.top_k > 0 or self.top_p < 1 or self.min_p > 0 or self.typical_p < 1
        if self.mirostat and {"top_k", "top_p", "min_p", "typical_p"} & self.model_fields_set and truncating:
            raise ValueError("mirostat replaces top_k, top_p, min_p and typical_p: set one or the other")
        if self.bias_prompt is not None and self.biaser is None:
            raise ValueError("bias_prompt needs a biaser")
        if any(not t for t in self.private_tokens):
            raise ValueError("private_tokens must not be empty strings")
        if self.chat_template is not None:
            try:
                check_template(self.chat_template)
            except ConfigError as e:
                raise ValueError(str(e)) from None
        # The tools are checked with the whole config, against its schema_limits (loading.validate).
        return self

    # The grammars take the config's schema_limits as an argument, never from the task:
    # each deployment validates its tasks on its own, and all of them must hold the
    # biaser and the tools to the same, configured caps (Config.schema_limits.caps()).
    def tool_plan(self, caps: Caps) -> tool_calls.Plan:
        """The task's own tools and tool_choice, their schemas held to ``caps``."""
        return tool_calls.plan(self.tools, self.tool_choice, caps=caps)

    def biaser_grammar(self, caps: Caps) -> str | None:
        """The task's biaser as a grammar held to ``caps`` (its schema file is read at start-up)."""
        return from_schema(self.biaser.json_schema, "biaser.json_schema", caps) if self.biaser else None

    @field_validator("stop_sequences")
    @classmethod
    def _stops(cls, v):
        if any(s == "" for s in v):
            raise ValueError("stop sequences must not be empty strings")
        return v


class FileStore(_Strict):
    path: Path


class QdrantStore(_Strict):
    url: str = Field(pattern=r"^https?://")
    collection: str = Field(min_length=1)
    api_key: str | None = None


class StoreConfig(_Strict):
    """Exactly one of: the embedded store on disk (``file``, or Poly's ``hora``
    spelling), or a collection on a Qdrant server (``qdrant``)."""

    file: FileStore | None = None
    hora: FileStore | None = None
    qdrant: QdrantStore | None = None

    @model_validator(mode="after")
    def _one(self):
        if sum(x is not None for x in (self.file, self.hora, self.qdrant)) != 1:
            raise ValueError("set exactly one of file = { path = ... }, qdrant = { url = ..., collection = ... }")
        return self

    @property
    def path(self) -> Path | None:
        local = self.file or self.hora
        return local.path if local else None


# Replaced by a space before embedding: tabs and returns, and runs of 3+ of the
# same separator character (rules, dot leaders). Poly's defaults also removed
# ". " and " | ", which took the full stops and table cells out of recalled text.
_PRE_FILTER = [r"[\r\t]", r"([._|=-])\1{2,}"]


class MemoryConfig(_Strict):
    store: StoreConfig
    dimensions: int = Field(ge=1, le=65536)
    embedding_model: str
    chunk_max_tokens: int = Field(255, ge=8, le=1 << 16)
    # Tried in order: a piece too long for one is cut at the next (Poly's default is [" "]).
    chunk_separators: list[str] = ["\n\n", "\n", ". ", " "]
    chunk_overlap: int = Field(0, ge=0)
    pre_filter: list[str] = _PRE_FILTER
    post_filter: list[str] = []
    # Retrieval: hybrid (dense + BM25, fused), dense only, or keyword (BM25) only.
    search: Literal["hybrid", "dense", "keyword"] = "hybrid"
    # DBSF beat RRF in bench/memory.py (recall@3 0.895 against 0.816 with MiniLM).
    fusion: Literal["rrf", "dbsf"] = "dbsf"
    dense_weight: float = Field(1.0, ge=0, le=100)  # RRF only
    keyword_weight: float = Field(1.0, ge=0, le=100)
    # Some embedding models want their inputs marked (e5: "query: ", "passage: ").
    query_prefix: str = ""
    document_prefix: str = ""

    @field_validator("pre_filter")
    @classmethod
    def _regexes(cls, v):
        for pattern in v:
            try:
                re.compile(pattern)
            except re.error as e:
                raise ValueError(f"{pattern!r} is not a regular expression: {e}") from None
        return v

    @field_validator("chunk_separators", "post_filter")
    @classmethod
    def _non_empty(cls, v):
        if any(s == "" for s in v):
            raise ValueError("entries must not be empty strings")
        return v

    @model_validator(mode="after")
    def _overlap(self):
        if self.chunk_overlap >= self.chunk_max_tokens:
            raise ValueError(f"chunk_overlap ({self.chunk_overlap}) must be below chunk_max_tokens ({self.chunk_max_tokens})")
        return self


class SymmetricKey(_Strict):
    """Poly's ``jwt_private_key``: the shared secret of HS256 tokens."""

    symmetric: str = Field(repr=False)  # kept out of logs and tracebacks

    @field_validator("symmetric")
    @classmethod
    def _long_enough(cls, v):
        # HS256's secret must be as long as its hash (RFC 7518 3.2): a short one can be guessed offline.
        if len(v.encode()) < 32:
            raise ValueError(f"is {len(v.encode())} bytes; HS256 needs at least 32 (poly-ray token --new-secret makes one)")
        return v


JWT_PUBLIC_ALGORITHMS = ("RS256", "RS384", "RS512", "ES256", "ES384", "ES512")


class PublicKey(_Strict):
    """``jwt_public_key``: verifies tokens signed with a private key the server never sees.

    The files are read at start-up, so the config carries the key itself (``pem`` or
    ``jwks``) to every ingress replica."""

    algorithm: Literal[JWT_PUBLIC_ALGORITHMS]
    pem_file: Path | None = None
    jwks_file: Path | None = None
    pem: str | None = None
    jwks: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _one(self):
        given = [k for k in ("pem_file", "jwks_file", "pem", "jwks") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"set exactly one of pem_file, jwks_file, pem, jwks (found: {', '.join(given) or 'none'})")
        return self


class ScopedKey(_Strict):
    """An ``allowed_keys`` entry: a string, or a table that limits the key to some
    tasks / models / memories (no list: no limit; once one is given, a list left out
    grants nothing)."""

    key: str = Field(min_length=1, repr=False)  # kept out of logs and tracebacks
    # Names the key in logs and per-credential limits (the key itself is never logged).
    name: str | None = None
    tasks: list[str] | None = None
    models: list[str] | None = None
    memories: list[str] | None = None  # recall, store and forget
    memories_read: list[str] | None = None  # recall and listings only

    @model_validator(mode="before")
    @classmethod
    def _plain(cls, data):
        if isinstance(data, str):
            return {"key": data}
        if not isinstance(data, dict | cls):
            raise ValueError('must be a key (a string) or a table { key = "...", tasks = [...], ... }')
        return data


class SchemaLimits(_Strict):
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


class Config(_Strict, Bounds):
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
