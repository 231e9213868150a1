"""The rooms' "UDP": WebRTC data channels that the real ``@geckos.io/client`` connects to.

geckos.io (v3) sets a connection up over HTTP on the game server's own port (the routes are
``server/compat/geckos.py``): the server makes the offer, with one data channel labelled
``geckos.io``, unordered and without retransmissions (``maxRetransmits: 0``), created in
band; the client answers without candidates and the server learns the client's address from
its connectivity checks (peer-reflexive candidates). This module is that server side over
``aiortc``, with no HTTP in it: :meth:`DatagramRelay.offer`, :meth:`~DatagramRelay.answer`,
:meth:`~DatagramRelay.candidates` (always ``[]``: aiortc gathers every candidate before the
offer, so they are all in its SDP) and :meth:`~DatagramRelay.close_peer`.

geckos framing: ``emit(name, data)`` sends the text ``{"<name>": data}`` and the receiver takes
the first key; a text that is not a JSON object (or starts like a number) and any binary
message is a ``rawMessage``; ``{reliable: true}`` wraps data as ``{"MESSAGE", "RELIABLE": 1,
"ID"}`` sent ten times: repeats of an ``ID`` seen in the last 15 s are dropped here and the
message goes on, unwrapped, once. Events (Aesthetic Computer's session server):
``udp:identity`` (``{user: {sub}, handle}``, as a JSON string or an object) attaches
identity; ``tv`` goes to everyone in the room, the sender included; ``fairy:point`` to
everyone in the room but the sender; any other event (and raw messages) to everyone in the
room, as ``tv``. geckos' own event names (``disconnected``, ...) are never relayed: one of
them would tear the receivers' clients down.

The room is the slug the connection was set up under (``/room/<slug>/.wrtc/v2/...``); under
the bare ``/.wrtc/v2`` (what the Aesthetic Computer client uses: it keeps only the host and
port of the lookup's ``udp`` URL) a peer starts in the shared room, and an ``udp:identity``
naming a player of a room socket on this node moves it into that player's room. Datagrams
cross nodes through ``hub.broker.broadcast`` on ``relay:udp:<slug>``.

Per peer: datagrams above ``max_datagram`` bytes and beyond ``datagram_rate`` per second are
dropped and counted, as are sends to a peer whose channel has more than ``BUFFER_LIMIT``
bytes waiting (an unreliable channel loses rather than queues). Peers that do not connect
within ``answer_timeout`` are closed.

aiortc/aioice pitfall: aioice gathers host candidates on every address but 127.0.0.1, so an
offer made on a loopback-only machine would have none. :func:`gather_on` chooses the
addresses for the connections created inside it (a ``ContextVar`` read by a wrapper around
aioice's address discovery; every other use of aioice is left as it was).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import secrets
import string
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from typing import Any

import orjson

from ..core.errors import InvalidInput, NotFound, TooManyRequests, Unavailable
from ..core.streams import Publication
from ..hub import Hub
from ..kinds import room as kind
from .rooms import Bucket, RoomConfig, RoomService

log = logging.getLogger("sessionhub.datagrams")

LABEL = "geckos.io"
ID_LENGTH = 24
_ID_CHARS = string.ascii_letters + string.digits
#: geckos.io's own event names: a peer may not send them to others.
RESERVED = frozenset(
    {
        "connect",
        "connection",
        "dataChannelIsOpen",
        "disconnect",
        "disconnected",
        "dropped",
        "error",
        "receiveFromDataChannel",
        "sendOverDataChannel",
    }
)
#: How long a reliable message's ID is remembered (geckos resends for 1.5 s, keeps 15 s).
RELIABLE_TTL = 15.0
#: Bytes waiting on a peer's channel above which datagrams to it are dropped: a fraction
#: of a second of a game's traffic, since a position that waits longer is worthless.
BUFFER_LIMIT = 16 * 1024
#: Largest answer SDP accepted.
MAX_SDP = 64 * 1024

_ADDRESSES: ContextVar[tuple[str, ...] | None] = ContextVar("sessionhub_ice", default=None)
_original_discovery: Callable[[bool, bool], list[str]] | None = None


def available() -> bool:
    """Whether aiortc is installed (the data channels need it; the sockets do not)."""
    try:
        import aiortc  # noqa: F401
    except ImportError:
        return False
    return True


def _install_discovery() -> None:
    global _original_discovery
    import aioice.ice

    if _original_discovery is not None:
        return
    original: Callable[[bool, bool], list[str]] = aioice.ice.get_host_addresses
    _original_discovery = original

    def discover(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        chosen = _ADDRESSES.get()
        if chosen is None:
            return original(use_ipv4, use_ipv6)
        out = []
        for address in chosen:
            version = ipaddress.ip_address(address).version
            if (version == 4 and use_ipv4) or (version == 6 and use_ipv6):
                out.append(address)
        return out

    aioice.ice.get_host_addresses = discover


def default_addresses() -> tuple[str, ...]:
    """The machine's addresses as aioice finds them, and 127.0.0.1 (which it leaves out)."""
    _install_discovery()
    assert _original_discovery is not None
    found = _original_discovery(True, False)
    return tuple(dict.fromkeys([*found, "127.0.0.1"]))


