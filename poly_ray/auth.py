"""Who is calling: static API keys (optionally scoped) and JWTs.

A token comes from ``Authorization: Bearer <token>`` or ``?api_key=`` (browsers,
WebSockets); the header wins when both are present.

JWTs are HS256 with Poly's ``jwt_private_key.symmetric``, and/or RS*/ES* with
``jwt_public_key`` (a PEM key or a JWKS). A token's ``alg`` picks the key among
the configured ones and nothing else: no ``none``, and an HS256 token is never
checked against a public key (the HS/RS confusion). ``exp`` is required; ``nbf``,
``iat``, and, when configured, ``aud`` and ``iss`` are checked, with a small leeway.
Claims ``tasks``, ``models`` and ``memories`` (lists) limit what a token may use.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import time
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from .config import Config, PublicKey, ScopedKey
from .errors import Forbidden, PolyError, Unauthorized

log = logging.getLogger(__name__)

LEEWAY_S = 30  # clock skew tolerated on exp, nbf and iat
SCOPES = {"task": "tasks", "model": "models", "memory": "memories"}
_CURVES = {"ES256": ec.SECP256R1, "ES384": ec.SECP384R1, "ES512": ec.SECP521R1}


@dataclass(frozen=True)
class Principal:
    subject: str | None = None  # for logs: a token's `sub`, a key's name
    tasks: frozenset[str] | None = None  # None: every task
    models: frozenset[str] | None = None
    memories: frozenset[str] | None = None
    # What per-credential limits count against; None: anonymous (counted by client address).
    credential: str | None = None

    def allows(self, kind: str, name: str) -> bool:
        """Whether these credentials may use the ``kind`` ("task", "model", "memory") called ``name``."""
        scope = getattr(self, SCOPES[kind])
        return scope is None or name in scope

    def check(self, kind: str, name: str) -> None:
        if not self.allows(kind, name):
            raise Forbidden(f"these credentials may not use {kind} '{name}'", subject=self.subject)


ANONYMOUS = Principal()


def token_from(authorization: str | None, api_key: str | None) -> str | None:
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise Unauthorized("the Authorization header must be 'Bearer <token>'")
        return value.strip()
    return api_key or None


def log_refusal(err: PolyError, method: str, path: str) -> None:
    """Every 401/403, with who (when known) and where; never the credentials."""
    if err.status in (401, 403):
        subject = getattr(err, "subject", None) or "-"
        log.warning("%d %s %s subject=%s: %s", err.status, method, path, subject, err.message)


class BadKey(ValueError):
    """A configured public key cannot verify tokens of its algorithm."""


def public_keys(spec: PublicKey) -> dict[str | None, Any]:
    """The verification keys of ``jwt_public_key``, by key id (None: a PEM key, or a JWKS's only key)."""
    if spec.pem is not None:
        try:
            key = serialization.load_pem_public_key(spec.pem.encode())
        except ValueError:
            raise BadKey("not a PEM public key (-----BEGIN PUBLIC KEY-----)") from None
        _check_family(key, spec.algorithm, "the key")
        return {None: key}
    entries = spec.jwks.get("keys")
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise BadKey("a JWKS is an object with a 'keys' list of keys")
    found: dict[str | None, Any] = {}
    for data in entries:
        if data.get("use", "sig") != "sig":
            continue  # an encryption key
        name = f"key '{data['kid']}'" if "kid" in data else "a key without kid"
        if data.get("alg", spec.algorithm) != spec.algorithm:
            raise BadKey(f"{name} is for {data['alg']}, but the algorithm is {spec.algorithm}")
        try:
            jwk = jwt.PyJWK(data, algorithm=spec.algorithm)
        except jwt.PyJWTError as e:
            raise BadKey(f"{name}: {e}") from None
        _check_family(jwk.key, spec.algorithm, name)
        found[jwk.key_id] = jwk.key
    if not found:
        raise BadKey("the JWKS has no signing key")
    if None in found and len(found) > 1:
        raise BadKey("with several keys, each needs a 'kid'")
    return found


def _check_family(key, algorithm: str, name: str) -> None:
    if algorithm.startswith("RS"):
        if not isinstance(key, rsa.RSAPublicKey):
            raise BadKey(f"{name} is not an RSA public key, which {algorithm} needs")
    elif not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, _CURVES[algorithm]):
        raise BadKey(f"{name} is not an EC public key on the curve {algorithm} needs ({_CURVES[algorithm].name})")


@dataclass(frozen=True)
class _StaticKey:
    digest: bytes
    principal: Principal


