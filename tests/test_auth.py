"""Authentication: HS256 and RS256 tokens, roles, API keys, the first-start secret."""

from __future__ import annotations

import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from sessionhub import cli
from sessionhub.auth import Authenticator, load_or_create_secret, parse_api_keys
from sessionhub.core.errors import Unauthenticated
from sessionhub.server.app import create_app
from sessionhub.server.runtime import Runtime, build_runtime
from sessionhub.settings import Settings

SECRET = "s" * 40


def rsa_pair() -> tuple[str, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private, public


@pytest.fixture(scope="module")
def keys() -> tuple[str, str]:
    return rsa_pair()


def test_hs256_round_trip_with_roles() -> None:
    auth = Authenticator(secret=SECRET)
    p = auth.verify(auth.issue("alice", ["admin", "viewer", "admin"]))
    assert p.sub == "alice" and p.roles == {"admin", "viewer"} and p.is_admin
    token = auth.issue("bob", ttl=None)
    assert "exp" not in jwt.decode(token, SECRET, algorithms=["HS256"])
    assert auth.verify(token).roles == frozenset()


def test_expired_tokens_are_refused_after_the_leeway() -> None:
    auth = Authenticator(secret=SECRET, leeway=30)
    past = datetime.now(UTC) - timedelta(hours=2)
    with pytest.raises(Unauthenticated, match="expired"):
        auth.verify(auth.issue("alice", ttl=timedelta(minutes=5), now=past))
    # Within the clock-skew leeway it still passes.
    recent = datetime.now(UTC) - timedelta(seconds=70)
    assert auth.verify(auth.issue("alice", ttl=timedelta(seconds=60), now=recent)).sub == "alice"


def test_wrong_signature_and_garbage_are_refused() -> None:
    auth = Authenticator(secret=SECRET)
    forged = jwt.encode({"sub": "alice", "roles": ["admin"]}, "x" * 40, algorithm="HS256")
    with pytest.raises(Unauthenticated, match="invalid token"):
        auth.verify(forged)
    with pytest.raises(Unauthenticated, match="malformed"):
        auth.verify("a.b.c")
    with pytest.raises(Unauthenticated, match="not accepted"):
        auth.verify(jwt.encode({"sub": "a"}, "", algorithm="none"))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("claims", "message"),
    [
        ({}, "invalid token"),  # no sub
        ({"sub": ""}, "no subject"),
        ({"sub": 5}, "invalid token|no subject"),
        ({"sub": "a", "roles": [1]}, "roles"),
        ({"sub": "a", "roles": {"admin": True}}, "roles"),
    ],
)
def test_malformed_claims_are_refused(claims: dict[str, object], message: str) -> None:
    auth = Authenticator(secret=SECRET)
    with pytest.raises(Unauthenticated, match=message):
        auth.verify(jwt.encode(claims, SECRET, algorithm="HS256"))


def test_a_single_role_string_is_accepted() -> None:
    auth = Authenticator(secret=SECRET)
    token = jwt.encode({"sub": "a", "roles": "admin"}, SECRET, algorithm="HS256")
    assert auth.verify(token).roles == {"admin"}


def test_no_token_grants_the_system_role() -> None:
    auth = Authenticator(secret=SECRET, api_keys=parse_api_keys(f"svc:{'k' * 17}:system+admin"))
    token = jwt.encode({"sub": "x", "roles": ["system", "admin"]}, SECRET, algorithm="HS256")
    p = auth.verify(token)
    assert p.roles == {"admin"} and not p.is_system
    assert not auth.authenticate(None, "k" * 17).is_system


def test_rs256_with_a_configured_public_key(keys: tuple[str, str]) -> None:
    private, public = keys
    auth = Authenticator(public_key=public)
    token = jwt.encode(
        {
            "sub": "carol",
            "roles": ["admin"],
            "exp": int((datetime.now(UTC) + timedelta(hours=1)).timestamp()),
        },
        private,
        algorithm="RS256",
    )
    p = auth.authenticate(f"Bearer {token}")
    assert p.sub == "carol" and p.is_admin
    # HS256 tokens are not accepted by a server that holds no secret...
    with pytest.raises(Unauthenticated, match="not accepted"):
        auth.verify(jwt.encode({"sub": "x"}, SECRET, algorithm="HS256"))
    # ... nor are RS256 tokens signed by another key.
    other_private, _ = rsa_pair()
    with pytest.raises(Unauthenticated, match="invalid token"):
        auth.verify(jwt.encode({"sub": "x"}, other_private, algorithm="RS256"))
    # A public-key-only server cannot issue tokens.
    with pytest.raises(RuntimeError):
        auth.issue("x")


