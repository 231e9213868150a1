"""The one table of realtime error and disconnect codes.

The numbers are the Centrifugo client protocol's, so the official SDKs react to them as they
would against Centrifugo. Three families:

* **error codes** (100-199) answer one command (``{"id": 3, "error": {"code": 103, ...}}``);
  the connection stays open. ``temporary`` errors are worth retrying.
* **unsubscribe codes** (2000-2999) end one subscription (an ``unsubscribe`` push); below 2500
  the client stays unsubscribed, from 2500 it subscribes again.
* **disconnect codes** (3000-4999) end the connection (a ``disconnect`` push and a WebSocket
  close frame with the same code). 3000-3499 and 4000-4499 mean "reconnect"; 3500-3999 and
  4500-4999 are final: the client must not reconnect without a change (a new token, ...).

The server, ``docs/realtime.md`` (generated from :func:`markdown_table`) and the Python client
all read this module, so a code means the same thing everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Family(StrEnum):
    ERROR = "error"
    UNSUBSCRIBE = "unsubscribe"
    DISCONNECT = "disconnect"


@dataclass(frozen=True, slots=True)
class Code:
    """One protocol code: its number, the message sent with it, and what the client does."""

    code: int
    name: str
    message: str
    family: Family
    #: errors: retry the command; unsubscribe: subscribe again; disconnect: reconnect.
    retry: bool
    #: when the server uses it, in one line (for the docs).
    when: str


def _e(code: int, name: str, message: str, when: str, *, temporary: bool = False) -> Code:
    return Code(code, name, message, Family.ERROR, temporary, when)


def _u(code: int, name: str, message: str, when: str) -> Code:
    return Code(code, name, message, Family.UNSUBSCRIBE, code >= 2500, when)


def _d(code: int, name: str, message: str, when: str) -> Code:
    return Code(code, name, message, Family.DISCONNECT, reconnects(code), when)


def reconnects(code: int) -> bool:
    """Whether a client that was disconnected with ``code`` should reconnect.

    Codes below 3000 are the transport's own (1000-2999: the network, a proxy, a restart):
    reconnect. The protocol's terminal ranges are 3500-3999 and 4500-4999.
    """
    return not (3500 <= code < 4000 or 4500 <= code < 5000)


# -- errors: the reply to one command --------------------------------------------------------
INTERNAL = _e(100, "internal", "internal server error", "the server failed", temporary=True)
UNAUTHORIZED = _e(101, "unauthorized", "unauthorized", "connect without a token")
UNKNOWN_CHANNEL = _e(102, "unknown_channel", "unknown channel", "a topic name that is not ours")
PERMISSION_DENIED = _e(
    103, "permission_denied", "permission denied", "subscribe/history/presence/publish refused"
)
METHOD_NOT_FOUND = _e(104, "method_not_found", "method not found", "a command we do not serve")
ALREADY_SUBSCRIBED = _e(
    105, "already_subscribed", "already subscribed", "a second subscribe to one topic"
)
LIMIT_EXCEEDED = _e(106, "limit_exceeded", "limit exceeded", "too many subscriptions")
BAD_REQUEST = _e(107, "bad_request", "bad request", "a command with missing or wrong fields")
NOT_AVAILABLE = _e(108, "not_available", "not available", "a feature off for this topic")
TOKEN_EXPIRED = _e(
    109, "token_expired", "token expired", "connect/refresh with an expired token (SDKs renew)"
)
EXPIRED = _e(110, "expired", "expired", "the connection expired")
TOO_MANY_REQUESTS = _e(
    111, "too_many_requests", "too many requests", "rate limited", temporary=True
)
UNRECOVERABLE_POSITION = _e(
    112,
    "unrecoverable_position",
    "unrecoverable position",
    "history since a lost position, or subscribe with flag 2 that cannot recover",
)

# -- unsubscribe pushes -----------------------------------------------------------------------
UNSUBSCRIBE_SERVER = _u(2000, "server_unsubscribe", "server unsubscribe", "access ended")
SESSION_DELETED = _u(
    2001,
    "session_deleted",
    "session deleted",
    "the session of a session:<id> topic was deleted (after its session.deleted publication)",
)
UNSUBSCRIBE_INSUFFICIENT = _u(
    2500, "insufficient_state", "insufficient state", "a gap was detected: resubscribe"
)

# -- disconnects ------------------------------------------------------------------------------
CONNECTION_CLOSED = _d(3000, "connection_closed", "connection closed", "closed without advice")
SHUTDOWN = _d(3001, "shutdown", "shutdown", "the server is stopping")
SERVER_ERROR = _d(3004, "server_error", "internal server error", "the server failed")
CONNECTION_EXPIRED = _d(
    3005, "expired", "connection expired", "the token expired and was not refreshed"
)
SLOW = _d(3008, "slow", "slow", "the client did not read fast enough (send queue full)")
WRITE_ERROR = _d(3009, "write_error", "write error", "writing to the connection failed")
INSUFFICIENT_STATE = _d(
    3010, "insufficient_state", "insufficient state", "a gap in a stream; recover on reconnect"
)
FORCE_RECONNECT = _d(3011, "force_reconnect", "force reconnect", "the server asks to reconnect")
NO_PONG = _d(3012, "no_pong", "no pong", "no pong within the ping interval")
TOO_MANY_REQUESTS_DISCONNECT = _d(
    3013, "too_many_requests", "too many requests", "too many commands"
)
INVALID_TOKEN = _d(3500, "invalid_token", "invalid token", "connect with a bad or foreign token")
BAD_REQUEST_DISCONNECT = _d(
    3501, "bad_request", "bad request", "a malformed frame, or a command before connect"
)
STALE = _d(3502, "stale", "stale", "no connect command soon enough after opening")
FORCE_DISCONNECT = _d(3503, "force_disconnect", "force disconnect", "the server ends it for good")
CONNECTION_LIMIT = _d(3504, "connection_limit", "connection limit", "too many connections")
CHANNEL_LIMIT = _d(3505, "channel_limit", "channel limit", "too many subscriptions")
INAPPROPRIATE_PROTOCOL = _d(
    3506, "inappropriate_protocol", "inappropriate protocol", "a binary frame on a JSON connection"
)
PERMISSION_DENIED_DISCONNECT = _d(
    3507, "permission_denied", "permission denied", "the connection lost its permission"
)
NOT_AVAILABLE_DISCONNECT = _d(3508, "not_available", "not available", "a feature that is off")
TOO_MANY_ERRORS = _d(3509, "too_many_errors", "too many errors", "too many failed commands")

ALL: tuple[Code, ...] = tuple(v for v in dict(globals()).values() if isinstance(v, Code))
BY_NUMBER: dict[tuple[Family, int], Code] = {(c.family, c.code): c for c in ALL}


def lookup(code: int, family: Family = Family.DISCONNECT) -> Code | None:
    """The table's entry for ``code`` in ``family``, if it is one of ours."""
    return BY_NUMBER.get((family, code))


def markdown_table() -> str:
    """The table as Markdown, for ``docs/realtime.md``."""
    rows = ["| code | family | message | client action | when |", "|---|---|---|---|---|"]
    for c in sorted(ALL, key=lambda c: (c.code, c.family.value)):
        if c.family is Family.ERROR:
            action = "retry" if c.retry else "give up (fix the request)"
        elif c.family is Family.UNSUBSCRIBE:
            action = "subscribe again" if c.retry else "stay unsubscribed"
        else:
            action = "reconnect" if c.retry else "final: do not reconnect"
        rows.append(f"| {c.code} | {c.family.value} | {c.message} | {action} | {c.when} |")
    return "\n".join(rows)


if __name__ == "__main__":  # python -m sessionhub.core.codes > table for docs/realtime.md
    print(markdown_table())
