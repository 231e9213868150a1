"""``WebSocket /stream/{session_id}``: the screen-share relay's transport.

Connect with ``?role=sharer`` (the owner, sends binary frames) or ``?role=viewer`` (the
default; receives binary frames). Credentials: ``Authorization: Bearer <token>`` or, for
browsers that cannot set headers, ``?token=<token>``. The connection is accepted first and
then closed with a code from ``relay.frames.CLOSE_CODES`` if it may not join, so every
client sees why. Once joined, the server sends one text message
``{"type": "ready", "role", "session_id", "quality", "width", "height", "fps"}``; after that
viewers receive only binary frames. Text from clients is ignored; binary messages from the
sharer are frames.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Awaitable

import orjson
from fastapi import APIRouter, FastAPI, WebSocket
from starlette.websockets import WebSocketDisconnect

from ...core.errors import SessionHubError
from ...relay.frames import FrameRelay, Participant, Room, Viewer, close_code_for
from ..runtime import Runtime

log = logging.getLogger("sessionhub.stream")

router = APIRouter(tags=["screen share"])

SERVICE = "relay"


def relay_of(runtime: Runtime) -> FrameRelay:
    relay: FrameRelay = runtime.services[SERVICE]
    return relay


def install(_app: FastAPI, runtime: Runtime) -> None:
    """Attach the relay: ``SESSIONHUB_RELAY_FLUSH_SECONDS`` sets the counter flush interval."""
    extra = runtime.settings.extra
    interval = float(
        extra.get("relay_flush_seconds") or os.environ.get("SESSIONHUB_RELAY_FLUSH_SECONDS") or 2.0
    )
    relay = FrameRelay(runtime.hub, flush_interval=interval)
    relay.install()
    runtime.services[SERVICE] = relay
    runtime.on_start.append(relay.start)
    runtime.on_close.append(relay.close)


async def _until_closed(ws: WebSocket, participant: Participant, *loops: Awaitable[None]) -> None:
    """Run the pump loops until one ends (client gone) or the relay closes the participant."""
    tasks = [asyncio.ensure_future(loop) for loop in loops]
    watcher = asyncio.ensure_future(participant.closed.wait())
    try:
        await asyncio.wait([*tasks, watcher], return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in [*tasks, watcher]:
            t.cancel()
        for t in [*tasks, watcher]:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
    if participant.closed.is_set():
        with contextlib.suppress(Exception):
            await ws.close(participant.close_code, participant.close_reason)


@router.websocket("/stream/{session_id}")
async def stream(websocket: WebSocket, session_id: str) -> None:
    runtime: Runtime = websocket.app.state.runtime
    relay = relay_of(runtime)
    role = websocket.query_params.get("role", "viewer")
    token = websocket.query_params.get("token")
    authorization = websocket.headers.get("authorization") or (f"Bearer {token}" if token else None)
    ticket = relay.ticket()  # arrival order, taken before any await
    await websocket.accept()
    room: Room
    participant: Participant
    try:
        if role not in ("sharer", "viewer"):
            raise SessionHubError("role must be 'sharer' or 'viewer'")
        principal = runtime.auth.authenticate(authorization, websocket.headers.get("x-api-key"))
        if role == "sharer":
            room, participant = await relay.join_sharer(principal, session_id, ticket=ticket)
        else:
            room, participant = await relay.join_viewer(principal, session_id)
    except SessionHubError as exc:
        await websocket.close(close_code_for(exc), exc.detail[:120])
        return
    try:
        await websocket.send_text(orjson.dumps(room.describe(role)).decode())
        if isinstance(participant, Viewer):
            await _until_closed(
                websocket, participant, _send_frames(websocket, participant), _drain(websocket)
            )
        else:
            await _until_closed(
                websocket, participant, _receive_frames(websocket, relay, room, participant)
            )
    finally:
        relay.leave(room, participant)


async def _receive_frames(
    ws: WebSocket, relay: FrameRelay, room: Room, sharer: Participant
) -> None:
    while True:
        message = await ws.receive()
        if message["type"] == "websocket.disconnect":
            return
        data = message.get("bytes")
        if data is not None:
            await relay.frame(room, sharer, data)


async def _send_frames(ws: WebSocket, viewer: Viewer) -> None:
    while True:
        frame = await viewer.next_frame()
        if frame is None:
            return
        try:
            # Waits while the client's socket is full: that wait is what makes a slow
            # viewer skip frames (its slot keeps only the newest) instead of queueing them.
            await ws.send_bytes(frame)
        except (WebSocketDisconnect, RuntimeError, OSError):
            return


async def _drain(ws: WebSocket) -> None:
    """Read (and ignore) what a viewer sends, to notice when it goes away."""
    while True:
        message = await ws.receive()
        if message["type"] == "websocket.disconnect":
            return
