"""StateActor: the state store (Responses, Conversations, Assistants) in one
deployment. One replica, so the SQLite file has one writer however many ingress
replicas run; on the head node, where the file stays when workers come and go.
Its methods are StateService's: handles call them by name (serve/handles.StateHandle)."""

from __future__ import annotations

import logging
from pathlib import Path

from poly_ray.state.service import StateService
from poly_ray.state.store import Quota, open_store

from .ops import route_logs_to_serve

log = logging.getLogger(__name__)


class StateActor(StateService):
    def __init__(self, folder: str, quota: Quota = Quota()):
        """``folder``: the config's ``state_path(cfg, "state")``, where state.sqlite3 lives;
        ``quota``: what each owner may keep there."""
        route_logs_to_serve()
        store = open_store(Path(folder), quota)
        if store.swept:
            log.info("state: %d unfinished objects ended failed (the server restarted)", store.swept)
        log.info("state: %s (schema v%d)", store.path, store.version)
        super().__init__(store)

    def __del__(self):
        if getattr(self, "store", None) is not None:
            self.close()
