"""``[ingress]`` and ``[orchestrator]``: how many replicas of the HTTP tier run.

One each by default, on the head node (a laptop's only node). More replicas are
placed on any node, spread by Serve; Serve's proxy on each node sends a request to
an ingress replica on its own node when there is one. The limits that must hold
across replicas (``max_concurrent``, ``max_streams_per_credential``) are then
counted in the coordinator deployment (docs/guides/clusters.md).
"""

from __future__ import annotations

from pydantic import Field, model_validator

from .base import Strict
from .models import Autoscaling


class Tier(Strict):
    """Replicas of one deployment of the HTTP tier: a count, or an autoscaling block."""

    replicas: int | None = Field(None, ge=1, le=1000, description=(
        "A fixed number of replicas (not set, and no `autoscaling`: 1, on the head node)."))
    autoscaling: Autoscaling | None = Field(None, description=(
        "Replicas that follow the load, instead of `replicas` (`min_replicas` at least 1)."))
    resources: dict[str, float] = Field({}, description=(
        "Custom Ray resources each replica asks for, to keep the tier on the nodes that offer them (e.g. "
        "`{ ingress = 1 }` on nodes that stay while the autoscaler removes others; a node offering 1 then "
        "runs at most one replica)."))

    @model_validator(mode="after")
    def _one_way(self):
        if self.replicas is not None and self.autoscaling is not None:
            raise ValueError("set replicas or autoscaling, not both")
        if self.autoscaling is not None and self.autoscaling.min_replicas < 1:
            raise ValueError("autoscaling.min_replicas must be at least 1: requests always need a replica")
        return self

    @property
    def most(self) -> int:
        """The most replicas that may run at once."""
        return self.autoscaling.max_replicas if self.autoscaling is not None else self.replicas or 1