def test_an_rs256_public_key_cannot_be_used_as_an_hs256_secret(keys: tuple[str, str]) -> None:
    """The classic algorithm-confusion attack: sign HS256 with the public key text."""
    import base64
    import hashlib
    import hmac
    import json

    _, public = keys
    auth = Authenticator(public_key=public)

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    header = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    payload = b64(json.dumps({"sub": "mallory", "roles": ["admin"]}).encode())
    sig = hmac.new(public.encode(), f"{header}.{payload}".encode(), hashlib.sha256).digest()
    with pytest.raises(Unauthenticated):
        auth.verify(f"{header}.{payload}.{b64(sig)}")


async def test_rs256_through_the_server(
    keys: tuple[str, str], tmp_path: Path, clock: object
) -> None:
    private, public = keys
    pem = tmp_path / "pub.pem"
    pem.write_text(public)
    settings = Settings(data_dir=tmp_path / "d", jwt_public_key=str(pem), sweep_interval=3600)
    rt = build_runtime(settings)
    assert not (tmp_path / "d" / "jwt-secret").exists()  # no secret made when a key is set
    app = create_app(runtime=rt)
    token = jwt.encode({"sub": "carol", "roles": ["admin"]}, private, algorithm="RS256")
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            r = await c.post(
                "/api/sessions",
                json={"owner": "dave"},
                headers={"Authorization": f"Bearer {token}"},
            )
            assert r.status_code == 201 and r.json()["owner"] == "dave"


def test_authenticate_header_forms() -> None:
    auth = Authenticator(secret=SECRET, api_keys=parse_api_keys("svc:" + "k" * 20))
    token = auth.issue("alice")
    assert auth.authenticate(f"Bearer {token}").sub == "alice"
    assert auth.authenticate(f"bearer   {token}  ").sub == "alice"
    assert auth.authenticate(None, "k" * 20).sub == "svc"
    assert auth.authenticate(f"Bearer {'k' * 20}").sub == "svc"
    for header in (None, "", "Bearer ", f"Token {token}"):
        with pytest.raises(Unauthenticated):
            auth.authenticate(header)


@pytest.mark.parametrize(
    "spec", ["svc", "svc:short", ":" + "k" * 20, "a:b:c:d", "svc:" + "k" * 10 + ":admin"]
)
def test_bad_api_key_specs_are_refused(spec: str) -> None:
    with pytest.raises(ValueError, match="bad API key"):
        parse_api_keys(spec)


def test_api_key_specs_parse_names_and_roles() -> None:
    keys = parse_api_keys(f" a:{'1' * 16} , b:{'2' * 16}:admin+ingest ,")
    assert [(k.name, k.roles) for k in keys] == [
        ("a", frozenset()),
        ("b", frozenset({"admin", "ingest"})),
    ]


def test_an_authenticator_needs_a_secret_or_a_key() -> None:
    with pytest.raises(ValueError):
        Authenticator()


def test_first_start_secret_is_private_and_reused(tmp_path: Path) -> None:
    data = tmp_path / "data"
    secret, created = load_or_create_secret(data)
    path = data / "jwt-secret"
    assert created and len(secret) >= 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again, created_again = load_or_create_secret(data)
    assert again == secret and not created_again


async def test_first_start_runtime_creates_the_secret_and_accepts_its_tokens(
    tmp_path: Path,
) -> None:
    settings = Settings(data_dir=tmp_path / "data", sweep_interval=3600)
    rt = build_runtime(settings)
    assert rt.secret_created
    assert stat.S_IMODE((tmp_path / "data" / "jwt-secret").stat().st_mode) == 0o600
    rt2 = build_runtime(settings)
    assert not rt2.secret_created
    assert rt2.auth.verify(rt.auth.issue("admin", ["admin"])).is_admin


