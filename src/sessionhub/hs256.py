"""HS256 JSON Web Tokens (RFC 7519, signed with HMAC-SHA-256 as RFC 7515 and 7518 say),
made and checked with the standard library.

Why not PyJWT for these: importing PyJWT imports ``cryptography`` for the public-key
algorithms, about 11 MB of resident memory that a server signing with a secret never uses.
PyJWT still checks RS256 tokens (``auth.py`` imports it only for a configured public key),
and the tests hold this module's verdicts to PyJWT's on the same tokens.

The checks are PyJWT 2's ``decode`` with ``require=["sub"]`` and no audience or issuer
asked for: the signature; ``iat``, ``nbf`` and ``exp`` numbers (a numeric string too, as
PyJWT's ``int()``), ``iat`` and ``nbf`` not in the future and ``exp`` not past, each by
``leeway`` seconds; no non-empty ``aud`` (this server has no audience to match); ``sub``
present and a string, ``jti`` a string. Stricter than PyJWT on purpose: exactly three
segments of strict base64url, and a header with ``crit`` (an extension this code does not
know, RFC 7515 section 4.1.11) or ``b64`` (RFC 7797) is refused.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import time
from collections.abc import Mapping
from datetime import datetime
from typing import Any

_HEADER = base64.urlsafe_b64encode(b'{"alg":"HS256","typ":"JWT"}').rstrip(b"=")
_SEGMENT = re.compile(r"[A-Za-z0-9_-]*")
# The standard library's JSON, as PyJWT's: the same numbers (an integer beyond 64 bits stays
# one) and the same documents read.
_JSON = json.JSONEncoder(separators=(",", ":"))
#: The numeric date claims PyJWT turns from a ``datetime`` into seconds when encoding.
_DATES = ("exp", "iat", "nbf")


class TokenError(Exception):
    """A token that is not accepted; the message says why (PyJWT's words where it has
    them)."""


class Expired(TokenError):
    """A token whose ``exp`` has passed (beyond the leeway)."""


def encode(claims: Mapping[str, Any], secret: str) -> str:
    """A compact HS256 JWT of ``claims`` (a ``datetime`` in ``exp``, ``iat`` or ``nbf``
    becomes its Unix time, as PyJWT does)."""
    body = dict(claims)
    for name in _DATES:
        value = body.get(name)
        if isinstance(value, datetime):
            body[name] = int(value.timestamp())
    payload = base64.urlsafe_b64encode(_JSON.encode(body).encode()).rstrip(b"=")
    signing_input = _HEADER + b"." + payload
    signature = hmac.new(secret.encode(), signing_input, hashlib.sha256).digest()
    return (signing_input + b"." + base64.urlsafe_b64encode(signature).rstrip(b"=")).decode()


def header(token: str) -> dict[str, Any]:
    """The token's header, unverified (to choose the key by ``alg``)."""
    return _object(_bytes(_split(token)[0], "header"), "header")


def decode(
    token: str, secret: str, *, leeway: float = 0.0, now: float | None = None
) -> dict[str, Any]:
    """The claims of an HS256 token signed with ``secret``, checked as the module says."""
    first, second, third = _split(token)
    head = _object(_bytes(first, "header"), "header")
    payload, signature = _bytes(second, "payload"), _bytes(third, "signature")
    if head.get("alg") != "HS256":
        raise TokenError("The specified alg value is not allowed")
    if "crit" in head or "b64" in head:
        raise TokenError("Unsupported critical header extension")
    # The segments are checked base64url above, so ASCII.
    signing_input = f"{first}.{second}".encode("ascii")
    expected = hmac.new(secret.encode(), signing_input, hashlib.sha256).digest()
    if not hmac.compare_digest(expected, signature):
        raise TokenError("Signature verification failed")
    claims = _object(payload, "payload")
    _check(claims, time.time() if now is None else now, leeway)
    return claims


def _check(claims: dict[str, Any], now: float, leeway: float) -> None:
    if claims.get("sub") is None:
        raise TokenError('Token is missing the "sub" claim')
    if "iat" in claims and _seconds(claims, "iat", "Issued At") > now + leeway:
        raise TokenError("The token is not yet valid (iat)")
    if "nbf" in claims and _seconds(claims, "nbf", "Not Before") > now + leeway:
        raise TokenError("The token is not yet valid (nbf)")
    if "exp" in claims and _seconds(claims, "exp", "Expiration Time") <= now - leeway:
        raise Expired("Signature has expired")
    if claims.get("aud"):
        raise TokenError("Invalid audience")
    if not isinstance(claims["sub"], str):
        raise TokenError("Subject must be a string")
    if "jti" in claims and not isinstance(claims["jti"], str):
        raise TokenError("JWT ID must be a string")


def _seconds(claims: dict[str, Any], name: str, title: str) -> int:
    try:
        return int(claims[name])
    except (ValueError, TypeError, OverflowError):
        raise TokenError(f"{title} claim ({name}) must be an integer.") from None


def _split(token: str) -> tuple[str, str, str]:
    parts = token.split(".")
    if len(parts) != 3:
        raise TokenError("Not enough segments" if len(parts) < 3 else "Too many segments")
    return parts[0], parts[1], parts[2]


def _bytes(segment: str, what: str) -> bytes:
    # Strict base64url without padding: urlsafe_b64decode would skip stray characters.
    if not _SEGMENT.fullmatch(segment) or len(segment) % 4 == 1:
        raise TokenError(f"Invalid {what} padding")
    try:
        return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except (binascii.Error, ValueError):
        raise TokenError(f"Invalid {what} padding") from None


def _object(data: bytes, what: str) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except (ValueError, RecursionError):  # RecursionError: arrays nested past the limit
        raise TokenError(f"Invalid {what} string: not JSON") from None
    if not isinstance(value, dict):
        raise TokenError(f"Invalid {what} string: must be a json object")
    return value
