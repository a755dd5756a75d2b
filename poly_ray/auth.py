"""Who is calling: static API keys and HS256 JWTs (Poly's ``jwt_private_key.symmetric``).

A token comes from ``Authorization: Bearer <token>`` or ``?api_key=`` (browsers,
WebSockets); the header wins when both are present.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

import jwt

from .errors import Forbidden, Unauthorized


@dataclass(frozen=True)
class Principal:
    subject: str | None = None
    tasks: frozenset[str] | None = None  # None: every task
    models: frozenset[str] | None = None
    memories: frozenset[str] | None = None

    def allows(self, kind: str, name: str) -> bool:
        """Whether these credentials may use the ``kind`` ("task", "model" or "memory") called ``name``."""
        scope = {"task": self.tasks, "model": self.models, "memory": self.memories}[kind]
        return scope is None or name in scope

    def check(self, kind: str, name: str) -> None:
        if not self.allows(kind, name):
            raise Forbidden(f"these credentials may not use {kind} '{name}'")


ANONYMOUS = Principal()


def token_from(authorization: str | None, api_key: str | None) -> str | None:
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise Unauthorized("the Authorization header must be 'Bearer <token>'")
        return value.strip()
    return api_key or None


class Authenticator:
    def __init__(self, *, public: bool, keys: list[str], jwt_secret: str | None):
        self.public = public
        self._keys = [k.encode() for k in keys]
        self._secret = jwt_secret

    def authenticate(self, token: str | None) -> Principal:
        if token is None:
            if self.public:
                return ANONYMOUS
            raise Unauthorized("credentials required: send 'Authorization: Bearer <key>' or ?api_key=<key>")
        # Compare against every key so the time taken does not say which matched.
        matched = False
        for key in self._keys:
            matched |= secrets.compare_digest(key, token.encode())
        if matched:
            return ANONYMOUS
        if self._secret and token.count(".") == 2:
            return self._from_jwt(token)
        raise Unauthorized("invalid credentials")

    def _from_jwt(self, token: str) -> Principal:
        try:
            claims = jwt.decode(
                token, self._secret, algorithms=["HS256"], options={"require": ["exp"]}, leeway=5
            )
        except jwt.PyJWTError as e:
            raise Unauthorized(f"invalid token: {e}") from None

        def scope(key: str) -> frozenset[str] | None:
            value = claims.get(key)
            if value is None:
                return None
            if not isinstance(value, list):
                raise Unauthorized(f"invalid token: claim '{key}' must be a list")
            return frozenset(map(str, value))

        return Principal(
            subject=claims.get("sub"), tasks=scope("tasks"), models=scope("models"), memories=scope("memories")
        )
