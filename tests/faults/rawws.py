"""A raw WebSocket client for abuse tests: it sends what a well-behaved library never would
(an unmasked frame, reserved bits, a close code 999, a head dribbled byte by byte) and reads
what the server answers, with every wait bounded."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import struct
import time

from sessionhub.server.realtime import wsframe

UPGRADE = (
    "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
    "Sec-WebSocket-Key: {key}\r\n"
)


def upgrade_head(path: str, *, host: str = "127.0.0.1", extra: str = "") -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET {path} HTTP/1.1\r\nHost: {host}\r\n" + UPGRADE.format(key=key) + extra + "\r\n"
    ).encode()


def client_frame(
    opcode: int, payload: bytes, *, fin: bool = True, mask: bool = True, rsv: int = 0
) -> bytes:
    """One frame as a client sends it (masked unless told otherwise)."""
    head = bytes([(0x80 if fin else 0) | (rsv << 4) | opcode])
    n = len(payload)
    bit = 0x80 if mask else 0
    if n < 126:
        head += bytes([bit | n])
    elif n < 65536:
        head += bytes([bit | 126]) + struct.pack("!H", n)
    else:
        head += bytes([bit | 127]) + struct.pack("!Q", n)
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + wsframe.apply_mask(payload, key)


def close_frame(code: int | None, reason: bytes = b"") -> bytes:
    body = b"" if code is None else struct.pack("!H", code) + reason
    return client_frame(wsframe.OP_CLOSE, body)


class RawSocket:
    """One TCP connection to the server; ``open`` sends an upgrade and reads the answer."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.status = 0
        self.head = b""
        #: Answer the server's pings while reading (a live transport); False: stay silent.
        self.pong = True
        self._parser = _ServerFrames()

    @classmethod
    async def connect(cls, port: int) -> RawSocket:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port, limit=1 << 24), 5
        )
        return cls(reader, writer)

    @classmethod
    async def open(cls, port: int, path: str, *, extra: str = "", wait: float = 5) -> RawSocket:
        sock = await cls.connect(port)
        sock.writer.write(upgrade_head(path, extra=extra))
        await sock.read_head(wait)
        return sock

    async def read_head(self, wait: float = 5) -> int:
        """The status of the server's answer head (0 if it closed without one)."""
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError, TimeoutError):
            async with asyncio.timeout(wait):
                self.head = await self.reader.readuntil(b"\r\n\r\n")
        if self.head.startswith(b"HTTP/1.1 "):
            self.status = int(self.head[9:12])
        return self.status

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    async def frames(self, wait: float = 5) -> list[tuple[int, bytes]]:
        """Frames the server sends until it closes or ``wait`` passes."""
        out: list[tuple[int, bytes]] = []
        deadline = time.monotonic() + wait
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while (left := deadline - time.monotonic()) > 0:
                try:
                    data = await asyncio.wait_for(self.reader.read(1 << 16), left)
                except TimeoutError:
                    break
                if not data:
                    break
                for op, payload in self._parser.feed(data):
                    if op == wsframe.OP_PING and self.pong:
                        self.send(client_frame(wsframe.OP_PONG, payload))
                        continue
                    out.append((op, payload))
                if any(op == wsframe.OP_CLOSE for op, _ in out):
                    break
        return out

    async def close_code(self, wait: float = 5) -> int | None:
        """The code of the server's close frame (None: it sent none within ``wait``)."""
        for op, payload in await self.frames(wait):
            if op == wsframe.OP_CLOSE:
                return wsframe.parse_close(payload)[0] if payload else 1005
        return None

    async def closed(self, wait: float = 5) -> bool:
        """Whether the server closed the TCP connection within ``wait`` seconds."""
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            async with asyncio.timeout(wait):
                while await self.reader.read(1 << 16):
                    pass
            return True
        return self.reader.at_eof()

    def abort(self) -> None:
        self.writer.transport.abort()


class _ServerFrames:
    """Unmasked frames as the server sends them."""

    def __init__(self) -> None:
        self.buf = b""

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        self.buf += data
        out = []
        while len(self.buf) >= 2:
            op, n, pos = self.buf[0] & 0x0F, self.buf[1] & 0x7F, 2
            if n == 126:
                if len(self.buf) < 4:
                    break
                n, pos = struct.unpack_from("!H", self.buf, 2)[0], 4
            elif n == 127:
                if len(self.buf) < 10:
                    break
                n, pos = struct.unpack_from("!Q", self.buf, 2)[0], 10
            if len(self.buf) < pos + n:
                break
            out.append((op, self.buf[pos : pos + n]))
            self.buf = self.buf[pos + n :]
        return out
