"""ChainRouter: Serve's request router for the model deployments, on Serve's own
extension point (``request_router_config``).

A generation names its chain as Serve's multiplexed model id (serve/handles.py): a
chain of turns, or, for a request without one, the hash of its prompt's leading text.
Each replica marks the ids it served (serve/model.py). The rule:

- A replica that holds the id is preferred while it carries at most ``max_imbalance``
  more requests than the least loaded replica (the queue lengths Serve's router has
  probed): its cells save reading the prefix again.
- Past that, or with no holder, the request goes as Serve's default does: the less
  loaded of two replicas picked at random. The chain then starts over there.

So a chain never piles more than ``max_imbalance`` requests (the model's slots by
default) on its replica beyond the lightest one. Serve still probes each replica it
routes to before sending, so a lost or full replica is skipped as with its default
router, and after a replica goes its ids are served elsewhere.
"""

from __future__ import annotations

import random

from ray.serve._private.request_router import PowerOfTwoChoicesRequestRouter


class ChainRouter(PowerOfTwoChoicesRequestRouter):
    def initialize_state(self, max_imbalance: int = 4, **kwargs):
        super().initialize_state(**kwargs)
        self.max_imbalance = max_imbalance

    async def choose_replicas(self, candidate_replicas, pending_request=None):
        chain = pending_request.metadata.multiplexed_model_id if pending_request is not None else ""
        if not chain or not candidate_replicas:
            return await super().choose_replicas(candidate_replicas, pending_request)
        load = {r.replica_id: self._replica_queue_len_cache.get(r.replica_id) or 0 for r in candidate_replicas}
        lightest = min(load.values())
        holders = self._multiplexed_model_id_to_replica_ids.get(chain, set())
        preferred = [r for r in candidate_replicas
                     if r.replica_id in holders and load[r.replica_id] - lightest <= self.max_imbalance]
        others = [r for r in candidate_replicas if r not in preferred]
        two = random.sample(others, min(2, len(others)))
        return [ranked for ranked in (preferred, two) if ranked]
