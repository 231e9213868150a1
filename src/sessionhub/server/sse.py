"""Server-Sent Events: the realtime topics for clients that cannot use WebSocket.

``GET /api/stream?topics=user:alice,session:ses_1`` streams ``text/event-stream``::

    id: 7:3f2a9c1e
    event: pub
    data: {"topic":"user:alice","offset":7,"epoch":"3f2a9c1e","data":{...the event...}}

The ``id`` is the stream position after the event: ``<offset>:<epoch>`` for one topic, and
``<topic>@<offset>:<epoch>`` for each topic, space-separated, for several. A client that
reconnects sends it back as ``Last-Event-ID`` (browsers do this by themselves; curl users
pass the header, or ``?last_event_id=``) and receives exactly the events it missed — or an
explicit ``unrecovered`` event telling it to reload its snapshot: when they are out of the
history window, when the epoch changed, when the position names no epoch (a bare offset
cannot prove that the stream it counted in still exists), or when it is not a position at
all. Each topic starts with a ``subscribed`` event carrying its position. Comments
(``: ping``) keep idle connections open. Permissions are those of the WebSocket protocol;
the token comes in ``Authorization: Bearer`` or, for ``EventSource`` (which cannot send
headers), ``?token=``.

A stream is a connection of the realtime engine like any socket (``server/realtime``): the
same registry, slow-consumer policy (3008), keep-alive tick and metrics; the same recovery
decision (``core/recovery.py``) as the WebSocket protocol.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from typing import Annotated

import orjson
from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import StreamingResponse

from ..core import codes
from ..core.centrifugo import valid_topic
from ..core.errors import Forbidden, InvalidInput, TooManyRequests
from ..core.recovery import Malformed, Recovery, Resume, format_id, needs_history, parse_id
from ..core.recovery import activate as join_stream
from ..core.recovery import recover as decide
from ..core.streams import Publication, StreamPosition
from .deps import get_runtime
from .problems import responses
from .realtime.centrifugo import may_read
from .realtime.conn import Conn
from .realtime.node import RealtimeNode
from .realtime.socket import Handshake, Out

router = APIRouter(prefix="/api", tags=["realtime"])

MAX_TOPICS = 32


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


def _plain(payload: bytes) -> Out:
    """An SSE chunk: no WebSocket framing needed."""
    out = Out.batch(payload)
    out.payload, out.parts = payload, None
    return out


class SseSink:
    """``Sink`` for one response body: chunks queued here, pulled by the body generator."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.size = 0
        self.done = False
        self.wake = asyncio.Event()

    def write(self, items: list[Out]) -> None:
        if self.done:
            return
        for item in items:
            self.chunks.append(item.payload)
            self.size += len(item.payload)
        self.wake.set()

    def write_one(self, item: Out) -> None:
        self.write([item])

    def buffered(self) -> int:
        return self.size

    def close(self, code: int, reason: str) -> None:
        self.done = True
        self.wake.set()

    def ping(self) -> None:
        self.write([_plain(b": ping\n\n")])

    def drop(self) -> None:
        self.chunks.clear()
        self.size = 0

    def pause_reading(self) -> None:
        return None

    def resume_reading(self) -> None:
        return None

    def take(self) -> bytes:
        out, self.chunks, self.size = b"".join(self.chunks), [], 0
        return out


class SseConn(Conn):
    """One event stream: its topics' positions; every publication framed for it alone
    (the id names every topic's position)."""

    wire = "sse"
    transport = "sse"

    def __init__(self, node: RealtimeNode, sink: SseSink, hs: Handshake, topics: list[str]) -> None:
        super().__init__(node, sink, hs)
        self.stream = sink
        self.names = topics
        self.positions: dict[str, StreamPosition] = {}
        self.backlogs: dict[str, list[Publication]] = {t: [] for t in topics}
        self._expiry: asyncio.TimerHandle | None = None

    def expire_at(self, when: float | None) -> None:
        """End the stream with 3005 at Unix time ``when`` (its token's expiry): like a
        WebSocket connection that does not refresh; resume with a fresh token."""
        if when is None:
            return
        delay = max(0.0, when - time.time())
        self._expiry = asyncio.get_running_loop().call_later(
            delay, self.disconnect, codes.CONNECTION_EXPIRED
        )

    def tick(self, now: float) -> None:
        self.sink.ping()  # a keep-alive comment; SSE has no answer to wait for
        return None

    def deliver(self, pub: Publication) -> None:
        pos = self.positions.get(pub.topic)
        if pos is not None and pub.epoch == pos.epoch and pub.offset <= pos.offset:
            return  # already sent (recovered)
        self.positions[pub.topic] = StreamPosition(pub.offset, pub.epoch)
        self.enqueue(_plain(_event("pub", _pub_data(pub), format_id(self.positions))))

    def goodbye(self, code: int, reason: str) -> list[Out]:
        body = orjson.dumps({"code": code, "reason": reason})
        return [_plain(_event("disconnect", body))]

    def disconnect(self, code: codes.Code | int, reason: str = "") -> None:
        if code is codes.SLOW:
            self.stream.drop()  # too slow: what waits is dropped; it resumes by id
        super().disconnect(code, reason)

    def cleanup(self) -> None:
        if self._expiry is not None:
            self._expiry.cancel()

    def open_topics(self, prepared: list[tuple[str, Resume, Recovery]]) -> None:
        """Announce each topic, replay what it recovered and go live (no await here, so
        nothing published meanwhile is lost or sent twice)."""
        for topic, since, outcome in prepared:
            # A recovered stream starts where the client was; the replay moves it on.
            recovered = outcome.recovered and isinstance(since, StreamPosition)
            self.positions[topic] = (
                since if recovered and isinstance(since, StreamPosition) else outcome.start
            )
        for topic, since, outcome in prepared:
            for kind, data in _announcements(topic, since, self.positions[topic], outcome):
                ident = format_id(self.positions) if kind == "subscribed" else None
                self.enqueue(_plain(_event(kind, data, ident)))
            for pub in outcome.publications:
                self.deliver(pub)
            backlog, self.backlogs[topic] = self.backlogs[topic], []
            done = join_stream(topic, outcome.start, backlog)
            for pub in done.deliver:
                self.deliver(pub)
            if done.outcome == "gap":
                self.disconnect(codes.INSUFFICIENT_STATE)
                return
            self.node.live(self, topic, None)


