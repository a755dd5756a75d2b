"""The public keys that verify JWTs: a PEM key or a JWKS, each checked against
the configured algorithm when the config loads (an RS256 setting with an EC key
is refused at start-up, not at the first token)."""

from __future__ import annotations

from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from poly_ray.errors import ConfigError

from .schema import PublicKey

_CURVES = {"ES256": ec.SECP256R1, "ES384": ec.SECP384R1, "ES512": ec.SECP521R1}


class BadKey(ConfigError):
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
    if spec.jwks is None:  # load() reads pem_file / jwks_file into pem / jwks
        raise BadKey("the key's file was not read: load the config with load()")
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
        if key.key_size < 2048:
            raise BadKey(f"{name} is an RSA key of {key.key_size} bits; at least 2048 are needed")
    elif not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, _CURVES[algorithm]):
        raise BadKey(f"{name} is not an EC public key on the curve {algorithm} needs ({_CURVES[algorithm].name})")