class Authenticator:
    def __init__(
        self,
        *,
        public: bool,
        keys: list[str | ScopedKey],
        jwt_secret: str | None = None,
        jwt_public_key: PublicKey | None = None,
        audience: str | None = None,
        issuer: str | None = None,
    ):
        self.public = public
        self._keys = [_static_key(i, k) for i, k in enumerate(keys)]
        # alg → keys by kid: the token's header chooses among these only.
        self._jwt: dict[str, dict[str | None, Any]] = {}
        if jwt_secret:
            self._jwt["HS256"] = {None: jwt_secret}
        if jwt_public_key:
            self._jwt[jwt_public_key.algorithm] = public_keys(jwt_public_key)
        self._audience, self._issuer = audience, issuer

    @classmethod
    def from_config(cls, config: Config) -> Authenticator:
        return cls(
            public=config.public,
            keys=config.allowed_keys,
            jwt_secret=config.jwt_private_key.symmetric if config.jwt_private_key else None,
            jwt_public_key=config.jwt_public_key,
            audience=config.jwt_audience,
            issuer=config.jwt_issuer,
        )

    def authenticate(self, token: str | None) -> Principal:
        if token is None:
            if self.public:
                return ANONYMOUS
            raise Unauthorized("credentials required: send 'Authorization: Bearer <key>' or ?api_key=<key>")
        # Compare digests against every key: the time taken says neither which key
        # matched nor how long the keys are.
        digest = hashlib.sha256(token.encode(errors="surrogateescape")).digest()
        matched = None
        for key in self._keys:
            if secrets.compare_digest(key.digest, digest) and matched is None:
                matched = key.principal
        if matched is not None:
            return matched
        if self._jwt and token.count(".") == 2:
            return self._from_jwt(token)
        raise Unauthorized("invalid credentials")

    def _from_jwt(self, token: str) -> Principal:
        try:
            alg, key = self._key_for(jwt.get_unverified_header(token))
            claims = jwt.decode(
                token,
                key,
                algorithms=[alg],
                options={"require": ["exp"]},
                audience=self._audience,
                issuer=self._issuer,
                leeway=LEEWAY_S,
            )
        except jwt.PyJWTError as e:
            raise Unauthorized(f"invalid token: {e}") from None

        subject = claims.get("sub")

        def scope(key: str) -> frozenset[str] | None:
            value = claims.get(key)
            if value is None:
                return None
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise Unauthorized(f"invalid token: claim '{key}' must be a list of names")
            return frozenset(value)

        # A token without `sub` is a credential of its own.
        credential = f"token:{subject}" if subject else "token#" + hashlib.sha256(token.encode()).hexdigest()[:16]
        return Principal(subject, scope("tasks"), scope("models"), scope("memories"), credential)

    def _key_for(self, header: dict) -> tuple[str, Any]:
        alg, kid = header.get("alg"), header.get("kid")
        if not isinstance(alg, str) or alg not in self._jwt:
            accepted = ", ".join(self._jwt)
            raise jwt.InvalidAlgorithmError(f"the algorithm {alg!r} is not accepted (accepted: {accepted})")
        keys = self._jwt[alg]
        if isinstance(kid, str) and kid in keys:
            return alg, keys[kid]
        if len(keys) == 1 and (kid is None or None in keys):
            return alg, next(iter(keys.values()))
        raise jwt.InvalidKeyError(f"no key with kid {kid!r}")


def mint(config: Config, subject: str, ttl_s: int, scopes: dict[str, list[str] | None]) -> str:
    """An HS256 token signed with the config's secret; ``scopes`` maps claims
    (tasks, models, memories) to names, None leaving a claim out (no limit)."""
    if config.jwt_private_key is None:
        raise ValueError(
            "the config has no jwt_private_key.symmetric to sign with"
            + (" (jwt_public_key only verifies: tokens for it are signed by the holder of the private key)"
               if config.jwt_public_key else "")
        )
    now = int(time.time())
    claims: dict[str, Any] = {"sub": subject, "iat": now, "exp": now + ttl_s}
    claims |= {k: v for k, v in {"aud": config.jwt_audience, "iss": config.jwt_issuer}.items() if v}
    claims |= {k: v for k, v in scopes.items() if v is not None}
    return jwt.encode(claims, config.jwt_private_key.symmetric, algorithm="HS256")


def _static_key(index: int, key: str | ScopedKey) -> _StaticKey:
    if isinstance(key, str):
        key = ScopedKey(key=key)
    name = key.name or f"allowed_keys[{index}]"

    def scope(names: list[str] | None) -> frozenset[str] | None:
        return None if names is None else frozenset(names)

    principal = Principal(name, scope(key.tasks), scope(key.models), scope(key.memories), f"key:{name}")
    return _StaticKey(hashlib.sha256(key.key.encode()).digest(), principal)
