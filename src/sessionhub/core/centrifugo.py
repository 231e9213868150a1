"""The Centrifugo client protocol (JSON, v2), sans-I/O: commands in, replies and pushes out.

A frame carries one or more JSON objects separated by newlines, in both directions. A command
is ``{"id": 1, "<method>": {...params}}``; its reply is ``{"id": 1, "<method>": {...result}}``
or ``{"id": 1, "error": {"code": 103, "message": "permission denied"}}``. Pushes have no id:
``{"push": {"channel": "sessions", "pub": {"data": {...}, "offset": 7}}}``. The empty object
``{}`` is a ping from the server and the pong from the client.

This module parses and validates commands and encodes replies and pushes; it performs no I/O
and keeps no clock. Publication data is embedded as the already encoded JSON bytes, so an
event is serialised once and the same bytes go to every subscriber.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from typing import Any

import orjson

from . import codes
from .codes import Code

#: The methods of the protocol that a client may send. ``send`` and ``rpc`` are parsed so the
#: reply can say "method not found" rather than "bad request".
METHODS = (
    "connect",
    "subscribe",
    "unsubscribe",
    "publish",
    "presence",
    "presence_stats",
    "history",
    "ping",
    "send",
    "rpc",
    "refresh",
    "sub_refresh",
)

#: The ping the server sends and the pong a client answers: an empty object.
PING = b"{}"

#: Subscribe flag bit (``flag``): answer error 112 instead of ``recovered: false``.
FLAG_REJECT_UNRECOVERED = 2

_TOPIC = re.compile(r"^[^\s,\x00-\x1f\x7f]{1,255}$")


class ProtocolError(Exception):
    """The client broke the protocol; the connection ends with ``code`` (a disconnect)."""

    def __init__(self, code: Code, detail: str = "") -> None:
        super().__init__(detail or code.message)
        self.code = code
        self.detail = detail or code.message


class CommandError(Exception):
    """One command failed; its reply carries ``code`` and the connection stays open."""

    def __init__(self, code: Code, detail: str = "") -> None:
        super().__init__(detail or code.message)
        self.code = code
        self.detail = detail or code.message


@dataclass(frozen=True, slots=True)
class Command:
    """One parsed command. ``method`` is ``""`` for the empty object (a pong)."""

    id: int
    method: str
    params: dict[str, Any]


def valid_topic(topic: object) -> bool:
    """A topic name: 1-255 characters, no whitespace, commas or control characters."""
    return isinstance(topic, str) and _TOPIC.match(topic) is not None


def parse_frame(payload: bytes | str, *, max_commands: int = 100) -> list[Command]:
    """The commands of one text frame. Raises ``ProtocolError`` (bad request) on malformed
    JSON, a non-object, a missing or bad ``id``, or more than ``max_commands`` commands."""
    if isinstance(payload, str):
        payload = payload.encode()
    out: list[Command] = []
    for line in payload.split(b"\n"):
        if not line.strip():
            continue
        if len(out) >= max_commands:
            raise ProtocolError(codes.BAD_REQUEST_DISCONNECT, "too many commands in one frame")
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError:
            raise ProtocolError(codes.BAD_REQUEST_DISCONNECT, "a command is not JSON") from None
        out.append(_command(obj))
    return out


def _command(obj: object) -> Command:
    if not isinstance(obj, dict):
        raise ProtocolError(codes.BAD_REQUEST_DISCONNECT, "a command must be a JSON object")
    cid = obj.get("id", 0)
    if not isinstance(cid, int) or isinstance(cid, bool) or cid < 0:
        raise ProtocolError(codes.BAD_REQUEST_DISCONNECT, "command id must be a positive integer")
    for method in METHODS:
        if method in obj:
            params = obj[method]
            if params is None:
                params = {}
            if not isinstance(params, dict):
                raise ProtocolError(codes.BAD_REQUEST_DISCONNECT, f"{method} must be an object")
            if cid == 0 and method not in ("send",):
                raise ProtocolError(codes.BAD_REQUEST_DISCONNECT, f"{method} without an id")
            return Command(cid, method, params)
    if not obj:
        return Command(0, "", {})
    if cid == 0:
        raise ProtocolError(codes.BAD_REQUEST_DISCONNECT, "a command without an id or method")
    # A command id with a method we do not know: answer "method not found".
    return Command(cid, "unknown", {})


# -- parameters -----------------------------------------------------------------------------


def get_str(
    params: dict[str, Any], key: str, *, required: bool = False, max_len: int = 8192
) -> str:
    """A string parameter (``""`` when absent); raises ``CommandError`` (bad request)."""
    v = params.get(key)
    if v is None or v == "":
        if required:
            raise CommandError(codes.BAD_REQUEST, f"{key} is required")
        return ""
    if not isinstance(v, str) or len(v) > max_len:
        raise CommandError(codes.BAD_REQUEST, f"{key} must be a string")
    return v


def get_int(params: dict[str, Any], key: str, default: int = 0) -> int:
    """An integer parameter. Offsets may arrive as strings (protobuf-JSON style)."""
    v = params.get(key, default)
    if isinstance(v, str) and v.isdigit():
        return int(v)
    if not isinstance(v, int) or isinstance(v, bool):
        raise CommandError(codes.BAD_REQUEST, f"{key} must be an integer")
    return v


def get_bool(params: dict[str, Any], key: str) -> bool:
    return params.get(key) is True


def get_channel(params: dict[str, Any]) -> str:
    """The ``channel`` parameter, validated as a topic name (error 102 if it cannot be one)."""
    channel = params.get("channel")
    if channel is None or channel == "":
        raise CommandError(codes.BAD_REQUEST, "channel is required")
    if not valid_topic(channel):
        raise CommandError(codes.UNKNOWN_CHANNEL)
    assert isinstance(channel, str)
    # Interned: every subscriber of a topic keeps its name (its subscription, the node's
    # indexes); parsed afresh from each command, a thousand subscribers would keep a
    # thousand copies of one string.
    return sys.intern(channel)


# -- encoding -------------------------------------------------------------------------------


def _num(value: float) -> int | float:
    return int(value) if float(value).is_integer() else value


def reply(cid: int, method: str, result: dict[str, Any]) -> bytes:
    """``{"id": cid, method: result}``; values may be ``orjson.Fragment`` (raw JSON)."""
    return orjson.dumps({"id": cid, method: result})


def error_reply(cid: int, code: Code, detail: str = "") -> bytes:
    err: dict[str, Any] = {"code": code.code, "message": detail or code.message}
    if code.retry:
        err["temporary"] = True
    return orjson.dumps({"id": cid, "error": err})


def connect_result(
    client: str,
    version: str,
    *,
    ping: float,
    expires_in: float | None = None,
    data: bytes | None = None,
) -> dict[str, Any]:
    result: dict[str, Any] = {"client": client, "version": version}
    if expires_in is not None:
        result["expires"] = True
        result["ttl"] = max(1, int(expires_in))
    if data is not None:
        result["data"] = orjson.Fragment(data)
    if ping > 0:
        result["ping"] = _num(ping)
        result["pong"] = True
    return result


def publication(data: bytes, offset: int, info: dict[str, Any] | None = None) -> dict[str, Any]:
    """A publication object for replies (subscribe recovery, history)."""
    pub: dict[str, Any] = {"data": orjson.Fragment(data)}
    if offset:
        pub["offset"] = offset
    if info:
        pub["info"] = info
    return pub


def subscribe_result(
    *,
    offset: int,
    epoch: str,
    recoverable: bool = True,
    was_recovering: bool = False,
    recovered: bool = False,
    publications: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    result: dict[str, Any] = {
        "recoverable": recoverable,
        "positioned": True,
        "epoch": epoch,
        "offset": offset,
    }
    if was_recovering:
        result["was_recovering"] = True
        result["recovered"] = recovered
    if publications:
        result["publications"] = publications
    return result


def client_info(client: str, user: str, conn_info: bytes | None = None) -> dict[str, Any]:
    info: dict[str, Any] = {"user": user, "client": client}
    if conn_info is not None:
        info["conn_info"] = orjson.Fragment(conn_info)
    return info


def pub_push(channel: str, data: bytes, offset: int) -> bytes:
    """The push of one publication; built once per publication and topic, by concatenation
    so the event's encoded bytes are copied, not parsed and encoded again."""
    return b"".join(
        (
            b'{"push":{"channel":',
            orjson.dumps(channel),
            b',"pub":{"data":',
            data,
            b',"offset":',
            str(offset).encode(),
            b"}}}",
        )
    )


def join_push(channel: str, info: dict[str, Any]) -> bytes:
    return orjson.dumps({"push": {"channel": channel, "join": {"info": info}}})


def leave_push(channel: str, info: dict[str, Any]) -> bytes:
    return orjson.dumps({"push": {"channel": channel, "leave": {"info": info}}})


def unsubscribe_push(channel: str, code: Code) -> bytes:
    return orjson.dumps(
        {"push": {"channel": channel, "unsubscribe": {"code": code.code, "reason": code.message}}}
    )


def disconnect_push(code: Code, reason: str = "") -> bytes:
    return orjson.dumps(
        {
            "push": {
                "disconnect": {
                    "code": code.code,
                    "reason": reason or code.message,
                    "reconnect": code.retry,
                }
            }
        }
    )
