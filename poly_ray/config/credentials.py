"""Who may call: the API keys (``allowed_keys``) and the keys that verify JWTs
(``jwt_private_key``, ``jwt_public_key``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import Field, field_validator, model_validator

from .base import Strict


class SymmetricKey(Strict):
    """Poly's ``jwt_private_key``: the shared secret of HS256 tokens, ``{ symmetric = "..." }``
    (``POLY_JWT_PRIVATE_KEY`` takes the bare secret)."""

    symmetric: str = Field(repr=False, description=(  # repr=False: kept out of logs and tracebacks
        "The secret: at least 32 bytes, else start-up stops (`poly-ray token --new-secret` makes one)."))

    @field_validator("symmetric")
    @classmethod
    def _long_enough(cls, v):
        # HS256's secret must be as long as its hash (RFC 7518 3.2): a short one can be guessed offline.
        if len(v.encode()) < 32:
            raise ValueError(f"is {len(v.encode())} bytes; HS256 needs at least 32 (poly-ray token --new-secret makes one)")
        return v


JwtPublicAlgorithm = Literal["RS256", "RS384", "RS512", "ES256", "ES384", "ES512"]
JWT_PUBLIC_ALGORITHMS: tuple[str, ...] = get_args(JwtPublicAlgorithm)


class PublicKey(Strict):
    """``jwt_public_key``: verifies tokens signed with a private key the server never sees,
    e.g. ``{ algorithm = "RS256", pem_file = "id.pem" }``: exactly one of ``pem_file``,
    ``jwks_file``, ``pem`` and ``jwks``. A key that cannot be read, is not a public key of
    the algorithm's kind, is an RSA key under 2048 bits, or names another ``alg``, stops
    start-up naming the key.

    The files are read at start-up, so the config carries the key itself (``pem`` or
    ``jwks``) to every ingress replica."""

    algorithm: JwtPublicAlgorithm = Field(
        description="The tokens' `alg`; tokens signed otherwise are refused.")
    pem_file: Path | None = Field(None, description="A PEM public key file, relative to the config.")
    jwks_file: Path | None = Field(None, description=(
        "A JWKS file, relative to the config; a token's `kid` chooses its key."))
    pem: str | None = Field(None, description="The PEM public key itself.")
    jwks: dict[str, Any] | None = Field(None, description="The JWKS itself.")

    @model_validator(mode="after")
    def _one(self):
        given = [k for k in ("pem_file", "jwks_file", "pem", "jwks") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"set exactly one of pem_file, jwks_file, pem, jwks (found: {', '.join(given) or 'none'})")
        return self


class ScopedKey(Strict):
    """An ``allowed_keys`` entry: a string, or a table that limits the key to some
    tasks / models / memories, e.g. ``{ key = "...", name = "ci", tasks = ["qa"],
    memories_read = ["docs"] }``. With no list the key may use everything; once one list
    is given, a list left out grants nothing; outside them a request gets 403."""

    key: str = Field(min_length=1, repr=False, description=(  # repr=False: kept out of logs and tracebacks
        "The key, compared in constant time; sent as `Authorization: Bearer KEY` or `?api_key=KEY`."))
    name: str | None = Field(None, description=(
        "Stands for the key in logs and per-credential limits, and owns what the key stores (responses, "
        "assistants, ...); unique. The key itself is never logged; not set: `key#` and the first 16 hex "
        "digits of the key's SHA-256."))
    tasks: list[str] | None = Field(None, description="The tasks it may use.")
    models: list[str] | None = Field(None, description="The models it may use bare (without a task).")
    memories: list[str] | None = Field(None, description="The memories it may recall from, store in and forget from.")
    memories_read: list[str] | None = Field(None, description="The memories it may only recall from and list.")

    @model_validator(mode="before")
    @classmethod
    def _plain(cls, data):
        if isinstance(data, str):
            return {"key": data}
        if not isinstance(data, dict | cls):
            raise ValueError('must be a key (a string) or a table { key = "...", tasks = [...], ... }')
        return data
