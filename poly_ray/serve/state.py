"""StateActor: the state store (Responses, Conversations, Assistants) in one
deployment. One replica, so the SQLite file has one writer however many ingress
replicas run; on the head node, where the file stays when workers come and go."""

from __future__ import annotations

import logging

from poly_ray.config import Config, state_path
from poly_ray.state.service import StateService
from poly_ray.state.store import open_store

from .ops import route_logs_to_serve

log = logging.getLogger(__name__)


class StateActor:
    def __init__(self, config: dict):
        route_logs_to_serve()
        cfg = Config.model_validate(config)
        store = open_store(state_path(cfg, "state"))
        if store.swept:
            log.info("state: %d unfinished objects ended failed (the server restarted)", store.swept)
        log.info("state: %s (schema v%d)", store.path, store.version)
        self.state = StateService(store)

    async def call(self, method: str, *args, **kwargs):
        return await self.state.call(method, *args, **kwargs)

    def __del__(self):
        state = getattr(self, "state", None)
        if state is not None:
            state.close()
