"""The realtime client's errors, and what a close code or an error reply means to it.

Kept apart from the connection because every layer of the client raises them (a command,
a subscription, the reconnect loop) and because the decision they carry is not the client's
own: every close code and error code goes through :mod:`sessionhub.core.codes`, the table
the server and the docs use too. A code the table calls final (3500-3999, 4500-4999: a bad
token, a malformed frame, ...) stops the client with :class:`Disconnected`; any other code
(the server restarting, the network failing, a slow reader cut off) is worth reconnecting.
"""

from __future__ import annotations

from typing import Any

from ..core import codes


class RealtimeError(Exception):
    """Base of the realtime client's errors."""


class ConnectionLost(RealtimeError):
    """The connection went away while a command waited for its reply; the client
    reconnects by itself, so the command may be sent again."""


class CommandFailed(RealtimeError):
    """The server answered one command with an error; the connection stays open."""

    def __init__(self, code: int, message: str, *, temporary: bool = False) -> None:
        super().__init__(f"{code} {message}")
        self.code = code
        self.message = message
        #: Worth retrying (the table's ``retry`` for error codes, or the server's flag).
        self.temporary = temporary

    @property
    def entry(self) -> codes.Code | None:
        """The entry of :mod:`sessionhub.core.codes` for this error, if it is one of ours."""
        return codes.lookup(self.code, codes.Family.ERROR)


class PermissionDenied(CommandFailed):
    """Error 103: this principal may not follow the topic (the connection stays usable)."""


class Unsubscribed(RealtimeError):
    """The server ended one subscription for good (an ``unsubscribe`` push below 2500)."""

    def __init__(self, topic: str, code: int, reason: str) -> None:
        super().__init__(f"{topic}: unsubscribed with {code} {reason}")
        self.topic = topic
        self.code = code
        self.reason = reason


class Disconnected(RealtimeError):
    """The client stopped: a final disconnect code, or reconnecting failed ``attempts``
    times in a row (``gave_up``). ``code``/``reason`` are the last close's."""

    def __init__(self, code: int, reason: str, *, gave_up: bool = False, attempts: int = 0) -> None:
        what = f"gave up after {attempts} attempts; last close" if gave_up else "disconnected"
        super().__init__(f"{what}: {code} {reason}".rstrip())
        self.code = code
        self.reason = reason
        self.gave_up = gave_up
        self.attempts = attempts
        #: What :mod:`sessionhub.core.codes` says about ``code``.
        self.reconnect = should_reconnect(code)


def command_error(error: dict[str, Any]) -> CommandFailed:
    """The typed error for a reply's ``error`` object."""
    code = int(error.get("code", codes.INTERNAL.code))
    entry = codes.lookup(code, codes.Family.ERROR)
    message = str(error.get("message") or (entry.message if entry else "error"))
    temporary = bool(error.get("temporary")) or bool(entry and entry.retry)
    cls = PermissionDenied if code == codes.PERMISSION_DENIED.code else CommandFailed
    return cls(code, message, temporary=temporary)


def should_reconnect(code: int) -> bool:
    """Whether a connection closed with ``code`` is worth reconnecting: the shared table's
    answer (:func:`sessionhub.core.codes.reconnects`), nothing of our own."""
    return codes.reconnects(code)
