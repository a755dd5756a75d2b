"""``[models.NAME]``: where a GGUF comes from, how a replica runs it, and where Ray
places its replicas."""

from __future__ import annotations

import os
import re
from pathlib import Path

from pydantic import Field, field_validator, model_validator

from .base import Strict


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


class LoraAdapter(Strict):
    """A GGUF LoRA adapter applied to the model's weights (Poly's ``lora_adapters``)."""

    path: Path
    scale: float = Field(1.0, ge=-100, le=100, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _plain(cls, data):
        if isinstance(data, str):  # Poly's form: a list of paths
            return {"path": data}
        return data


class ModelConfig(Strict):
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
