"""Who is calling: static API keys (optionally scoped) and JWTs.

A token comes from ``Authorization: Bearer <token>``, ``x-api-key: <token>``
(Anthropic's clients) or ``?api_key=`` (browsers, WebSockets), in that order.

JWTs are HS256 with Poly's ``jwt_private_key.symmetric``, and/or RS*/ES* with
``jwt_public_key`` (a PEM key or a JWKS). A token's ``alg`` picks the key among
the configured ones and nothing else: no ``none``, and an HS256 token is never
checked against a public key (the HS/RS confusion). ``exp`` is required; ``nbf``,
``iat``, and, when configured, ``aud`` and ``iss`` are checked, with a small leeway.
Claims ``tasks``, ``models``, ``memories`` (read and write) and ``memories_read``
(lists) limit what a token may use; once any of them is given, one left out
grants nothing (a key for ``tasks = ["qa"]`` cannot use models bare or clear
memories).
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import jwt
from starlette.requests import HTTPConnection

from poly_ray.config import Config, ScopedKey
from poly_ray.config.jwt_keys import PublicKey, public_keys
from poly_ray.errors import ConfigError, Forbidden, NotFound, PolyError, Unauthorized

log = logging.getLogger(__name__)

LEEWAY_S = 30  # clock skew tolerated on exp, nbf and iat
SCOPES = {"task": "tasks", "model": "models", "memory": "memories"}
# Scopes as written in keys and claims; `memories_read` grants recall and listings only.
SCOPE_CLAIMS = ("tasks", "models", "memories", "memories_read")


# The one owner of every anonymous caller's objects on a public server.
ANONYMOUS_OWNER = "anonymous"


@dataclass(frozen=True)
class Principal:
    subject: str | None = None  # for logs: a token's `sub`, a key's name
    tasks: frozenset[str] | None = None  # None: every task
    models: frozenset[str] | None = None
    memories: frozenset[str] | None = None  # read and write
    memories_read: frozenset[str] | None = None  # read only
    # What per-credential limits count against; None: anonymous (counted by client address).
    credential: str | None = None

    @classmethod
    def scoped(cls, subject: str | None, scopes: dict[str, list[str] | None], credential: str) -> Principal:
        """A principal limited by ``scopes`` (SCOPE_CLAIMS → names or None): with none given,
        no limit; once any is given, one left out grants nothing."""
        if all(v is None for v in scopes.values()):
            return cls(subject, credential=credential)
        sets = {k: frozenset(scopes.get(k) or ()) for k in SCOPE_CLAIMS}
        return cls(subject, credential=credential, **sets)

    @property
    def owner(self) -> str:
        """Whose data the caller's requests store and read, on every route: stored objects
        (responses, conversations, assistants, threads), KV cache ids, uploaded documents
        and stored prompts, and what recall sees of the stored prompts. The key id or the
        token's subject; on a public server every anonymous caller is the one anonymous
        owner (``credential`` still tells them apart for the per-client limits)."""
        credential = self.credential or ANONYMOUS_OWNER
        return ANONYMOUS_OWNER if credential.startswith("anonymous@") else credential

    def allows(self, kind: str, name: str, write: bool = False) -> bool:
        """Whether these credentials may use the ``kind`` ("task", "model", "memory") called
        ``name``; a memory's ``write`` (storing, forgetting) needs ``memories``, not ``memories_read``."""
        scope = getattr(self, SCOPES[kind])
        if scope is None or name in scope:
            return True
        return kind == "memory" and not write and name in (self.memories_read or ())

    def check(self, kind: str, name: str, write: bool = False) -> None:
        if not self.allows(kind, name, write):
            what = f"change {kind} '{name}'" if write else f"use {kind} '{name}'"
            raise Forbidden(f"these credentials may not {what}", subject=self.subject)


ANONYMOUS = Principal()


def token_from(authorization: str | None, api_key: str | None, x_api_key: str | None = None) -> str | None:
    """The token of ``Authorization: Bearer``, else of ``x-api-key`` (Anthropic's clients), else of ``?api_key=``."""
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise Unauthorized("the Authorization header must be 'Bearer <token>'")
        return value.strip()
    return x_api_key or api_key or None


