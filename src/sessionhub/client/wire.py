"""The realtime protocol's wire format (Centrifugo client protocol v2, JSON): how a command
is framed, how a frame splits into messages, how a reply and a close are read.

Pure functions, kept apart from the connection so the socket code reads as what it does
with the messages, not how they are spelled.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any, Final

import orjson
from websockets.exceptions import ConnectionClosed

from ..core import codes
from .realtime_errors import CommandFailed, command_error

log = logging.getLogger("sessionhub.client")

#: Transport close codes with no protocol meaning (normal closure, none sent, abnormal).
_TRANSPORT_ONLY = frozenset({1000, 1005, 1006})
#: Used when the connection fails before any close code was exchanged.
ABNORMAL_CLOSURE: Final = 1006
#: The answer to the server's ping (an empty message): an empty message.
PONG: Final = "{}"


def encode(cid: int, method: str, params: dict[str, Any]) -> str:
    """The frame of command ``cid``: ``{"id": cid, method: params}``."""
    return orjson.dumps({"id": cid, method: params}).decode()


def messages(frame: str | bytes) -> Iterator[dict[str, Any]]:
    """The messages of one frame (the server batches several, one per line), in order.

    A generator on purpose: the caller handles each message before the next line is read,
    as if they had come one frame each. A line that is not JSON is logged and skipped."""
    text = frame.decode() if isinstance(frame, bytes) else frame
    for line in text.split("\n"):
        if not line.strip():
            continue
        try:
            msg = orjson.loads(line)
        except orjson.JSONDecodeError:
            log.warning("ignoring a malformed message from the server")
            continue
        if isinstance(msg, dict):
            yield msg


def reply(msg: dict[str, Any]) -> tuple[dict[str, Any] | None, CommandFailed | None]:
    """A command reply's result and error: the typed error if it has one (and no result),
    else its one object besides ``id`` (``{}`` when there is none)."""
    error = msg.get("error")
    exc = command_error(error) if isinstance(error, dict) else None
    result = None
    if exc is None:
        values = [v for k, v in msg.items() if k != "id" and isinstance(v, dict)]
        result = values[0] if values else {}
    return result, exc


def close_code(exc: ConnectionClosed, disconnect_push: tuple[int, str] | None) -> tuple[int, str]:
    """Why a connection closed: ``(code, reason)`` of the close frame, or of the server's
    ``disconnect`` push (``disconnect_push``) when the frame got lost or said nothing, with
    the table's message when no reason came."""
    code, reason = ABNORMAL_CLOSURE, "connection lost"
    if exc.rcvd is not None:
        code, reason = exc.rcvd.code, exc.rcvd.reason
    if code in _TRANSPORT_ONLY and disconnect_push is not None:
        # The close frame got lost or said nothing; the disconnect push said why.
        code, reason = disconnect_push
    if not reason:
        entry = codes.lookup(code)
        reason = entry.message if entry else ""
    return code, reason
