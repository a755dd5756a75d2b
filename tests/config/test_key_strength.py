"""Keys too weak to sign or check tokens stop start-up, naming the key."""

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from poly_ray import config
from poly_ray.errors import ConfigError


def test_an_hs256_secret_under_32_bytes_is_refused():
    with pytest.raises(ConfigError, match=r"jwt_private_key.symmetric.*31 bytes; HS256 needs at least 32"):
        config.validate({"jwt_private_key": {"symmetric": "s" * 31}}, env={})
    assert config.validate({"jwt_private_key": {"symmetric": "s" * 32}}, env={}).jwt_private_key


def test_an_rsa_key_under_2048_bits_is_refused():
    def pem(bits):
        key = rsa.generate_private_key(public_exponent=65537, key_size=bits).public_key()
        return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()

    with pytest.raises(ConfigError, match=r"jwt_public_key.*RSA key of 1024 bits; at least 2048 are needed"):
        config.validate({"jwt_public_key": {"algorithm": "RS256", "pem": pem(1024)}}, env={})
    assert config.validate({"jwt_public_key": {"algorithm": "RS256", "pem": pem(2048)}}, env={}).jwt_public_key
