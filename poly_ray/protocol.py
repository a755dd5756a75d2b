"""Wire models of poly-ray's native HTTP API (Poly's paths and shapes)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

_UINT32 = 1 << 32


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CompletionParams(_Body):
    """A prompt and the sampling settings a request may override (within the task's limits)."""

    prompt: str = Field(max_length=1_000_000)
    max_tokens: int | None = Field(None, ge=1, le=1 << 20)
    temperature: float | None = Field(None, ge=0, le=100)
    top_k: int | None = Field(None, ge=0, le=1 << 20)
    top_p: float | None = Field(None, gt=0, le=1)
    seed: int | None = Field(None, ge=0, lt=_UINT32)
    stop: list[str] | str | None = None
    ignore_eos: bool | None = None

    def overrides(self) -> dict:
        return self.model_dump(exclude={"prompt"}, exclude_none=True)


class PromptBody(_Body):
    prompt: str = Field(max_length=1_000_000)


class EmbeddingBody(_Body):
    prompt: str | list[str] = Field(min_length=1)