def _announcements(
    topic: str, since: Resume, start: StreamPosition, outcome: Recovery
) -> list[tuple[str, bytes]]:
    events: list[tuple[str, bytes]] = []
    if outcome.recovered is False:
        events.append(("unrecovered", orjson.dumps(_unrecovered(topic, since, outcome))))
    info = {
        "topic": topic,
        "offset": start.offset,
        "epoch": start.epoch,
        "recovered": outcome.recovered,
        "missed": outcome.missed,
    }
    events.append(("subscribed", orjson.dumps(info)))
    return events


def _unrecovered(topic: str, since: Resume, outcome: Recovery) -> dict[str, object]:
    return {
        "topic": topic,
        "since": _describe(since),
        "offset": outcome.start.offset,
        "epoch": outcome.start.epoch,
        "reason": outcome.reason,
    }


async def _prepare(node: RealtimeNode, topic: str, since: Resume) -> Recovery:
    broker = node.hub.broker
    asked = needs_history(since)
    if asked is None:
        return decide(topic, since, await broker.position(topic))
    pubs, current, complete = await broker.history(topic, since=asked, limit=node.recover_limit)
    if complete:
        node.stats_recovered += 1
    else:
        node.stats_unrecovered += 1
    return decide(topic, since, current, (pubs, complete))


def _describe(since: Resume) -> dict[str, object] | None:
    if isinstance(since, StreamPosition):
        return {"offset": since.offset, "epoch": since.epoch}
    if isinstance(since, Malformed):
        return {"text": since.text}
    return None


@router.get(
    "/stream",
    summary="Follow topics over Server-Sent Events",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "The stream: `subscribed`, `pub`, `unrecovered`, `disconnect` events",
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        },
        **responses(403, 429),
    },
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
    ``unrecovered`` (what was missed is gone, or the position sent cannot prove it was not:
    reload the snapshot), ``disconnect`` (the server ends the stream, with a code from the
    realtime code table)."""
    runtime = get_runtime(request)
    node = runtime.realtime
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
        if not await may_read(node, principal, name):
            raise Forbidden(f"you may not follow {name!r}")
    resume = _resume(last_event_id or last_event_id_q or "", names)
    peer = request.client.host if request.client else ""
    if not node.admit(peer):
        raise TooManyRequests("too many open streams and sockets from this address")
    hs = Handshake(request.url.path, dict(request.query_params), _headers(request), peer)
    sink = SseSink()
    conn = SseConn(node, sink, hs, names)
    node.register(conn)
    try:
        # Pending first: whatever is published while the positions are read is kept.
        for name in names:
            node.attach(conn, name, conn.backlogs[name])
        sink.write([_plain(b"retry: 1000\n\n")])
        prepared = [(n, resume[n], await _prepare(node, n, resume[n])) for n in names]
        conn.open_topics(prepared)
        conn.flush()
        conn.expire_at(expires_at)
    except BaseException:
        conn.lost()
        raise

    async def body() -> AsyncIterator[bytes]:
        try:
            while True:
                if not sink.chunks:
                    if sink.done:
                        return
                    sink.wake.clear()
                    await sink.wake.wait()
                    continue
                yield sink.take()
        finally:
            conn.lost()

    return StreamingResponse(
        body(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def _resume(last_id: str, names: list[str]) -> dict[str, Resume]:
    """What each topic resumes from. A client that sent an id asked to resume: a topic the
    id names no position for (``sessions@3`` on a stream of ``user:alice``) cannot be shown
    continuous, so it is ``unrecovered``, never a silent fresh start."""
    resume = parse_id(last_id, names)
    if last_id.strip():
        for name in names:
            if resume[name] is None:
                resume[name] = Malformed(last_id[:80], f"the id names no position of {name}")
    return resume


def _headers(request: Request) -> Mapping[str, str]:
    return {k.lower(): v for k, v in request.headers.items()}
