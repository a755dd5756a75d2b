"""Embedding vectors as clients ask for them."""

from __future__ import annotations

import math

from poly_ray.errors import BadRequest


def shorten(vector: list[float], dimensions: int, model: str) -> list[float]:
    """The first ``dimensions`` values, L2-normalised again (as OpenAI's text-embedding-3
    does): a cosine over the shortened vectors stays a dot product. Never longer."""
    if dimensions > len(vector):
        raise BadRequest(
            f"dimensions: model '{model}' embeds in {len(vector)} dimensions; ask for at most {len(vector)}"
        )
    head = vector[:dimensions]
    norm = math.sqrt(sum(x * x for x in head))
    return [x / norm for x in head] if norm else head
