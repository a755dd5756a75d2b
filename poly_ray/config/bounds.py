"""Top-level config keys that bound what one caller may ask at a time.

Kept apart from schema.py (which mixes them into ``Config``) so that each bound
sits beside why it is there. Every one has a safe default; past it, the request
gets a 4xx (429/503 with Retry-After for work in flight) naming the key.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class Bounds(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # /v1/model/NAME/tokenization: the text's characters (413 beyond). Each token
    # comes back as an object, so the answer is some 30 times the text's size.
    max_tokenize_chars: int = Field(200_000, ge=1, le=8 << 20)
    # Recall (GET|POST /v1/memory/NAME): chunks asked for, and the query's characters.
    max_recall: int = Field(100, ge=1, le=100)
    max_recall_chars: int = Field(16_384, ge=1, le=100_000)
    # Document uploads being read, embedded or stored (synchronous ones and jobs),
    # per credential and per memory (429 beyond).
    max_uploads_per_credential: int = Field(2, ge=1, le=1000)
    max_uploads_per_memory: int = Field(4, ge=1, le=1000)
    # Background ingestion jobs (?wait=false) not yet finished, in all (429 beyond).
    max_background_jobs: int = Field(16, ge=1, le=10_000)
    # A chat WebSocket with no turn for this long is closed (code 4408, the reason says why).
    ws_idle_timeout_s: float = Field(300, gt=0, le=86_400)
    # The ingress replica takes this many requests at once; this many more wait for it
    # (Serve's queue), and beyond that a request gets 503 with Retry-After at once.
    ingress_max_ongoing: int = Field(1000, ge=1, le=100_000)
    ingress_max_queued: int = Field(256, ge=1, le=100_000)
