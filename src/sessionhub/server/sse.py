"""Server-Sent Events: the realtime topics for clients that cannot use WebSocket.

``GET /api/stream?topics=user:alice,session:ses_1`` streams ``text/event-stream``::

    id: 7:3f2a9c1e
    event: pub
    data: {"topic":"user:alice","offset":7,"epoch":"3f2a9c1e","data":{...the event...}}

The ``id`` is the stream position after the event: ``<offset>:<epoch>`` for one topic, and
``<topic>@<offset>:<epoch>`` for each topic, space-separated, for several. A client that
reconnects sends it back as ``Last-Event-ID`` (browsers do this by themselves; curl users
pass the header, or ``?last_event_id=``) and receives exactly the events it missed — or, when
they are out of the history window or the epoch changed, an explicit ``unrecovered`` event
telling it to reload its snapshot. Each topic starts with a ``subscribed`` event carrying its
position. Comments (``: ping``) keep idle connections open. Permissions are those of the
WebSocket protocol; the token comes in ``Authorization: Bearer`` or, for ``EventSource``
(which cannot send headers), ``?token=``.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import StreamingResponse

from ..core import codes
from ..core.centrifugo import valid_topic
from ..core.codes import Code
from ..core.errors import Forbidden, InvalidInput
from ..core.principal import Principal
from ..core.streams import Publication, StreamPosition
from ..core.topics import parse, static_permission
from .deps import get_runtime

router = APIRouter(prefix="/api", tags=["realtime"])

MAX_TOPICS = 32
#: Bytes of events waiting for one slow SSE reader before it is cut off (code 3008).
MAX_QUEUE_BYTES = 1 << 20


def format_id(positions: dict[str, StreamPosition]) -> str:
    """The SSE ``id`` for the positions of a stream's topics."""
    if len(positions) == 1:
        (pos,) = positions.values()
        return f"{pos.offset}:{pos.epoch}"
    return " ".join(f"{t}@{p.offset}:{p.epoch}" for t, p in positions.items())


def parse_id(value: str, topics: list[str]) -> dict[str, StreamPosition | None]:
    """Positions to resume from, per topic (None: start fresh). A bare offset for a
    single topic is taken in the topic's current epoch (``epoch`` ``""`` here)."""
    out: dict[str, StreamPosition | None] = {t: None for t in topics}
    value = value.strip()
    if not value:
        return out
    if len(topics) == 1 and "@" not in value:
        offset, _, epoch = value.partition(":")
        if offset.isdigit():
            out[topics[0]] = StreamPosition(int(offset), epoch)
        return out
    for part in value.split():
        topic, sep, pos = part.rpartition("@")
        offset, _, epoch = pos.partition(":")
        if sep and topic in out and offset.isdigit() and epoch:
            out[topic] = StreamPosition(int(offset), epoch)
    return out


def _event(kind: str, data: bytes, event_id: str | None = None) -> bytes:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {kind}\ndata: ".encode() + data + b"\n\n"


def _pub_data(pub: Publication) -> bytes:
    return b"".join(
        (
            b'{"topic":',
            orjson.dumps(pub.topic),
            b',"offset":',
            str(pub.offset).encode(),
            b',"epoch":',
            orjson.dumps(pub.epoch),
            b',"data":',
            pub.data,
            b"}",
        )
    )


class _Stream:
    """One SSE response: a byte-bounded queue fed by broker listeners."""

    def __init__(self, topics: list[str], on_slow: Callable[[], None] | None = None) -> None:
        self.topics = topics
        self.on_slow = on_slow
        self.positions: dict[str, StreamPosition] = {}
        self.live: set[str] = set()
        self.backlog: dict[str, list[Publication]] = {t: [] for t in topics}
        self.queue: deque[bytes] = deque()
        self.size = 0
        self.wake = asyncio.Event()
        self.done = False

    def put(self, chunk: bytes) -> None:
        if self.done:
            return
        self.queue.append(chunk)
        self.size += len(chunk)
        self.wake.set()
        if self.size > MAX_QUEUE_BYTES:
            # Too slow: drop what waits, say why, and end; the client resumes by id.
            self.queue.clear()
            self.finish(codes.SLOW)
            if self.on_slow is not None:
                self.on_slow()

    def finish(self, code: Code) -> None:
        """End the stream after what is queued, with a ``disconnect`` event saying why."""
        if self.done:
            return
        body = orjson.dumps({"code": code.code, "reason": code.message})
        self.queue.append(_event("disconnect", body))
        self.done = True
        self.wake.set()

    def on_pub(self, pub: Publication) -> None:
        if pub.topic not in self.live:
            self.backlog[pub.topic].append(pub)
            return
        self.deliver(pub)

    def deliver(self, pub: Publication) -> None:
        pos = self.positions[pub.topic]
        if pub.epoch == pos.epoch and pub.offset <= pos.offset:
            return  # already sent (recovered)
        self.positions[pub.topic] = StreamPosition(pub.offset, pub.epoch)
        self.put(_event("pub", _pub_data(pub), format_id(self.positions)))


async def _may_read(request: Request, principal: Principal, topic: str) -> bool:
    runtime = get_runtime(request)
    service = runtime.services.get("realtime")
    if service is not None:
        allowed: bool = await service.may_read(principal, topic)
        return allowed
    decided = static_permission(principal, topic)
    if decided is not None:
        return decided
    try:
        await runtime.hub.get(principal, parse(topic)[1] or "")
    except Exception:
        return False
    return True