async def test_cli_token_create_is_accepted_by_the_server(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server makes the secret on its first start; the CLI signs with that one (and never
    makes one of its own: a token signed with another secret would be refused)."""
    for var in ("SESSIONHUB_JWT_SECRET", "SESSIONHUB_JWT_PUBLIC_KEY", "SESSIONHUB_DATA_DIR"):
        monkeypatch.delenv(var, raising=False)
    data = tmp_path / "data"
    rt: Runtime = build_runtime(Settings(data_dir=data, sweep_interval=3600))
    assert rt.secret_created
    assert (
        cli.main(
            [
                "token",
                "create",
                "--user",
                "U",
                "--role",
                "admin",
                "--ttl",
                "1h",
                "--data-dir",
                str(data),
            ]
        )
        == 0
    )
    token = capsys.readouterr().out.strip()
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["sub"] == "U" and claims["roles"] == ["admin"]
    assert claims["exp"] - claims["iat"] == 3600
    app = create_app(runtime=rt)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            r = await c.post(
                "/api/sessions",
                json={"owner": "someone"},
                headers={"Authorization": f"Bearer {token}"},
            )
            assert r.status_code == 201, r.text


def test_cli_token_refuses_on_an_rs256_server(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    keys: tuple[str, str],
) -> None:
    monkeypatch.delenv("SESSIONHUB_JWT_SECRET", raising=False)
    monkeypatch.setenv("SESSIONHUB_JWT_PUBLIC_KEY", keys[1])
    assert cli.main(["token", "create", "--user", "U", "--data-dir", str(tmp_path)]) == 2
    assert "RS256" in capsys.readouterr().err


def test_verified_tokens_are_cached_until_they_expire(monkeypatch: pytest.MonkeyPatch) -> None:
    import sessionhub.auth as auth_module

    auth = Authenticator(secret=SECRET, leeway=0)
    token = auth.issue("alice", ttl=timedelta(minutes=1))
    calls = 0
    real = auth._verify

    def counting(t: str):  # type: ignore[no-untyped-def]
        nonlocal calls
        calls += 1
        return real(t)

    monkeypatch.setattr(auth, "_verify", counting)
    for _ in range(5):
        assert auth.verify(token).sub == "alice"
    assert calls == 1  # the signature is checked once
    now = auth_module.time.time()
    monkeypatch.setattr(auth_module.time, "time", lambda: now + 120)
    # Past its expiry by our clock: checked again, not served from the cache, and refused.
    with pytest.raises(Unauthenticated, match="token expired"):
        auth.verify(token)
    assert calls == 2
    # A forged token is never served from the cache of a good one.
    with pytest.raises(Unauthenticated):
        auth.verify(token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1])


def test_the_token_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    auth = Authenticator(secret=SECRET)
    monkeypatch.setattr(Authenticator, "CACHE_SIZE", 3)
    tokens = [auth.issue(f"u{i}") for i in range(5)]
    for t in tokens:
        auth.verify(t)
    assert list(auth._verified) == tokens[-3:]


def test_a_garbage_bearer_token_is_called_malformed_not_an_unknown_key() -> None:
    auth = Authenticator(secret=SECRET)
    for garbage in ("garbage", "not-a-token-at-all", "a.b"):
        with pytest.raises(Unauthenticated, match="malformed bearer token: not a JWT"):
            auth.authenticate(f"Bearer {garbage}")
    with pytest.raises(Unauthenticated, match="malformed token: not a readable JWT"):
        auth.authenticate("Bearer a.b.c")
    keyed = Authenticator(secret=SECRET, api_keys=parse_api_keys("svc:" + "k" * 20))
    with pytest.raises(Unauthenticated, match=r"neither a JWT .* nor a configured API key"):
        keyed.authenticate("Bearer garbage")
    assert keyed.authenticate(f"Bearer {'k' * 20}").sub == "svc"
    # The X-API-Key header is only ever a key: there the answer stays "unknown API key".
    with pytest.raises(Unauthenticated, match="unknown API key"):
        keyed.authenticate(None, "garbage")


def test_load_secret_reads_and_never_creates(tmp_path: Path) -> None:
    from sessionhub.auth import load_secret

    assert load_secret(tmp_path / "nothing") is None
    assert not (tmp_path / "nothing").exists()
    secret, _ = load_or_create_secret(tmp_path / "d")
    assert load_secret(tmp_path / "d") == secret


def test_the_documented_defaults() -> None:
    """README and `sessionhub --help` state these; keep them in step."""
    from sessionhub.auth import DEFAULT_TTL, LEEWAY, MIN_API_KEY_CHARS

    assert timedelta(days=30) == DEFAULT_TTL and LEEWAY == 30 and MIN_API_KEY_CHARS == 16
    auth = Authenticator(secret=SECRET)
    claims = jwt.decode(auth.issue("a"), SECRET, algorithms=["HS256"])
    assert claims["exp"] - claims["iat"] == 30 * 86400
    parse_api_keys("svc:" + "k" * 16)
    with pytest.raises(ValueError, match="16\\+ characters"):
        parse_api_keys("svc:" + "k" * 15)
