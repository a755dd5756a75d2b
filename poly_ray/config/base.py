"""The base of every config table: unknown keys are errors, and a validated table
never changes (deployments share it)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
