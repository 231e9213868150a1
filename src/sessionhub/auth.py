"""Authentication: bearer JWTs (HS256 secret or RS256 public key) and API keys for services.

A token carries ``sub`` (the user id) and ``roles`` (for example ``["admin"]``). Tokens this
server issues live 30 days unless told otherwise (``DEFAULT_TTL``); an expired token is still
accepted for ``LEEWAY`` seconds, to forgive clock skew between machines. An API key maps to a
fixed principal and is at least ``MIN_API_KEY_CHARS`` characters long. Scoping (non-admins
see only their own sessions) is done by the hub and core through ``Principal``; this module
only answers "who is calling".
"""

from __future__ import annotations

import hmac
import os
import secrets
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from . import hs256
from .core.errors import Unauthenticated
from .core.principal import Principal

SECRET_FILE = "jwt-secret"
#: Lifetime of an issued token unless the caller says otherwise.
DEFAULT_TTL = timedelta(days=30)
#: Seconds past ``exp`` a token is still accepted (clock skew between machines).
LEEWAY = 30.0
#: API keys shorter than this are refused at start-up: a short key can be guessed.
MIN_API_KEY_CHARS = 16
#: What a JWT looks like, for the messages that refuse something that is not one.
_JWT_SHAPE = "three base64url parts separated by dots, as 'sessionhub token create' prints"


@dataclass(frozen=True, slots=True)
class ApiKey:
    name: str
    key: str
    roles: frozenset[str] = field(default_factory=frozenset)


def parse_api_keys(spec: str) -> list[ApiKey]:
    """``"name:key[:role+role],..."`` -> keys. Roles default to none (a plain service user)."""
    out: list[ApiKey] = []
    for item in filter(None, (x.strip() for x in spec.split(","))):
        parts = item.split(":")
        if len(parts) not in (2, 3) or not parts[0] or len(parts[1]) < MIN_API_KEY_CHARS:
            raise ValueError(
                f"bad API key entry {item!r}: want name:key[:role+role], "
                f"key of {MIN_API_KEY_CHARS}+ characters"
            )
        roles = frozenset(filter(None, parts[2].split("+"))) if len(parts) == 3 else frozenset()
        out.append(ApiKey(parts[0], parts[1], roles))
    return out


def load_secret(data_dir: Path) -> str | None:
    """The HS256 secret kept in the data directory, or None when there is none (never creates
    one: only the server does, on its first start)."""
    path = data_dir / SECRET_FILE
    if not path.is_file():
        return None
    return path.read_text().strip() or None


def load_or_create_secret(data_dir: Path) -> tuple[str, bool]:
    """The HS256 secret kept in the data directory; created (mode 0600) on first start."""
    path = data_dir / SECRET_FILE
    if path.exists():
        return path.read_text().strip(), False
    data_dir.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(48)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secret + "\n")
    return secret, True


