"""The bodies of llm-api's /generate, /agenerate, /embeddings and the Rust llm server's /stream."""


from __future__ import annotations

from typing import Annotated

from pydantic import Field, field_validator

from poly_ray.api.fields import Body, Count, Tokens

from .params import Params


class LlmApiBody(Body):
    prompt: str = Field(max_length=1_000_000)
    params: Params | None = None

    def overrides(self) -> dict:
        return self.params.overrides() if self.params else {}


class TextBody(Body):
    text: str = Field(max_length=1_000_000)


# What /stream generates when the body has no num_predict, as the Rust server did.
STREAM_NUM_PREDICT = 32


class StreamBody(Body):
    prompt: str = Field(max_length=1_000_000)
    num_predict: Tokens | None = None
    top_k: Count | None = None
    top_p: float | None = Field(None, gt=0, le=1)
    repeat_penalty: float | None = Field(None, gt=0, le=100)
    temp: float | None = Field(None, ge=0, le=100)
    n_batch: int | None = Field(None, ge=1, le=1 << 16)  # the model's batch size is set in its config
    # The Rust server's docs give an integer ("cache": 42); a name works too. Prompt
    # state is reused by prefix on the replica whatever the id (see docs/performance.md, durable prompt state).
    cache: Annotated[int, Field(ge=0, lt=1 << 63)] | Annotated[str, Field(min_length=1, max_length=256)] | None = None

    @field_validator("cache", mode="before")
    @classmethod
    def _id(cls, v):
        if isinstance(v, bool | float):  # not a count for the lax int
            raise ValueError("must be an integer or a string")
        return None if v == 0 else v  # the Rust server's default: 0 means no caching

    def overrides(self) -> dict:
        o = {"max_tokens": self.num_predict, "top_k": self.top_k, "top_p": self.top_p,
             "repeat_penalty": self.repeat_penalty, "temperature": self.temp}
        return {k: v for k, v in o.items() if v is not None}