def loggable(text: str) -> str:
    """Text from a request, safe in a log line: a `%0A` in a path cannot forge a line."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


def log_refusal(err: PolyError, method: str, path: str) -> None:
    """Every 401/403, with who (when known) and where; never the credentials."""
    if err.status in (401, 403):
        subject = getattr(err, "subject", None) or "-"
        log.warning("%d %s %s subject=%s: %s", err.status, loggable(method), loggable(path), loggable(subject),
                    loggable(err.message))


@dataclass(frozen=True)
class _StaticKey:
    digest: bytes
    principal: Principal


class Authenticator:
    def __init__(
        self,
        *,
        public: bool,
        keys: Sequence[str | ScopedKey],
        jwt_secret: str | None = None,
        jwt_public_key: PublicKey | None = None,
        audience: str | None = None,
        issuer: str | None = None,
    ):
        self.public = public
        # Public with nothing to check a credential against: any Authorization is let
        # in as anonymous, as vLLM and llama-server do, since OpenAI clients always send one.
        self.open = public and not keys and not jwt_secret and not jwt_public_key
        self._keys = [_static_key(k) for k in keys]
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
            raise Unauthorized("credentials required: send 'Authorization: Bearer <key>', 'x-api-key: <key>' "
                               "or ?api_key=<key>")
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

        scopes = {key: claims.get(key) for key in SCOPE_CLAIMS}
        for key, value in scopes.items():
            if value is not None and (not isinstance(value, list) or not all(isinstance(v, str) for v in value)):
                raise Unauthorized(f"invalid token: claim '{key}' must be a list of names")

        # A token without `sub` is a credential of its own.
        credential = f"token:{subject}" if subject else "token#" + hashlib.sha256(token.encode()).hexdigest()[:16]
        return Principal.scoped(subject, scopes, credential)

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


async def check_target(backend, who: Principal, name: str, where: str = "") -> None:
    """``name`` (an OpenAI-style ``model``) is a task or a model the caller may use;
    NotFound (``where`` names the field) when it is neither."""
    if name in await backend.tasks():
        who.check("task", name)
    elif name in await backend.models():
        who.check("model", name)
    else:
        raise NotFound(f"{where + ': ' if where else ''}model '{name}' does not exist (neither a task nor a model)")


class Access:
    """Authentication and authorization of requests against the graph's names."""

    def __init__(self, auth: Authenticator, backend, trusted_proxies: Sequence[str] = ()):
        self._auth = auth
        self._backend = backend
        self._proxies = [ipaddress.ip_network(p, strict=False) for p in trusted_proxies]

    def principal(self, request: HTTPConnection) -> Principal:
        """The caller; an anonymous one is counted against per-credential limits by its address."""
        if self._auth.open:
            who = ANONYMOUS
        else:
            who = self._auth.authenticate(
                token_from(request.headers.get("authorization"), request.query_params.get("api_key"),
                           request.headers.get("x-api-key"))
            )
        if who.credential is None:
            who = replace(who, credential=f"anonymous@{self.client_address(request)}")
        return who

    def client_address(self, request: HTTPConnection) -> str:
        """The client's address: behind a trusted proxy, the last address in
        X-Forwarded-For that is not one of the trusted proxies (the ones before it
        are the client's to write, so they are not believed)."""
        host = request.client.host if request.client else "unknown"
        if not self._trusted(host):
            return host
        hops = [h.strip() for h in ",".join(request.headers.getlist("x-forwarded-for")).split(",") if h.strip()]
        for hop in reversed(hops):
            if not self._trusted(hop):
                return hop
        return host

    def _trusted(self, host: str) -> bool:
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(address in net for net in self._proxies)

    async def names(self, kind: str) -> dict:
        if kind == "memory":
            memories = self._backend.memories
            return await memories.names() if memories is not None else {}
        return await (self._backend.tasks() if kind == "task" else self._backend.models())

    async def authorize(self, request: HTTPConnection, kind: str, name: str, write: bool = False) -> Principal:
        """The caller, who may use (or ``write``: change) the existing ``name`` (else 401/404/403)."""
        who = self.principal(request)
        if name not in await self.names(kind):
            raise NotFound(f"{kind} '{name}' does not exist")
        who.check(kind, name, write)
        return who


def mint(config: Config, subject: str, ttl_s: int, scopes: dict[str, list[str] | None]) -> str:
    """An HS256 token signed with the config's secret; ``scopes`` maps claims
    (tasks, models, memories) to names, None leaving a claim out (no limit)."""
    if config.jwt_private_key is None:
        raise ConfigError(
            "the config has no jwt_private_key.symmetric to sign with"
            + (" (jwt_public_key only verifies: tokens for it are signed by the holder of the private key)"
               if config.jwt_public_key else "")
        )
    now = int(time.time())
    claims: dict[str, Any] = {"sub": subject, "iat": now, "exp": now + ttl_s}
    claims |= {k: v for k, v in {"aud": config.jwt_audience, "iss": config.jwt_issuer}.items() if v}
    claims |= {k: v for k, v in scopes.items() if v is not None}
    return jwt.encode(claims, config.jwt_private_key.symmetric, algorithm="HS256")


def _static_key(key: str | ScopedKey) -> _StaticKey:
    if isinstance(key, str):
        key = ScopedKey(key=key)
    # An unnamed key is named by a digest of itself, not by its place in the list: removing
    # one key must not hand the next one its objects (they are owned by this name).
    name = key.name or f"key#{hashlib.sha256(key.key.encode()).hexdigest()[:16]}"

    principal = Principal.scoped(name, {k: getattr(key, k) for k in SCOPE_CLAIMS}, f"key:{name}")
    return _StaticKey(hashlib.sha256(key.key.encode()).digest(), principal)
