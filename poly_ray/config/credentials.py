"""Who may call: the API keys (``allowed_keys``) and the keys that verify JWTs
(``jwt_private_key``, ``jwt_public_key``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from .base import Strict


class SymmetricKey(Strict):
    """Poly's ``jwt_private_key``: the shared secret of HS256 tokens."""

    symmetric: str = Field(repr=False)  # kept out of logs and tracebacks

    @field_validator("symmetric")
    @classmethod
    def _long_enough(cls, v):
        # HS256's secret must be as long as its hash (RFC 7518 3.2): a short one can be guessed offline.
        if len(v.encode()) < 32:
            raise ValueError(f"is {len(v.encode())} bytes; HS256 needs at least 32 (poly-ray token --new-secret makes one)")
        return v


JWT_PUBLIC_ALGORITHMS = ("RS256", "RS384", "RS512", "ES256", "ES384", "ES512")


class PublicKey(Strict):
    """``jwt_public_key``: verifies tokens signed with a private key the server never sees.

    The files are read at start-up, so the config carries the key itself (``pem`` or
    ``jwks``) to every ingress replica."""

    algorithm: Literal[JWT_PUBLIC_ALGORITHMS]
    pem_file: Path | None = None
    jwks_file: Path | None = None
    pem: str | None = None
    jwks: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _one(self):
        given = [k for k in ("pem_file", "jwks_file", "pem", "jwks") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"set exactly one of pem_file, jwks_file, pem, jwks (found: {', '.join(given) or 'none'})")
        return self


class ScopedKey(Strict):
    """An ``allowed_keys`` entry: a string, or a table that limits the key to some
    tasks / models / memories (no list: no limit; once one is given, a list left out
    grants nothing)."""

    key: str = Field(min_length=1, repr=False)  # kept out of logs and tracebacks
    # Names the key in logs and per-credential limits (the key itself is never logged).
    name: str | None = None
    tasks: list[str] | None = None
    models: list[str] | None = None
    memories: list[str] | None = None  # recall, store and forget
    memories_read: list[str] | None = None  # recall and listings only

    @model_validator(mode="before")
    @classmethod
    def _plain(cls, data):
        if isinstance(data, str):
            return {"key": data}
        if not isinstance(data, dict | cls):
            raise ValueError('must be a key (a string) or a table { key = "...", tasks = [...], ... }')
        return data
