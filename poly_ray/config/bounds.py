"""Top-level config keys that bound what one caller may ask at a time.

Kept apart from schema.py (which mixes them into ``Config``) so that each bound
sits beside why it is there. Every one has a safe default; past it, the request
gets a 4xx (429/503 with Retry-After for work in flight) naming the key.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class Bounds(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # Each token comes back as an object, so the answer is some 30 times the text's size.
    max_tokenize_chars: int = Field(200_000, ge=1, le=8 << 20, description=(
        "Characters of one `/v1/model/NAME/tokenization` text; beyond, 413."))
    # Checked in the ingress before any call: the model's own caps (max_embedding_inputs and
    # max_embedding_tokens) apply only once the request has crossed Ray.
    max_embedding_chars: int = Field(1_000_000, ge=1, le=64 << 20, description=(
        "Characters of one embedding request's texts in all (every embedding route); beyond, 413."))
    max_embeddings_per_credential: int = Field(4, ge=1, le=10_000, description=(
        "Embedding requests in flight per credential in each ingress replica (every embedding route); beyond, 429 "
        "with Retry-After."))
    max_recall: int = Field(100, ge=1, le=100, description=(
        "Chunks one recall (`GET|POST /v1/memory/NAME`) may ask for (`n`); beyond, 400."))
    max_recall_chars: int = Field(16_384, ge=1, le=100_000, description="Characters of a recall's query; beyond, 413.")
    # Each memory named is one recall per run, over the run's last message.
    max_file_search_memories: int = Field(4, ge=1, le=100, description=(
        "Memories an assistant, thread or run may name for file_search (`tool_resources.file_search."
        "vector_store_ids`); beyond, 400."))
    max_uploads_per_credential: int = Field(2, ge=1, le=1000, description=(
        "Document uploads in flight (being read, embedded or stored; jobs included) per credential; beyond, 429 "
        "with Retry-After."))
    max_uploads_per_memory: int = Field(4, ge=1, le=1000, description=(
        "Document uploads in flight per memory; beyond, 429 with Retry-After."))
    max_background_jobs: int = Field(16, ge=1, le=10_000, description=(
        "Background ingestion jobs (`?wait=false`) not yet finished, in all; beyond, 429 with Retry-After."))
    # A slow body holds one of the ingress's places (ingress_max_ongoing) while it trickles in.
    body_timeout_s: float = Field(120, gt=0, le=3600, description=(
        "Seconds a client may take to send a request body, an upload's included; beyond, 408."))
    ws_idle_timeout_s: float = Field(300, gt=0, le=86_400, description=(
        "A chat WebSocket with no message for this long is closed, code 4408 with the reason (JSON sessions get "
        "an `idle_timeout` error frame first)."))
    # Past both, requests are refused at once instead of piling up in the ingress's memory.
    ingress_max_ongoing: int = Field(1000, ge=1, le=100_000, description="Requests one ingress replica takes at once.")
    ingress_max_queued: int = Field(256, ge=1, le=100_000, description=(
        "Requests waiting for an ingress replica in Serve's queue; beyond, Serve's proxy answers 503 with "
        "`Retry-After: 1` at once."))
    max_stored_objects: int = Field(100_000, ge=1, le=1 << 40, description=(
        "Objects the stateful APIs keep per credential (responses with their input, conversations and items, "
        "assistants, threads, messages, runs); beyond, 403 `storage_quota_exceeded` until some are deleted."))
    max_stored_bytes: int = Field(1 << 30, ge=1 << 16, le=1 << 50, description=(
        "Bytes of stored objects (as JSON) kept per credential; beyond, 403 `storage_quota_exceeded`."))
