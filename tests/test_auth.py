import time

import jwt
import pytest

from poly_ray.auth import Authenticator, token_from
from poly_ray.errors import Forbidden, Unauthorized

SECRET = "s" * 32


def make(**kw):
    return Authenticator(public=kw.get("public", False), keys=kw.get("keys", ["key-1"]), jwt_secret=kw.get("secret", SECRET))


def token(claims, secret=SECRET, alg="HS256"):
    return jwt.encode(claims, secret, algorithm=alg)


def test_header_wins_over_query():
    assert token_from("Bearer abc", "xyz") == "abc"
    assert token_from(None, "xyz") == "xyz"
    assert token_from(None, None) is None
    with pytest.raises(Unauthorized):
        token_from("Basic abc", None)


def test_static_keys():
    auth = make()
    assert auth.authenticate("key-1").subject is None
    with pytest.raises(Unauthorized, match="invalid credentials"):
        auth.authenticate("key-2")
    with pytest.raises(Unauthorized, match="credentials required"):
        auth.authenticate(None)


def test_public_lets_anonymous_in_but_not_wrong_credentials():
    auth = make(public=True)
    assert auth.authenticate(None).tasks is None
    with pytest.raises(Unauthorized):
        auth.authenticate("wrong")


def test_jwt_claims_scope_access():
    who = make().authenticate(token({"sub": "ann", "exp": time.time() + 60, "tasks": ["qa"]}))
    assert who.subject == "ann"
    who.check("task", "qa")
    with pytest.raises(Forbidden, match="may not use task 'story'"):
        who.check("task", "story")
    who.check("model", "anything")
    assert not who.allows("task", "story")


@pytest.mark.parametrize(
    "bad",
    [
        token({"exp": time.time() - 60}),  # expired
        token({"sub": "x"}),  # no exp
        token({"exp": time.time() + 60}, secret="t" * 32),  # wrong secret
        token({"exp": time.time() + 60}, alg="none", secret=None),  # alg none
        token({"exp": time.time() + 60, "tasks": "qa"}),  # claim of the wrong type
    ],
)
def test_bad_tokens_are_refused(bad):
    with pytest.raises(Unauthorized):
        make().authenticate(bad)
