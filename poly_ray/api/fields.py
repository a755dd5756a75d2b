"""What every family's request bodies share, named once: the strict base (an unknown
field, NaN or Infinity is a 400 naming it) and the bounds of counts that no context
reaches (a count past them is a mistake, refused before any work)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from poly_ray.errors import BadRequest

COUNT_BOUND = 1 << 20  # tokens: past any model's context
# Messages (or input items) in one request: each costs work before the prompt's length is known.
MAX_MESSAGES = 10_000


class Body(BaseModel):
    """A request body: unknown fields are refused naming the field, never ignored; NaN and
    Infinity too (they would pass range checks: every comparison with NaN is false)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


# Tokens to generate (max_tokens and its other names): at least one.
Tokens = Annotated[int, Field(ge=1, le=COUNT_BOUND)]
# A count that may be 0 (top_k, repeat_last_n, min_tokens, min_length).
Count = Annotated[int, Field(ge=0, le=COUNT_BOUND)]
# An object's metadata, stored with it: OpenAI's bounds (16 keys of at most 64 characters,
# string values of at most 512), so that a request cannot store megabytes per object.
Metadata = Annotated[dict[Annotated[str, Field(max_length=64)], Annotated[str, Field(max_length=512)]],
                     Field(max_length=16)]


class ListQuery(Body):
    """One pagination for every listing (the store's, and ``page`` over items held in one
    object): ``limit``, ``after``/``before`` (ids from a previous page), ``order``; an
    unknown cursor is a 400 naming it."""

    limit: int = Field(20, ge=1, le=100)
    after: str | None = None
    before: str | None = None
    order: Literal["asc", "desc"] = "desc"
    include: list[str] | None = None  # accepted: nothing extra to include

    def page(self) -> dict:
        """The store's ``list`` arguments."""
        return {"limit": self.limit, "after": self.after, "before": self.before, "order": self.order}


def page(items: list[dict], query: ListQuery, kind: str = "item") -> dict:
    """A list body over items held in one object (a response's input), as the store pages."""
    ordered = items if query.order == "asc" else items[::-1]
    ids = [i["id"] for i in ordered]
    for name, cursor in (("after", query.after), ("before", query.before)):
        if cursor is not None and cursor not in ids:
            raise BadRequest(f"{name}: no {kind} with id '{cursor}'")
    start = ids.index(query.after) + 1 if query.after is not None else 0
    end = ids.index(query.before) if query.before is not None else len(ids)
    ordered = ordered[start:end]
    data = ordered[:query.limit]
    return {"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None, "has_more": len(ordered) > query.limit}
