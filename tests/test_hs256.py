"""HS256 tokens made and checked without PyJWT (``sessionhub.hs256``): the same verdicts as
PyJWT on the same tokens, and stricter where the module says so (that a server with a secret
never imports PyJWT is in ``test_footprint.py``)."""

from __future__ import annotations

import base64
import time
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

import jwt
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sessionhub import hs256

SECRET = "k" * 40
LEEWAY = 30.0
MISSING = object()

# Offsets from now, in seconds, far enough from now ± the leeway that the few milliseconds
# between our clock and PyJWT's never decide a case.
_OFFSETS = st.sampled_from([-100_000, -45, -15, 0, 15, 45, 100_000])
_NUMBERS = st.one_of(
    _OFFSETS.map(lambda d: int(time.time()) + d),
    _OFFSETS.map(lambda d: time.time() + d + 0.5),
    _OFFSETS.map(lambda d: str(int(time.time()) + d)),
    st.sampled_from(["soon", "", None, True, [], {"a": 1}, 10**30]),
)


def _claim(values: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(st.just(MISSING), values)


_CLAIMS = st.fixed_dictionaries(
    {
        "sub": _claim(st.sampled_from(["alice", "", 5, None, ["a"]])),
        "iat": _claim(_NUMBERS),
        "nbf": _claim(_NUMBERS),
        "exp": _claim(_NUMBERS),
        "aud": _claim(st.sampled_from(["", "x", [], ["x"], None])),
        "jti": _claim(st.sampled_from(["j1", 7, None])),
        "roles": _claim(st.sampled_from([["admin"], "admin"])),
    }
).map(lambda d: {k: v for k, v in d.items() if v is not MISSING})


def _pyjwt(token: str, secret: str = SECRET) -> dict[str, Any] | type[Exception]:
    try:
        claims: dict[str, Any] = jwt.decode(
            token, secret, algorithms=["HS256"], leeway=LEEWAY, options={"require": ["sub"]}
        )
    except jwt.ExpiredSignatureError:
        return hs256.Expired
    except jwt.PyJWTError:
        return hs256.TokenError
    return claims


def _ours(token: str, secret: str = SECRET) -> dict[str, Any] | type[Exception]:
    try:
        return hs256.decode(token, secret, leeway=LEEWAY)
    except hs256.Expired:
        return hs256.Expired
    except hs256.TokenError:
        return hs256.TokenError


def _segment(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@settings(max_examples=300, deadline=None)
@given(claims=_CLAIMS, by=st.sampled_from(["pyjwt", "ours"]), key=st.sampled_from(["ok", "bad"]))
def test_verdicts_match_pyjwt(claims: dict[str, Any], by: str, key: str) -> None:
    secret = SECRET if key == "ok" else "z" * 40
    token = (
        jwt.encode(claims, secret, algorithm="HS256")
        if by == "pyjwt"
        else hs256.encode(claims, secret)
    )
    assert _ours(token) == _pyjwt(token), claims


class Ago(NamedTuple):
    """A time ``seconds`` before the test runs (the test's ids stay the same on every
    worker)."""

    seconds: float
    #: As a numeric string ("1735689600"), which PyJWT's int() reads too.
    text: bool = False

    def at(self, now: float) -> float | str:
        return str(int(now - self.seconds)) if self.text else now - self.seconds


#: One case per rule, each beside its passing twin (the random cases above rarely line up
#: every other claim to isolate one rule).
_RULES = [
    {"sub": "alice"},
    {},
    {"sub": None},
    {"sub": 5},
    {"sub": "alice", "aud": "x"},
    {"sub": "alice", "aud": ["x"]},
    {"sub": "alice", "aud": ""},
    {"sub": "alice", "aud": []},
    {"sub": "alice", "jti": 7},
    {"sub": "alice", "jti": "j"},
    {"sub": "alice", "iat": Ago(-15)},
    {"sub": "alice", "iat": Ago(-45)},
    {"sub": "alice", "iat": "soon"},
    {"sub": "alice", "nbf": Ago(-15)},
    {"sub": "alice", "nbf": Ago(-45)},
    {"sub": "alice", "nbf": [1]},
    {"sub": "alice", "exp": Ago(15)},
    {"sub": "alice", "exp": Ago(45)},
    {"sub": "alice", "exp": Ago(-60, text=True)},
    {"sub": "alice", "exp": Ago(-60.5)},
    {"sub": "alice", "exp": True},
    {"sub": "alice", "exp": None},
    {"sub": "alice", "exp": 10**30},
]


@pytest.mark.parametrize("spec", _RULES, ids=[str(c) for c in _RULES])
def test_each_rule_as_pyjwt_has_it(spec: dict[str, Any]) -> None:
    now = time.time()
    claims = {k: v.at(now) if isinstance(v, Ago) else v for k, v in spec.items()}
    for token in (jwt.encode(claims, SECRET, algorithm="HS256"), hs256.encode(claims, SECRET)):
        assert _ours(token) == _pyjwt(token)


def test_a_token_made_here_is_read_by_pyjwt_with_its_dates_as_numbers() -> None:
    now = datetime.now(UTC)
    token = hs256.encode({"sub": "alice", "exp": now + timedelta(hours=1), "iat": now}, SECRET)
    claims = jwt.decode(token, SECRET, algorithms=["HS256"])
    assert claims == {
        "sub": "alice",
        "exp": int((now + timedelta(hours=1)).timestamp()),
        "iat": int(now.timestamp()),
    }
    assert jwt.get_unverified_header(token) == {"alg": "HS256", "typ": "JWT"}
    assert hs256.header(token) == {"alg": "HS256", "typ": "JWT"}


def test_expiry_leeway_and_the_clock() -> None:
    token = hs256.encode({"sub": "a", "exp": 1_000}, SECRET)
    assert hs256.decode(token, SECRET, leeway=30, now=1_029)["sub"] == "a"
    with pytest.raises(hs256.Expired, match="expired"):
        hs256.decode(token, SECRET, leeway=30, now=1_030)
    early = hs256.encode({"sub": "a", "nbf": 2_000}, SECRET)
    with pytest.raises(hs256.TokenError, match="not yet valid"):
        hs256.decode(early, SECRET, leeway=30, now=1_969)
    assert hs256.decode(early, SECRET, leeway=30, now=1_970)["sub"] == "a"


def _forge(header: dict[str, Any], claims: dict[str, Any] | bytes, secret: str = SECRET) -> str:
    """A token with any header and payload, signed with HMAC-SHA-256 as PyJWT would."""
    import hashlib
    import hmac

    payload = claims if isinstance(claims, bytes) else orjson.dumps(claims)
    first = _segment(orjson.dumps(header)) + "." + _segment(payload)
    sig = hmac.new(secret.encode(), first.encode(), hashlib.sha256).digest()
    return first + "." + _segment(sig)


@pytest.mark.parametrize(
    ("token", "message"),
    [
        (_forge({"alg": "none"}, {"sub": "a"}), "alg"),
        (_forge({"alg": "RS256"}, {"sub": "a"}), "alg"),
        (_forge({"alg": "HS256", "crit": ["exp"]}, {"sub": "a"}), "critical"),
        (_forge({"alg": "HS256", "b64": False, "crit": ["b64"]}, {"sub": "a"}), "critical"),
        (_forge({"alg": "HS256"}, {"sub": "a"}) + ".x", "Too many segments"),
        ("a.b", "Not enough segments"),
        (_forge({"alg": "HS256"}, {"sub": "a"}) + "=", "padding"),
        (_forge({"alg": "HS256"}, {"sub": "a"}).replace(".", ".*", 1), "padding"),
        (_forge({"alg": "HS256"}, {"sub": "a"}) + "é", "padding"),
        (_segment(b"[1]") + "." + _segment(b"{}") + ".", "must be a json object"),
        (_segment(b"{") + "." + _segment(b"{}") + ".", "not JSON"),
        # Nested past the interpreter's recursion limit: refused, not a crash (a 500).
        (_forge({"alg": "HS256"}, b"[" * 5000 + b"]" * 5000), "not JSON"),
        (_segment(b"[" * 5000 + b"]" * 5000) + "." + _segment(b"{}") + ".", "not JSON"),
    ],
)
def test_what_is_refused_outright(token: str, message: str) -> None:
    with pytest.raises(hs256.TokenError, match=message):
        hs256.decode(token, SECRET)


def test_a_tampered_payload_fails_the_signature() -> None:
    head, _, sig = hs256.encode({"sub": "alice"}, SECRET).split(".")
    tampered = f"{head}.{_segment(orjson.dumps({'sub': 'admin'}))}.{sig}"
    with pytest.raises(hs256.TokenError, match="Signature verification failed"):
        hs256.decode(tampered, SECRET)