@contextlib.contextmanager
def gather_on(addresses: tuple[str, ...]) -> Iterator[None]:
    """ICE gathers host candidates on ``addresses`` for connections set up inside."""
    _install_discovery()
    token = _ADDRESSES.set(addresses)
    try:
        yield
    finally:
        _ADDRESSES.reset(token)


def parse(message: str | bytes) -> tuple[str, Any]:
    """A geckos message as ``(event, data)``; raw ones are ``("rawMessage", message)``."""
    if isinstance(message, bytes):
        return "rawMessage", message
    head = message.lstrip()[:2]
    if head[:1].isdigit() or (head[:1] in "+-" and head[1:2].isdigit()):
        return "rawMessage", message  # geckos reads anything parseInt accepts as raw
    try:
        obj = orjson.loads(message)
    except orjson.JSONDecodeError:
        return "rawMessage", message
    if not isinstance(obj, dict) or not obj:
        return "rawMessage", message
    key = next(iter(obj))
    return key, obj[key]


def make_id() -> str:
    return "".join(secrets.choice(_ID_CHARS) for _ in range(ID_LENGTH))


class Peer:
    """One data-channel connection."""

    def __init__(self, pid: str, slug: str, address: str, pc: Any, bucket: Bucket) -> None:
        self.id, self.slug, self.address, self.pc, self.bucket = pid, slug, address, pc, bucket
        self.channel: Any = None
        self.user: str | None = None
        self.handle: str | None = None
        self.reliable: dict[str, float] = {}
        self.created = time.monotonic()
        self.open = False
        self.closed = False

    def send(self, data: str | bytes) -> bool:
        """Send one datagram if the channel is open and not backed up."""
        channel = self.channel
        if not self.open or channel is None or channel.bufferedAmount > BUFFER_LIMIT:
            return False
        channel.send(data)
        return True


