"""What every family's request bodies share, named once: the strict base (an unknown
field, NaN or Infinity is a 400 naming it) and the bounds of counts that no context
reaches (a count past them is a mistake, refused before any work)."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

COUNT_BOUND = 1 << 20  # tokens: past any model's context


class Body(BaseModel):
    """A request body: unknown fields are refused naming the field, never ignored; NaN and
    Infinity too (they would pass range checks: every comparison with NaN is false)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


# Tokens to generate (max_tokens and its other names): at least one.
Tokens = Annotated[int, Field(ge=1, le=COUNT_BOUND)]
# A count that may be 0 (top_k, repeat_last_n, min_tokens, min_length).
Count = Annotated[int, Field(ge=0, le=COUNT_BOUND)]