class Authenticator:
    """Turns credentials into a ``Principal`` or raises ``Unauthenticated`` (401)."""

    def __init__(
        self,
        *,
        secret: str | None = None,
        public_key: str | None = None,
        api_keys: Iterable[ApiKey] = (),
        leeway: float = LEEWAY,
    ) -> None:
        if not secret and not public_key:
            raise ValueError("configure a JWT secret (HS256) or a public key (RS256)")
        self._secret = secret
        self._public_key = public_key
        self._api_keys = list(api_keys)
        self._leeway = leeway
        # token -> (principal, expiry as a Unix time or None). Clients send the same token
        # on every request; checking its signature once instead of each time makes a
        # heartbeat several times cheaper. Bounded; expired entries are re-verified (and fail).
        self._verified: dict[str, tuple[Principal, float | None]] = {}

    def issue(
        self,
        sub: str,
        roles: Iterable[str] = (),
        ttl: timedelta | None = DEFAULT_TTL,
        now: datetime | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> str:
        """A signed HS256 token (only when this server holds the secret)."""
        if not self._secret:
            raise RuntimeError("this server verifies RS256 tokens and cannot issue them")
        now = now or datetime.now(UTC)
        claims: dict[str, Any] = {
            "sub": sub,
            "roles": sorted(set(roles)),
            "iat": int(now.timestamp()),
        }
        if ttl is not None:
            claims["exp"] = int((now + ttl).timestamp())
        if extra:
            claims.update(extra)
        return hs256.encode(claims, self._secret)

    #: Verified tokens remembered at most.
    CACHE_SIZE = 10_000

    def verify(self, token: str) -> Principal:
        """Check a JWT and return its principal."""
        return self.verify_with_expiry(token)[0]

    def verify_with_expiry(self, token: str) -> tuple[Principal, float | None]:
        """Check a JWT: its principal and its ``exp`` (Unix time; None without one)."""
        hit = self._verified.get(token)
        if hit is not None:
            if hit[1] is None or time.time() <= hit[1] + self._leeway:
                return hit
            del self._verified[token]
        hit = self._verify(token)
        if len(self._verified) >= self.CACHE_SIZE:
            self._verified.pop(next(iter(self._verified)))
        self._verified[token] = hit
        return hit

    def _verify(self, token: str) -> tuple[Principal, float | None]:
        try:
            header = hs256.header(token)
        except hs256.TokenError:
            raise Unauthenticated(f"malformed token: not a readable JWT ({_JWT_SHAPE})") from None
        alg = header.get("alg")
        if alg == "HS256" and self._secret:
            try:
                claims = hs256.decode(token, self._secret, leeway=self._leeway)
            except hs256.Expired:
                raise Unauthenticated("token expired") from None
            except hs256.TokenError as exc:
                raise Unauthenticated(f"invalid token: {exc}") from None
        elif alg == "RS256" and self._public_key:
            claims = self._verify_rs256(token, self._public_key)
        else:
            raise Unauthenticated(f"token algorithm {alg!r} is not accepted here")
        sub = claims.get("sub")
        roles = claims.get("roles", [])
        if not isinstance(sub, str) or not sub:
            raise Unauthenticated("token has no subject")
        if isinstance(roles, str):
            roles = [roles]
        if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
            raise Unauthenticated("token roles must be a list of strings")
        exp = claims.get("exp")
        # The system role is the server's own; a token can never grant it.
        principal = Principal(sub, frozenset(roles) - {"system"})
        return principal, float(exp) if isinstance(exp, int | float) else None

    def _verify_rs256(self, token: str, key: str) -> dict[str, Any]:
        # PyJWT (and with it cryptography, about 11 MB) only where a public key is set.
        import jwt

        try:
            claims: dict[str, Any] = jwt.decode(
                token, key, algorithms=["RS256"], leeway=self._leeway, options={"require": ["sub"]}
            )
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("token expired") from None
        except jwt.PyJWTError as exc:
            raise Unauthenticated(f"invalid token: {exc}") from None
        return claims

    def api_key(self, key: str) -> Principal:
        principal = self._match_key(key)
        if principal is None:
            raise Unauthenticated("unknown API key")
        return principal

    def _match_key(self, key: str) -> Principal | None:
        for k in self._api_keys:
            if hmac.compare_digest(k.key, key):
                return Principal(k.name, k.roles - {"system"})
        return None

    def authenticate(self, authorization: str | None, api_key: str | None = None) -> Principal:
        """From an ``Authorization: Bearer ...`` header or an ``X-API-Key`` header."""
        return self.authenticate_with_expiry(authorization, api_key)[0]

    def authenticate_with_expiry(
        self, authorization: str | None, api_key: str | None = None
    ) -> tuple[Principal, float | None]:
        """As :meth:`authenticate`, with the credential's expiry (a JWT's ``exp``; None for
        API keys): for connections that must end when their credential does."""
        if api_key:
            return self.api_key(api_key), None
        if not authorization:
            raise Unauthenticated("no credentials: send Authorization: Bearer <token> or X-API-Key")
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise Unauthenticated("Authorization must be 'Bearer <token>'")
        value = value.strip()
        if value.count(".") != 2:
            # Not shaped like a JWT: one of our API keys, or garbage. Answering "unknown API
            # key" to someone who pasted a broken token would send them the wrong way.
            principal = self._match_key(value)
            if principal is not None:
                return principal, None
            if self._api_keys:
                raise Unauthenticated(
                    f"malformed bearer token: neither a JWT ({_JWT_SHAPE}) nor a configured API key"
                )
            raise Unauthenticated(f"malformed bearer token: not a JWT ({_JWT_SHAPE})")
        return self.verify_with_expiry(value)
