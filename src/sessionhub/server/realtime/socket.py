"""What every realtime connection is made of, whatever its wire format: the outgoing
message (:class:`Out`, framed once), the engine's side of a socket (:class:`Sink`) and the
upgrade request it was opened with (:class:`Handshake`)."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Protocol
from urllib.parse import parse_qsl

from . import wsframe


class Out:
    """One outgoing message, with its WebSocket frame built once.

    ``shared`` messages (publications, pings, join/leave) are the very same object in every
    subscriber's queue. Replies belong to one connection: those queued in one loop turn are
    collected in one ``Out`` (``parts``) and sealed into one frame, newline-separated, when
    the queue is flushed.
    """

    __slots__ = ("binary", "framed", "parts", "payload", "shared")

    def __init__(self, payload: bytes, *, shared: bool = True, binary: bool = False) -> None:
        self.payload = payload
        self.binary = binary
        self.framed = wsframe.frame(wsframe.OP_BINARY, payload) if binary else wsframe.text(payload)
        self.shared = shared
        self.parts: list[bytes] | None = None

    @classmethod
    def batch(cls, first: bytes) -> Out:
        out = cls.__new__(cls)
        out.payload = b""
        out.framed = b""
        out.shared = False
        out.binary = False
        out.parts = [first]
        return out

    def seal(self) -> None:
        if self.parts is not None:
            self.payload = b"\n".join(self.parts)
            self.framed = wsframe.text(self.payload)
            self.parts = None


class RawWriter(Protocol):
    """What an engine may hand the node for its latency path: an object that writes framed
    bytes straight out (uvloop's transport). The object rather than its bound ``write``:
    a bound method is 80 bytes more per idle connection, and calling through the object
    costs the fan-out loop about a nanosecond per delivery."""

    def write(self, data: bytes, /) -> object: ...


class Sink(Protocol):
    """What an engine (a socket, an SSE response) offers a connection."""

    def write(self, items: list[Out]) -> None:
        """Send ``items`` in order (one write where the engine can)."""

    def write_one(self, item: Out) -> None:
        """Send one item (the latency path of a lone publication)."""

    def buffered(self) -> int:
        """Bytes accepted by ``write`` and not yet handed to the network."""

    def close(self, code: int, reason: str) -> None:
        """Send a close frame after what is queued, then close (abort if it cannot drain)."""

    def ping(self) -> None:
        """Send a protocol-level ping (a WebSocket ping frame), where the engine can."""

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...


#: Request headers a connection keeps after its upgrade (the credentials).
KEPT_HEADERS = ("authorization", "x-api-key")
#: The query or kept headers of a handshake that has none (shared, read-only).
_EMPTY: Mapping[str, str] = MappingProxyType({})
#: Handshakes without a query, kept headers or path parameters, by (path, peer): shared.
_PLAIN: dict[tuple[str, str], Handshake] = {}
_PLAIN_MAX = 4096


@dataclass(frozen=True, slots=True)
class Handshake:
    """The upgrade request a connection was opened with."""

    path: str
    query: Mapping[str, str]
    headers: Mapping[str, str]
    #: The peer's address (for per-address limits), "" when unknown.
    peer: str = ""
    #: Path parameters of the route that matched (``{"session_id": ...}``).
    params: Mapping[str, str] | None = None

    @classmethod
    def from_target(
        cls,
        target: str,
        headers: Mapping[str, str],
        peer: str = "",
        params: Mapping[str, str] | None = None,
    ) -> Handshake:
        """The handshake of an upgrade to ``target``, keeping only the headers a wire reads
        later (``KEPT_HEADERS``): a connection lives for hours, its request head need not."""
        path, _, query = target.partition("?")
        kept = {k: headers[k] for k in KEPT_HEADERS if k in headers} or _EMPTY
        if not query and kept is _EMPTY and params is None:
            # The usual Centrifugo upgrade (its token comes in the connect command): one
            # frozen handshake per path and address, not 72 bytes per connection.
            key = (path, peer)
            plain = _PLAIN.get(key)
            if plain is None:
                if len(_PLAIN) >= _PLAIN_MAX:
                    _PLAIN.clear()  # many addresses: start over (sharing is only a saving)
                plain = _PLAIN[key] = cls(sys.intern(path), _EMPTY, _EMPTY, peer)
            return plain
        args = dict(parse_qsl(query, keep_blank_values=True)) if query else _EMPTY
        # Interned: thousands of connections to ``/connection/websocket`` share one string.
        return cls(sys.intern(path), args, kept, peer, params)

    def credentials(self) -> tuple[str | None, str | None]:
        """``(Authorization, X-API-Key)`` from the headers, or a ``?token=`` for browsers,
        which cannot set headers on a WebSocket."""
        token = self.query.get("token")
        authorization = f"Bearer {token}" if token else self.headers.get("authorization")
        return authorization, self.headers.get("x-api-key")
