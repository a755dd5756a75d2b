"""``poly-ray token``: mints tokens the server accepts, and prints fresh secrets."""

import time

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from poly_ray import cli, config
from poly_ray.api.auth import Authenticator

SECRET = "k" * 40


def write_config(tmp_path, text: str):
    path = tmp_path / "poly.toml"
    path.write_text(text)
    return str(path)


def test_token_is_accepted_with_its_scopes(tmp_path, capsys):
    path = write_config(tmp_path, f'jwt_private_key = {{ symmetric = "{SECRET}" }}\njwt_audience = "poly"\n')
    argv = ["token", "-c", path, "--sub", "ann", "--tasks", "qa,story", "--models", "", "--memories", "docs",
            "--ttl", "120"]
    assert cli.main(argv) == 0
    token = capsys.readouterr().out.strip()
    who = Authenticator.from_config(config.load(path, env={})).authenticate(token)
    assert who.subject == "ann"
    assert who.tasks == {"qa", "story"} and who.models == frozenset() and who.memories == {"docs"}
    claims = jwt.decode(token, SECRET, algorithms=["HS256"], audience="poly")
    assert 115 <= claims["exp"] - time.time() <= 121 and claims["aud"] == "poly"


def test_token_without_scopes_may_use_everything(tmp_path, capsys):
    path = write_config(tmp_path, f'jwt_private_key = {{ symmetric = "{SECRET}" }}\n')
    assert cli.main(["token", "-c", path, "--sub", "ops"]) == 0
    who = Authenticator.from_config(config.load(path, env={})).authenticate(capsys.readouterr().out.strip())
    assert who.tasks is None and who.models is None and who.memories is None


def test_token_refused_without_a_secret(tmp_path, capsys):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    (tmp_path / "id.pem").write_bytes(
        key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    path = write_config(tmp_path, 'jwt_public_key = { algorithm = "RS256", pem_file = "id.pem" }\n')
    assert cli.main(["token", "-c", path, "--sub", "ann"]) == 2
    err = capsys.readouterr().err
    assert "no jwt_private_key.symmetric" in err and "holder of the private key" in err
    path = write_config(tmp_path, f'jwt_private_key = {{ symmetric = "{SECRET}" }}\n')
    assert cli.main(["token", "-c", path]) == 2
    assert "--sub NAME is required" in capsys.readouterr().err
    assert cli.main(["token", "-c", path, "--sub", "a", "--ttl", "0"]) == 2


def test_new_secret(capsys):
    assert cli.main(["token", "--new-secret"]) == 0
    first = capsys.readouterr().out.strip()
    assert cli.main(["token", "--new-secret"]) == 0
    second = capsys.readouterr().out.strip()
    assert len(first) >= 64 and first != second
    config.validate({"jwt_private_key": {"symmetric": first}}, env={})