class DatagramRelay:
    """Every data-channel peer of this node, by id and by room."""

    def __init__(
        self,
        hub: Hub,
        config: RoomConfig,
        *,
        rooms: RoomService | None = None,
        addresses: tuple[str, ...] | None = None,
    ) -> None:
        self.hub, self.config, self.rooms = hub, config, rooms
        chosen = tuple(a.strip() for a in config.ice_addresses.split(",") if a.strip())
        self._addresses = addresses or chosen or None
        self.peers: dict[str, Peer] = {}
        self.by_room: dict[str, dict[str, Peer]] = {}
        self._per_address: dict[str, int] = {}
        self._unsubscribe: dict[str, Callable[[], None]] = {}
        self._outbox: deque[tuple[str, bytes]] = deque()
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.received = self.relayed = self.sent = self.dropped = self.invalid = 0

    @property
    def addresses(self) -> tuple[str, ...]:
        if self._addresses is None:
            self._addresses = default_addresses()
        return self._addresses

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._pump(), name="sessionhub-datagrams"),
            loop.create_task(self._sweep(), name="sessionhub-datagram-sweep"),
        ]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        for pid in list(self.peers):
            await self.close_peer(pid)

    def stats(self) -> dict[str, int]:
        return {
            "peers": len(self.peers),
            "received": self.received,
            "relayed": self.relayed,
            "sent": self.sent,
            "dropped": self.dropped,
            "invalid": self.invalid,
        }

    # -- signalling ---------------------------------------------------------------------

    async def offer(self, slug: str, address: str) -> dict[str, Any]:
        """Set a peer up in ``slug``'s room: geckos' ``POST /connections`` answer."""
        if not available():
            raise Unavailable("WebRTC data channels need aiortc on the server (pip install aiortc)")
        from aiortc import RTCConfiguration, RTCPeerConnection

        if not kind.valid_slug(slug):
            raise InvalidInput("bad room slug")
        if len(self.peers) >= self.config.max_peers:
            raise TooManyRequests("too many data-channel peers on this server")
        if self._per_address.get(address, 0) >= self.config.peers_per_address:
            raise TooManyRequests("too many data-channel peers from this address")
        # No STUN server: aiortc would add a public one, and the candidates come from
        # the addresses below (the clients reach us there, or we learn theirs).
        pc = RTCPeerConnection(configuration=RTCConfiguration(iceServers=[]))
        pid = make_id()
        while pid in self.peers:
            pid = make_id()
        peer = Peer(pid, slug, address, pc, self._bucket())
        self.peers[pid] = peer
        self._per_address[address] = self._per_address.get(address, 0) + 1
        peer.channel = pc.createDataChannel(LABEL, ordered=False, maxRetransmits=0)
        self._wire(peer)
        try:
            with gather_on(self.addresses):
                await pc.setLocalDescription(await pc.createOffer())
        except Exception:
            await self.close_peer(pid)
            raise
        self._enter(peer, slug)
        local = pc.localDescription
        return {
            "userData": {},
            "id": pid,
            "localDescription": {"type": local.type, "sdp": local.sdp},
        }

    def _bucket(self) -> Bucket:
        return Bucket(self.config.datagram_rate, self.config.datagram_burst, time.monotonic())

    def _wire(self, peer: Peer) -> None:
        pc, channel = peer.pc, peer.channel

        @pc.on("connectionstatechange")  # type: ignore[untyped-decorator]
        def on_state() -> None:
            if pc.connectionState in ("failed", "closed"):
                asyncio.get_running_loop().create_task(self.close_peer(peer.id))

        @channel.on("open")  # type: ignore[untyped-decorator]
        def on_open() -> None:
            peer.open = True

        @channel.on("close")  # type: ignore[untyped-decorator]
        def on_close() -> None:
            peer.open = False

        @channel.on("message")  # type: ignore[untyped-decorator]
        def on_message(message: str | bytes) -> None:
            self._on_message(peer, message)

    def _peer(self, pid: str) -> Peer:
        peer = self.peers.get(pid)
        if peer is None:
            raise NotFound(f"no connection {pid[:40]!r}")
        return peer

    async def answer(self, pid: str, description: Any) -> None:
        """The client's answer (``POST /connections/{id}/remote-description``)."""
        from aiortc import RTCSessionDescription

        peer = self._peer(pid)
        if not isinstance(description, dict):
            raise InvalidInput("the body must be a session description {type, sdp}")
        sdp, type_ = description.get("sdp"), description.get("type")
        if type_ != "answer" or not isinstance(sdp, str) or not 0 < len(sdp) <= MAX_SDP:
            raise InvalidInput("expected {type: 'answer', sdp} with an SDP of at most 64 KB")
        try:
            await peer.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))
        except Exception as exc:
            raise InvalidInput(f"the answer could not be applied: {str(exc)[:200]}") from None

    def candidates(self, pid: str) -> list[dict[str, Any]]:
        """Candidates found after the offer: none (aiortc puts them all in the offer)."""
        self._peer(pid)
        return []

    async def close_peer(self, pid: str) -> None:
        peer = self.peers.pop(pid, None)
        if peer is None:
            return
        peer.closed, peer.open = True, False
        self._leave(peer)
        left = self._per_address.get(peer.address, 1) - 1
        if left > 0:
            self._per_address[peer.address] = left
        else:
            self._per_address.pop(peer.address, None)
        with contextlib.suppress(Exception):
            await peer.pc.close()

    # -- rooms --------------------------------------------------------------------------

    def _enter(self, peer: Peer, slug: str) -> None:
        peer.slug = slug
        members = self.by_room.setdefault(slug, {})
        members[peer.id] = peer
        if slug not in self._unsubscribe:
            topic = f"relay:udp:{slug}"
            self._unsubscribe[slug] = self.hub.broker.subscribe(topic, self._on_traffic)

    def _leave(self, peer: Peer) -> None:
        members = self.by_room.get(peer.slug)
        if members is None or members.pop(peer.id, None) is None:
            return
        if not members:
            del self.by_room[peer.slug]
            undo = self._unsubscribe.pop(peer.slug, None)
            if undo is not None:
                undo()

    # -- datagrams ----------------------------------------------------------------------

    def _on_message(self, peer: Peer, message: str | bytes) -> None:
        self.received += 1
        size = len(message) if isinstance(message, bytes) else len(message.encode())
        if size > self.config.max_datagram or not peer.bucket.take(time.monotonic()):
            self.dropped += 1
            return
        event, data = parse(message)
        if isinstance(data, dict) and data.get("RELIABLE") == 1 and "ID" in data:
            rid, now = str(data["ID"])[:64], time.monotonic()
            if peer.reliable.get(rid, 0.0) > now:
                return  # a resend of a reliable message already relayed
            peer.reliable[rid] = now + RELIABLE_TTL
            data = data.get("MESSAGE")
        if event in RESERVED:
            self.invalid += 1
            return
        if event == "udp:identity":
            self._identify(peer, data)
            return
        if event == "rawMessage":
            out = data if isinstance(data, bytes) else str(data).encode()
            kind_byte = b"b" if isinstance(data, bytes) else b"t"
        else:
            out, kind_byte = orjson.dumps({event: data}), b"t"
        # ``fairy:point`` goes to the others; ``tv`` and everything else to all, sender too.
        exclude = peer.id.encode() if event == "fairy:point" else b"-"
        self._outbox.append((peer.slug, exclude + b"\n" + kind_byte + out))
        self._wake.set()

    def _identify(self, peer: Peer, data: Any) -> None:
        if isinstance(data, str):
            try:
                data = orjson.loads(data)
            except orjson.JSONDecodeError:
                self.invalid += 1
                return
        if not isinstance(data, dict):
            return
        user = data.get("user")
        sub = user.get("sub") if isinstance(user, dict) else None
        handle = data.get("handle")
        peer.user = sub[:200] if isinstance(sub, str) and sub else peer.user
        peer.handle = handle[:100] if isinstance(handle, str) and handle else peer.handle
        if peer.slug == kind.SHARED and self.rooms is not None:
            # The upstream client signals on the bare path: follow the player into its room.
            slug = self.rooms.local_room_of(peer.user, peer.handle)
            if slug is not None and slug != peer.slug:
                self._leave(peer)
                self._enter(peer, slug)

    async def _pump(self) -> None:
        broker = self.hub.broker
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._outbox:
                slug, body = self._outbox.popleft()
                try:
                    await broker.broadcast(f"relay:udp:{slug}", body)
                    self.relayed += 1
                except Exception:
                    log.warning("datagram broadcast failed", exc_info=True)

    def _on_traffic(self, pub: Publication) -> None:
        members = self.by_room.get(pub.topic.removeprefix("relay:udp:"))
        if not members:
            return
        exclude, _, rest = pub.data.partition(b"\n")
        skip = exclude.decode() if exclude != b"-" else None
        payload: str | bytes = rest[1:].decode() if rest[:1] == b"t" else rest[1:]
        for pid, peer in members.items():
            if pid == skip:
                continue
            if peer.send(payload):
                self.sent += 1
            else:
                self.dropped += 1

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(min(5.0, self.config.answer_timeout / 2))
            now = time.monotonic()
            for peer in list(self.peers.values()):
                if not peer.open and now - peer.created > self.config.answer_timeout:
                    await self.close_peer(peer.id)
                    continue
                for rid in [r for r, until in peer.reliable.items() if until <= now]:
                    del peer.reliable[rid]
