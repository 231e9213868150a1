"""Aesthetic Computer's session lookup (seed 003), and the rooms feature put together.

``GET /session/{slug}`` (query ``service`` and ``forceProduction`` accepted and ignored: one
server answers every environment) returns ``{"url", "udp", "state": "Ready"}`` with
``Access-Control-Allow-Origin: *`` and ``Cache-Control: no-cache, no-store,
must-revalidate``, as the upstream Netlify function does. ``url`` is this server's room socket
for the slug (``https://host:port/room/<slug>``: the client connects to ``wss://`` + its host
and path); ``udp`` is the same URL: the same host and port carry the data channels
(``server/compat/geckos.py``), and a geckos client given the whole URL signals under the
room's path. Scheme, host and port come from ``SESSIONHUB_PUBLIC_URL`` when it is set (a
server behind a proxy or TLS terminator), else from the request. Two slugs get two URLs and
never see each other's traffic.

:func:`install` builds the rooms of one node (the relay, the socket wire, the data
channels), registers the socket routes on the realtime node and the start/stop steps on the
runtime; it must run before the app is created (the app mounts the node's routes).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from dataclasses import dataclass
from typing import Annotated

import orjson
from fastapi import APIRouter, Query, Request, Response

from ...core import codes
from ...core.errors import InvalidInput, NotFound
from ...kinds import room as kind
from ...kinds.registry import Registry
from ...relay.datagrams import DatagramRelay
from ...relay.rooms import RoomConfig, RoomService
from ..deps import get_runtime
from ..realtime.rooms import PATH, SHARED_PATH, RoomSockets, encode
from ..runtime import Runtime

router = APIRouter(tags=["Aesthetic Computer (seed 003)"])

#: The lookup's headers: any origin may read it, and nothing may cache it.
LOOKUP_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Cache-Control": "no-cache, no-store, must-revalidate",
    "Pragma": "no-cache",
    "Expires": "0",
}


@dataclass
class Rooms:
    """The rooms of one node: settings, relay, socket wire and data channels."""

    config: RoomConfig
    service: RoomService
    sockets: RoomSockets
    datagrams: DatagramRelay

    async def start(self) -> None:
        await self.service.start()
        await self.sockets.start()
        await self.datagrams.start()

    async def close(self) -> None:
        await self.sockets.close()
        await self.datagrams.close()
        for conn in self.sockets.connections():
            conn.disconnect(codes.SHUTDOWN)
        # Let the players' leaves (presence, the others' ``left``) finish, boundedly.
        pending = [t for t in self.service.pending() if not t.done()]
        if pending:
            with contextlib.suppress(Exception):
                await asyncio.wait(pending, timeout=2.0)
        await self.service.close()


def install(runtime: Runtime) -> Rooms:
    """Add rooms to ``runtime`` (call it before ``create_app(runtime=runtime)``)."""
    config = RoomConfig.load(os.environ, runtime.settings.extra)
    hub = runtime.hub
    if kind.NAME not in hub.kinds:
        # The kind belongs in kinds/registry.py; a runtime built without it gets it here.
        hub.kinds = Registry([*hub.kinds.values(), kind.Room()])
    node = runtime.realtime
    service = RoomService(runtime.hub, config, encode=encode, lease_ttl=node.lease_ttl)
    sockets = RoomSockets(service, node)
    node.route(PATH, sockets.open, wire="room")
    node.route(SHARED_PATH, sockets.open_shared, wire="room_shared")
    rooms = Rooms(config, service, sockets, DatagramRelay(runtime.hub, config, rooms=service))
    runtime.on_start.append(rooms.start)
    runtime.on_close.append(rooms.close)
    setattr(runtime, "rooms", rooms)  # noqa: B010  (Runtime.rooms: the lead's field)
    return rooms


def rooms_of(request: Request) -> Rooms:
    """The runtime's rooms (404 when the feature is not installed)."""
    rooms = getattr(get_runtime(request), "rooms", None)
    if not isinstance(rooms, Rooms):
        raise NotFound("rooms are not enabled on this server")
    return rooms


def public_base(request: Request) -> str:
    """``scheme://host:port`` of this server as clients reach it."""
    configured = get_runtime(request).settings.public_url
    if configured:
        return configured.rstrip("/")
    return str(request.base_url).rstrip("/")


@router.get(
    "/session/{slug}",
    summary="Where a room's socket and data channels are (the upstream lookup)",
    response_model=None,
)
async def session_lookup(
    slug: str,
    request: Request,
    service: Annotated[str | None, Query(max_length=100)] = None,
    forceProduction: Annotated[str | None, Query(max_length=10)] = None,
) -> Response:
    rooms_of(request)
    if not kind.valid_slug(slug):
        raise InvalidInput(f"a room slug is 1 to {kind.MAX_SLUG} printable characters, no '/'")
    url = public_base(request) + kind.socket_path(slug)
    body = orjson.dumps({"url": url, "udp": url, "state": "Ready"})
    return Response(body, headers=LOOKUP_HEADERS, media_type="application/json")
