"""Embedding vectors as clients ask for them."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

from poly_ray.config import Config
from poly_ray.errors import BadRequest, PayloadTooLarge, TooMany


class EmbeddingPlaces:
    """Embedding requests in flight per credential, in this ingress replica: a model embeds
    one request at a time behind a short queue, which one caller could otherwise keep full
    (and the memories' recall and ingestion, which embed there too, would get 503s)."""

    def __init__(self, per_credential: int):
        self.per_credential = per_credential
        self.held: Counter[str | None] = Counter()

    @contextmanager
    def place(self, credential: str | None) -> Iterator[None]:
        if self.held[credential] >= self.per_credential:
            raise TooMany(f"these credentials have {self.held[credential]} embedding requests in flight; the limit "
                          f"(max_embeddings_per_credential) is {self.per_credential}")
        self.held[credential] += 1
        try:
            yield
        finally:
            self.held[credential] -= 1
            if not self.held[credential]:
                del self.held[credential]


def admitted(config: Config, model: str, texts: list[str]) -> list[str]:
    """``texts``, if one request may embed them on ``model``; else its 4xx, naming the key.

    Checked at the door, before any call: the model replica holds the same input cap,
    but an over-long list would first cross Ray (and, for usage, once was one call per text).
    """
    if (m := config.models.get(model)) is not None and len(texts) > m.max_embedding_inputs:
        raise BadRequest(f"{len(texts)} inputs; model '{model}' embeds at most {m.max_embedding_inputs} per request "
                         f"(models.{model}.max_embedding_inputs)")
    if (chars := sum(map(len, texts))) > config.max_embedding_chars:
        raise PayloadTooLarge(f"the inputs are {chars} characters, over the limit (max_embedding_chars) of "
                              f"{config.max_embedding_chars}")
    return texts


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
