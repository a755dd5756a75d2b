"""Durable server-side state for the stateful APIs (Responses, Conversations,
Assistants): one SQLite file under ``state_dir``, every object owned by a credential.

Ray-free on purpose: serve/ wraps one Store in a single deployment so several
ingress replicas never write the file at once; tests open it directly.
"""

from poly_ray.state.store import SCHEMA_VERSION, Page, Store, open_store

__all__ = ["SCHEMA_VERSION", "Page", "Store", "open_store"]