@router.get(
    "/stream",
    summary="Follow topics over Server-Sent Events",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def stream(
    request: Request,
    topics: Annotated[str, Query(description="Topics, comma-separated", max_length=4096)],
    token: Annotated[str | None, Query(description="Bearer token, for EventSource")] = None,
    last_event_id_q: Annotated[str | None, Query(alias="last_event_id", max_length=8192)] = None,
    authorization: Annotated[str | None, Header()] = None,
    x_api_key: Annotated[str | None, Header()] = None,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
) -> StreamingResponse:
    """Events of ``topics`` as they happen, resumable with ``Last-Event-ID``.

    Event types: ``subscribed`` (a topic's position at the start), ``pub`` (a publication),
    ``unrecovered`` (what was missed is gone: reload the snapshot), ``disconnect`` (the
    server ends the stream, with a code from the realtime code table)."""
    runtime = get_runtime(request)
    # expires_at: a stream lives no longer than its token (API keys do not expire); like a
    # WebSocket connection that does not refresh, it ends with 3005 at the token's expiry
    # (come back with a fresh token and Last-Event-ID).
    principal, expires_at = runtime.auth.authenticate_with_expiry(
        authorization or (f"Bearer {token}" if token else None), x_api_key
    )
    names = [t.strip() for t in topics.split(",") if t.strip()]
    if not names:
        raise InvalidInput("name at least one topic: ?topics=user:alice,session:<id>")
    if len(names) > MAX_TOPICS:
        raise InvalidInput(f"at most {MAX_TOPICS} topics per stream")
    names = list(dict.fromkeys(names))
    for name in names:
        if not valid_topic(name):
            raise InvalidInput(f"{name!r} is not a topic name")
        if not await _may_read(request, principal, name):
            raise Forbidden(f"you may not follow {name!r}")
    resume = parse_id(last_event_id or last_event_id_q or "", names)
    ping = runtime.settings.ping_interval
    broker = runtime.hub.broker
    service = runtime.services.get("realtime")

    def slow() -> None:
        if service is not None:
            service.stats_slow += 1

    s = _Stream(names, slow)
    unsubscribers: list[Callable[[], None]] = [broker.subscribe(t, s.on_pub) for t in names]
    try:
        s.put(b"retry: 1000\n\n")
        await _open(s, resume, broker, runtime.settings.history_size)
    except BaseException:
        for u in unsubscribers:
            u()
        raise

    async def body() -> AsyncIterator[bytes]:
        # Counted while the body runs: a response that never starts never counted.
        if service is not None:
            service.sse_streams += 1
        try:
            while True:
                if expires_at is not None and time.time() >= expires_at:
                    s.finish(codes.CONNECTION_EXPIRED)
                if not s.queue:
                    if s.done:
                        return
                    s.wake.clear()
                    wait = ping
                    if expires_at is not None:
                        wait = min(wait, max(0.0, expires_at - time.time()))
                    try:
                        await asyncio.wait_for(s.wake.wait(), wait)
                    except TimeoutError:
                        if expires_at is None or time.time() < expires_at:
                            yield b": ping\n\n"
                    continue
                chunks = list(s.queue)
                s.queue.clear()
                s.size = 0
                yield b"".join(chunks)
        finally:
            if service is not None:
                service.sse_streams -= 1
            for u in unsubscribers:
                u()

    return StreamingResponse(
        body(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _prepare(
    topic: str, since: StreamPosition | None, broker: Any, limit: int
) -> tuple[StreamPosition, list[Publication], list[tuple[str, bytes]]]:
    """Where ``topic`` starts, the publications to replay, and the events that say so."""
    recovered: bool | None = None
    pubs: list[Publication] = []
    events: list[tuple[str, bytes]] = []
    if since is not None:
        if not since.epoch:
            since = StreamPosition(since.offset, (await broker.position(topic)).epoch)
        pubs, pos, complete = await broker.history(topic, since=since, limit=limit)
        recovered = complete
        if complete:
            start = since
        else:
            pubs = []
            start = pos
            detail = {
                "topic": topic,
                "since": {"offset": since.offset, "epoch": since.epoch},
                "offset": pos.offset,
                "epoch": pos.epoch,
                "reason": "the missed events are no longer kept: reload the snapshot",
            }
            events.append(("unrecovered", orjson.dumps(detail)))
    else:
        start = await broker.position(topic)
    info = {
        "topic": topic,
        "offset": start.offset,
        "epoch": start.epoch,
        "recovered": recovered,
        "missed": len(pubs),
    }
    events.append(("subscribed", orjson.dumps(info)))
    return start, pubs, events


async def _open(
    s: _Stream, resume: dict[str, StreamPosition | None], broker: Any, limit: int
) -> None:
    prepared = [(t, await _prepare(t, resume[t], broker, limit)) for t in s.topics]
    # From here on nothing awaits: positions, replays and the backlog that arrived while
    # preparing are put in order, and every id names every topic.
    for topic, (start, _, _) in prepared:
        s.positions[topic] = start
    for topic, (_, pubs, events) in prepared:
        for kind, data in events:
            s.put(_event(kind, data, format_id(s.positions) if kind == "subscribed" else None))
        for pub in pubs:
            s.deliver(pub)
        s.live.add(topic)
        backlog, s.backlog[topic] = s.backlog[topic], []
        for pub in backlog:
            s.deliver(pub)
