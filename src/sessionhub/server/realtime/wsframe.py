"""WebSocket (RFC 6455) handshake and framing, sans-I/O, for the server side only.

Small on purpose: the server never masks, never fragments what it sends and never
compresses, so a message is framed once (a header in front of the payload) and the same
bytes can be written to every connection. Incoming frames are parsed with fragmentation,
control frames and size limits handled.
"""

from __future__ import annotations

import base64
import hashlib
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

_apply_mask_c: Callable[[bytes, bytes], Any] | None
try:  # The C helper that ships with websockets (a uvicorn[standard] dependency).
    from websockets.speedups import apply_mask as _apply_mask_c
except ImportError:  # pragma: no cover - pure Python fallback
    _apply_mask_c = None

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

OP_CONT = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA

# Close codes of the WebSocket protocol itself (1000-2999).
CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_PROTOCOL_ERROR = 1002
CLOSE_INVALID_DATA = 1007
CLOSE_TOO_BIG = 1009


class WebSocketError(Exception):
    """The peer broke RFC 6455; close the connection with ``code``."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def apply_mask(data: bytes, mask: bytes) -> bytes:
    if _apply_mask_c is not None:
        return bytes(_apply_mask_c(data, mask))
    n = len(data)
    key = int.from_bytes((mask * (n // 4 + 1))[:n], "big")
    return (int.from_bytes(data, "big") ^ key).to_bytes(n, "big")


def frame(opcode: int, payload: bytes) -> bytes:
    """One final, unmasked frame (what a server sends)."""
    n = len(payload)
    if n < 126:
        return bytes((0x80 | opcode, n)) + payload
    if n < 65536:
        return struct.pack("!BBH", 0x80 | opcode, 126, n) + payload
    return struct.pack("!BBQ", 0x80 | opcode, 127, n) + payload


def text(payload: bytes) -> bytes:
    """A text frame around UTF-8 ``payload``."""
    return frame(OP_TEXT, payload)


def close(code: int, reason: str = "") -> bytes:
    """A close frame with ``code`` and a reason cut to fit the 125-byte control limit."""
    body = struct.pack("!H", code) + reason.encode()[:123]
    return frame(OP_CLOSE, body)


def accept_key(key: str) -> str:
    return base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()


@dataclass(slots=True)
class Request:
    """The parts of an HTTP upgrade request the handshake needs."""

    method: str
    target: str
    headers: dict[str, str]

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]


def parse_request(raw: bytes) -> Request:
    """Parse an HTTP/1.1 request head (up to and including the blank line)."""
    head = raw.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    lines = head.split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3:
        raise WebSocketError(CLOSE_PROTOCOL_ERROR, "bad request line")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep:
            raise WebSocketError(CLOSE_PROTOCOL_ERROR, "bad header line")
        name = name.strip().lower()
        value = value.strip()
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return Request(parts[0], parts[1], headers)


def handshake_response(request: Request, *, server: str = "sessionhub") -> bytes:
    """The ``101 Switching Protocols`` answer, or raise ``WebSocketError`` for a request
    that is not a valid WebSocket upgrade. No subprotocol is selected: this server speaks
    the JSON protocol, which needs none (a protobuf-only client then closes by itself)."""
    h = request.headers
    if request.method != "GET":
        raise WebSocketError(CLOSE_PROTOCOL_ERROR, "WebSocket upgrade needs GET")
    if "websocket" not in h.get("upgrade", "").lower():
        raise WebSocketError(CLOSE_PROTOCOL_ERROR, "missing Upgrade: websocket")
    if "upgrade" not in h.get("connection", "").lower():
        raise WebSocketError(CLOSE_PROTOCOL_ERROR, "missing Connection: Upgrade")
    if h.get("sec-websocket-version") != "13":
        raise WebSocketError(CLOSE_PROTOCOL_ERROR, "Sec-WebSocket-Version must be 13")
    key = h.get("sec-websocket-key", "")
    try:
        if len(base64.b64decode(key, validate=True)) != 16:
            raise ValueError
    except ValueError:
        raise WebSocketError(CLOSE_PROTOCOL_ERROR, "bad Sec-WebSocket-Key") from None
    return (
        "HTTP/1.1 101 Switching Protocols\r\n"
        "Upgrade: websocket\r\n"
        "Connection: Upgrade\r\n"
        f"Sec-WebSocket-Accept: {accept_key(key)}\r\n"
        f"Server: {server}\r\n\r\n"
    ).encode()


_PHRASES = {
    400: "Bad Request",
    403: "Forbidden",
    408: "Request Timeout",
    414: "URI Too Long",
    429: "Too Many Requests",
    431: "Request Header Fields Too Large",
}


def reject_response(status: int, reason: str, *, retry_after: int | None = None) -> bytes:
    """An HTTP error answer to an upgrade that will not become a WebSocket."""
    body = reason.encode()
    extra = f"Retry-After: {retry_after}\r\n" if retry_after is not None else ""
    return (
        f"HTTP/1.1 {status} {_PHRASES.get(status, 'Error')}\r\n"
        f"Content-Type: text/plain; charset=utf-8\r\nContent-Length: {len(body)}\r\n"
        f"{extra}Connection: close\r\n\r\n"
    ).encode() + body


class FrameParser:
    """Turns received bytes into messages: ``(opcode, payload)`` for complete text/binary
    messages (fragments joined) and for each control frame (ping, pong, close).

    Between messages a parser holds nothing but ``max_size``, so connections may share one
    (``shared``) and take one of their own (``detach``) only while a frame or a fragmented
    message is incomplete: an idle connection then keeps no parser (72 bytes)."""

    __slots__ = ("_buf", "_frag_op", "_frag_size", "_fragments", "is_shared", "max_size")

    def __init__(self, max_size: int = 1 << 20) -> None:
        self.max_size = max_size
        #: Whether this is the parser ``shared`` gives out.
        self.is_shared = False
        self._buf = b""
        #: The fragments of a message being received; None between messages (most
        #: connections never fragment: no list per idle connection).
        self._fragments: list[bytes] | None = None
        self._frag_op = 0
        self._frag_size = 0

    @property
    def idle(self) -> bool:
        """Nothing is held: the last byte fed ended a frame, and no message is fragmented."""
        return not self._buf and self._fragments is None

    def reset(self) -> None:
        """Forget any partial frame or message (after an error, or once detached)."""
        self._buf = b""
        self._fragments = None
        self._frag_op = self._frag_size = 0

    def detach(self) -> FrameParser:
        """A parser of its own holding this one's partial frame or message; this one is
        left idle (the caller was sharing it)."""
        own = FrameParser(self.max_size)
        own._buf, own._fragments = self._buf, self._fragments
        own._frag_op, own._frag_size = self._frag_op, self._frag_size
        self.reset()
        return own

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        buf = self._buf + data if self._buf else data
        out: list[tuple[int, bytes]] = []
        pos = 0
        end = len(buf)
        while end - pos >= 2:
            b0 = buf[pos]
            b1 = buf[pos + 1]
            if b0 & 0x70:
                raise WebSocketError(CLOSE_PROTOCOL_ERROR, "reserved bits set")
            if not b1 & 0x80:
                raise WebSocketError(CLOSE_PROTOCOL_ERROR, "client frames must be masked")
            fin = b0 & 0x80
            op = b0 & 0x0F
            n = b1 & 0x7F
            hdr = 2
            if n == 126:
                if end - pos < 4:
                    break
                n = (buf[pos + 2] << 8) | buf[pos + 3]
                hdr = 4
            elif n == 127:
                if end - pos < 10:
                    break
                (n,) = struct.unpack_from("!Q", buf, pos + 2)
                hdr = 10
            if n > self.max_size:
                raise WebSocketError(CLOSE_TOO_BIG, "message too big")
            if end - pos < hdr + 4 + n:
                break
            mask = buf[pos + hdr : pos + hdr + 4]
            start = pos + hdr + 4
            payload = apply_mask(buf[start : start + n], mask)
            pos = start + n
            if op >= 0x8:
                if not fin or n > 125:
                    raise WebSocketError(CLOSE_PROTOCOL_ERROR, "bad control frame")
                if op not in (OP_CLOSE, OP_PING, OP_PONG):
                    raise WebSocketError(CLOSE_PROTOCOL_ERROR, "unknown control opcode")
                out.append((op, payload))
                continue
            if op == OP_CONT:
                if not self._fragments:
                    raise WebSocketError(CLOSE_PROTOCOL_ERROR, "continuation without a start")
            elif op in (OP_TEXT, OP_BINARY):
                if self._fragments:
                    raise WebSocketError(CLOSE_PROTOCOL_ERROR, "expected a continuation")
                if fin:
                    out.append((op, payload))
                    continue
                self._frag_op = op
                self._frag_size = 0
            else:
                raise WebSocketError(CLOSE_PROTOCOL_ERROR, "unknown opcode")
            self._frag_size += n
            if self._frag_size > self.max_size:
                raise WebSocketError(CLOSE_TOO_BIG, "message too big")
            fragments = self._fragments
            if fragments is None:
                fragments = self._fragments = []
            fragments.append(payload)
            if fin:
                out.append((self._frag_op, b"".join(fragments)))
                self._fragments = None
        self._buf = buf[pos:] if pos < end else b""
        return out


class _Shared(threading.local):
    """The shared parsers of one thread, by ``max_size``."""

    def __init__(self) -> None:
        self.parsers: dict[int, FrameParser] = {}


_SHARED = _Shared()


def shared(max_size: int) -> FrameParser:
    """The parser every idle connection with this ``max_size`` on this thread feeds through.
    Sharing is sound because a feed runs whole on the thread's event loop and its caller
    detaches (or resets) the parser before the next one: it is idle whenever another
    connection takes it. One per thread, since servers on event loops in other threads of the
    process (an embedding, tests) would otherwise feed it at once and interleave."""
    parsers = _SHARED.parsers
    parser = parsers.get(max_size)
    if parser is None:
        parser = parsers[max_size] = FrameParser(max_size)
        parser.is_shared = True
    return parser


def parse_close(payload: bytes) -> tuple[int, str]:
    if len(payload) >= 2:
        (code,) = struct.unpack_from("!H", payload)
        return code, payload[2:].decode("utf-8", "replace")
    return 1005, ""
