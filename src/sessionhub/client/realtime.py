"""An async realtime client for sessionhub's WebSocket (Centrifugo client protocol v2, JSON).

It speaks the subset sessionhub serves: ``connect``, ``subscribe`` (with recovery),
``unsubscribe`` and any other command through :meth:`RealtimeClient.call`; it answers the
server's pings and reconnects by itself.

What a disconnect means is not decided here: every close code goes through
:mod:`sessionhub.core.codes`, the table the server and the docs use too. A code the table
calls final (3500-3999, 4500-4999: a bad token, a malformed frame, ...) stops the client
with :class:`Disconnected`; any other code (the server restarting, the network failing, a
slow reader cut off) reconnects after a bounded, jittered backoff and resubscribes every
subscription with ``recover: true`` from the last offset and epoch it delivered.

Whether that recovery worked is never hidden: each (re)subscription that started from a
position puts a :class:`Recovery` item into the subscription's stream, just where the
missed publications (if recovered) or the gap (if not) would be. ``recovered=False``
means the caller must reload its state (for example :func:`sessionhub.client.follow`
fetches a new snapshot).

**A publication's identity is its event's ``(session_id, version)``, not its offset.**
Delivery is at least once: an event published just before the server crashed may be
published again after the restart, under a new epoch and a new offset. Every session event
carries the session's ``version`` (+1 on every change, so each version is one change), and
a subscription drops a session event whose version it has already delivered for that
session (it remembers the newest version of the last ``SEEN_SESSIONS`` sessions it saw).
Publications that are not session events (no ``session_id`` and ``version``) are delivered
as they come.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from ..core import codes

log = logging.getLogger("sessionhub.client")

#: A token, or a coroutine function returning one (called before every (re)connect, so a
#: client can renew an expiring token).
TokenSource = str | Callable[[], Awaitable[str]]

#: Transport close codes with no protocol meaning (normal closure, none sent, abnormal).
_TRANSPORT_ONLY = frozenset({1000, 1005, 1006})
#: Used when the connection fails before any close code was exchanged.
ABNORMAL_CLOSURE: Final = 1006
#: Sessions whose newest delivered version a subscription remembers, to drop repeats.
SEEN_SESSIONS: Final = 10_000


# -- errors -----------------------------------------------------------------------------------


class RealtimeError(Exception):
    """Base of the realtime client's errors."""


class ConnectionLost(RealtimeError):
    """The connection went away while a command waited for its reply; the client
    reconnects by itself, so the command may be sent again."""


class CommandFailed(RealtimeError):
    """The server answered one command with an error; the connection stays open."""

    def __init__(self, code: int, message: str, *, temporary: bool = False) -> None:
        super().__init__(f"{code} {message}")
        self.code = code
        self.message = message
        #: Worth retrying (the table's ``retry`` for error codes, or the server's flag).
        self.temporary = temporary

    @property
    def entry(self) -> codes.Code | None:
        """The entry of :mod:`sessionhub.core.codes` for this error, if it is one of ours."""
        return codes.lookup(self.code, codes.Family.ERROR)


class PermissionDenied(CommandFailed):
    """Error 103: this principal may not follow the topic (the connection stays usable)."""


class Unsubscribed(RealtimeError):
    """The server ended one subscription for good (an ``unsubscribe`` push below 2500)."""

    def __init__(self, topic: str, code: int, reason: str) -> None:
        super().__init__(f"{topic}: unsubscribed with {code} {reason}")
        self.topic = topic
        self.code = code
        self.reason = reason


class Disconnected(RealtimeError):
    """The client stopped: a final disconnect code, or reconnecting failed ``attempts``
    times in a row (``gave_up``). ``code``/``reason`` are the last close's."""

    def __init__(self, code: int, reason: str, *, gave_up: bool = False, attempts: int = 0) -> None:
        what = f"gave up after {attempts} attempts; last close" if gave_up else "disconnected"
        super().__init__(f"{what}: {code} {reason}".rstrip())
        self.code = code
        self.reason = reason
        self.gave_up = gave_up
        self.attempts = attempts
        #: What :mod:`sessionhub.core.codes` says about ``code``.
        self.reconnect = should_reconnect(code)


def command_error(error: dict[str, Any]) -> CommandFailed:
    """The typed error for a reply's ``error`` object."""
    code = int(error.get("code", codes.INTERNAL.code))
    entry = codes.lookup(code, codes.Family.ERROR)
    message = str(error.get("message") or (entry.message if entry else "error"))
    temporary = bool(error.get("temporary")) or bool(entry and entry.retry)
    cls = PermissionDenied if code == codes.PERMISSION_DENIED.code else CommandFailed
    return cls(code, message, temporary=temporary)


def should_reconnect(code: int) -> bool:
    """Whether a connection closed with ``code`` is worth reconnecting: the shared table's
    answer (:func:`sessionhub.core.codes.reconnects`), nothing of our own."""
    return codes.reconnects(code)


# -- what a subscription yields ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Publication:
    """One publication on ``topic``; ``data`` is the decoded event."""

    topic: str
    offset: int
    epoch: str
    data: Any


@dataclass(frozen=True, slots=True)
class Recovery:
    """A subscription (re)started from a known position (after a reconnect, a resubscribe
    request from the server, or ``subscribe(since=...)``).

    ``recovered=True``: the next ``missed`` items are exactly the publications missed, in
    order, and nothing was lost. ``recovered=False``: publications were lost (history gone,
    a new epoch); reload your state. ``offset``/``epoch`` are where the stream goes on from.
    """

    topic: str
    recovered: bool
    missed: int
    offset: int
    epoch: str


class _End:
    """Queued when a subscription ends normally (unsubscribe, client closed)."""


_END: Final = _End()


class Subscription:
    """A subscription to one topic: ``async for item in sub`` yields :class:`Publication`
    and :class:`Recovery` items in stream order, and raises the error that ended it
    (:class:`Unsubscribed`, :class:`Disconnected`, :class:`PermissionDenied`...).

    Items are buffered without bound until read: read them, or the process grows.
    A session event whose ``(session_id, version)`` was delivered already (republished
    after a server crash) is dropped: each change reaches the reader once.
    """

    def __init__(self, client: RealtimeClient, topic: str) -> None:
        self.client = client
        self.topic = topic
        #: The last position delivered (or the one subscribed from); ``None`` before any.
        self.offset: int | None = None
        self.epoch: str | None = None
        #: The outcome of the last recovery, ``None`` if the subscription never recovered.
        self.recovered: bool | None = None
        self._queue: asyncio.Queue[Publication | Recovery | _End | BaseException] = asyncio.Queue()
        self._ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._sent_gen = -1  # the connection generation a subscribe was sent on
        self._live = False  # publications are delivered only after the subscribe reply
        self._retries = 0
        self._ended = False
        #: session id -> the newest version delivered (insertion order: oldest first).
        self._seen: OrderedDict[str, int] = OrderedDict()

    def __aiter__(self) -> AsyncIterator[Publication | Recovery]:
        return self

    async def __anext__(self) -> Publication | Recovery:
        item = await self._queue.get()
        if isinstance(item, BaseException):
            self._queue.put_nowait(item)  # every later read raises it too
            raise item
        if isinstance(item, _End):
            self._queue.put_nowait(item)
            raise StopAsyncIteration
        return item

    async def get(self, wait: float | None = None) -> Publication | Recovery:
        """The next item, waiting at most ``wait`` seconds (``TimeoutError``)."""
        async with asyncio.timeout(wait):
            return await self.__anext__()

    async def unsubscribe(self) -> None:
        """Stop following the topic; the iterator ends."""
        await self.client._unsubscribe(self)

    # -- fed by the client --------------------------------------------------------------------

    def _deliver(self, offset: int, data: Any) -> None:
        if offset:
            self.offset = offset
        if self._repeat(data):
            return
        self._queue.put_nowait(Publication(self.topic, offset, self.epoch or "", data))

    def _repeat(self, data: Any) -> bool:
        """Whether ``data`` is a session event already delivered (its identity is the
        session and the version, which a republication keeps); records it if not."""
        if not isinstance(data, dict):
            return False
        sid, version = data.get("session_id"), data.get("version")
        if not isinstance(sid, str) or not isinstance(version, int) or isinstance(version, bool):
            return False
        seen = self._seen.get(sid)
        if seen is not None and version <= seen:
            return True
        self._seen[sid] = version
        self._seen.move_to_end(sid)
        if len(self._seen) > SEEN_SESSIONS:
            self._seen.popitem(last=False)
        return False

    def _end(self, error: BaseException | None = None) -> None:
        if self._ended:
            return
        self._ended = True
        self._live = False
        if not self._ready.done():
            if error is not None:
                self._ready.set_exception(error)
                self._ready.exception()  # retrieved here: subscribe() may have timed out
            else:
                self._ready.set_result(None)
        self._queue.put_nowait(error if error is not None else _END)


# -- the client -------------------------------------------------------------------------------


class Backoff:
    """Exponential backoff with jitter: attempt ``n`` (0-based) waits
    ``min(cap, base * 2**n)`` scaled down by up to ``jitter`` (0..1) at random, so many
    clients cut off together do not come back in one wave."""

    def __init__(
        self,
        base: float = 0.25,
        cap: float = 10.0,
        jitter: float = 0.5,
        rng: Callable[[], float] = random.random,
    ) -> None:
        if not (0 <= jitter <= 1) or base <= 0 or cap < base:
            raise ValueError("need 0 < base <= cap and 0 <= jitter <= 1")
        self.base, self.cap, self.jitter, self.rng = base, cap, jitter, rng

    def delay(self, attempt: int) -> float:
        top = min(self.cap, self.base * 2 ** min(attempt, 32))
        return float(top * (1 - self.jitter * self.rng()))


Handler = Callable[[dict[str, Any] | None, CommandFailed | None], None]


class RealtimeClient:
    """A realtime connection that reconnects by itself.

    ``async with RealtimeClient(url, token) as rt: sub = await rt.subscribe("user:alice")``

    * ``max_attempts``: reconnect attempts in a row (after the first try) before giving
      up with :class:`Disconnected` (``gave_up=True``). The count starts again once a connection
      has stayed up for ``stable_after`` seconds, so a server that accepts and drops every
      connection at once still exhausts it.
    * ``backoff``: the delay between attempts (:class:`Backoff`).
    * ``command_timeout``: how long a command waits for its reply; also bounds opening.
    * ``ping_slack``: a connection whose server sent nothing for its ping interval plus
      this many seconds is taken as dead (closed and reconnected).
    """

    def __init__(
        self,
        url: str,
        token: TokenSource,
        *,
        max_attempts: int = 8,
        backoff: Backoff | None = None,
        command_timeout: float = 10.0,
        ping_slack: float = 10.0,
        stable_after: float = 5.0,
        name: str = "sessionhub-python",
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self.url = url
        self.token = token
        self.max_attempts = max_attempts
        self.backoff = backoff or Backoff()
        self.command_timeout = command_timeout
        self.ping_slack = ping_slack
        self.stable_after = stable_after
        self.name = name
        #: The server's id for the current connection.
        self.client_id: str | None = None
        #: Successful connections so far (1 after the first connect).
        self.connections = 0
        #: WebSocket opens tried so far, successful or not.
        self.attempts = 0
        #: How the recent connections (and failed attempts) ended: ``(code, reason)``.
        self.closes: deque[tuple[int, str]] = deque(maxlen=32)
        self._subs: dict[str, Subscription] = {}
        self._pending: dict[int, tuple[asyncio.Future[dict[str, Any]], Handler | None]] = {}
        self._next_id = 0
        self._gen = 0
        self._ws: ClientConnection | None = None
        self._connected = asyncio.Event()
        self._read_timeout: float | None = None
        self._disconnect_push: tuple[int, str] | None = None
        self._task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._final: RealtimeError | None = None
        self._closing = False

    # -- public API ---------------------------------------------------------------------------

    async def __aenter__(self) -> RealtimeClient:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    @property
    def connected(self) -> bool:
        return self._ws is not None

    @property
    def error(self) -> RealtimeError | None:
        """The error that stopped the client for good, if one did."""
        return self._final

    async def connect(self) -> None:
        """Connect (retrying within ``max_attempts``); raises :class:`Disconnected` or
        :class:`CommandFailed` when the server refuses for good."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())
        await self._wait_connected(None)

    async def subscribe(self, topic: str, since: tuple[int, str] | None = None) -> Subscription:
        """Follow ``topic``. With ``since=(offset, epoch)`` (e.g. a REST snapshot's
        ``stream``), start after that position: the first item is then a :class:`Recovery`.

        Raises :class:`PermissionDenied` (103) and other :class:`CommandFailed` errors; the
        connection and the other subscriptions carry on."""
        if self._final is not None:
            raise self._final
        if topic in self._subs:
            raise RealtimeError(f"already subscribed to {topic!r}")
        sub = Subscription(self, topic)
        if since is not None:
            sub.offset, sub.epoch = int(since[0]), str(since[1])
        self._subs[topic] = sub
        self._spawn(self._send_subscribe(sub))
        try:
            async with asyncio.timeout(self.command_timeout):
                await asyncio.shield(sub._ready)
        except BaseException:
            if self._subs.get(topic) is sub:
                del self._subs[topic]
            sub._end()
            raise
        return sub

    async def call(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """Send any command (``history``, ``presence``, ``ping``...) and return its result."""
        ws = await self._wait_connected(self.command_timeout)
        return await self._request(ws, method, params or {})

    async def aclose(self) -> None:
        """Close the connection and end every subscription's iterator."""
        self._closing = True
        ws = self._ws
        if ws is not None:
            with contextlib.suppress(Exception):
                await ws.close()
        tasks = [t for t in (self._task, *self._tasks) if t is not None]
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(BaseException):
                await t
        for sub in list(self._subs.values()):
            sub._end()
        self._subs.clear()

    async def wait_closed(self) -> None:
        """Wait until the client stops; raises the error that stopped it, if any."""
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(self._task)
        if self._final is not None:
            raise self._final

    # -- the connection loop ------------------------------------------------------------------

    async def _run(self) -> None:
        failures = 0
        try:
            # Bounded: ``failures`` grows on every attempt that did not stay up for
            # ``stable_after`` seconds and ends the loop past ``max_attempts``; each turn waits
            # for a connection or a backoff delay.
            while not self._closing:
                if failures:
                    await asyncio.sleep(self.backoff.delay(failures - 1))
                loop = asyncio.get_running_loop()
                started = loop.time()
                code, reason, was_up = await self._session()
                self.closes.append((code, reason))
                if self._closing:
                    return
                if not should_reconnect(code):
                    raise Disconnected(code, reason)
                lived = loop.time() - started
                failures = 1 if was_up and lived >= self.stable_after else failures + 1
                if failures > self.max_attempts:
                    raise Disconnected(code, reason, gave_up=True, attempts=failures - 1)
                log.info("connection closed (%s %s); reconnecting", code, reason)
        except RealtimeError as exc:
            self._stop(exc)

    def _stop(self, exc: RealtimeError) -> None:
        self._final = exc
        for sub in list(self._subs.values()):
            sub._end(exc)
        self._subs.clear()

    async def _session(self) -> tuple[int, str, bool]:
        """One connection, from opening to close: ``(close code, reason, was connected)``.
        Raises :class:`CommandFailed` when the ``connect`` command is refused for good."""
        token = self.token if isinstance(self.token, str) else await self.token()
        self.attempts += 1
        try:
            ws = await connect(
                self.url,
                open_timeout=self.command_timeout,
                ping_interval=None,  # the protocol's own pings keep the connection alive
                close_timeout=2,
                max_size=None,
                compression=None,
            )
        except InvalidURI as exc:
            raise RealtimeError(str(exc)) from exc
        except (OSError, TimeoutError, InvalidHandshake) as exc:
            return ABNORMAL_CLOSURE, f"cannot connect: {exc}", False
        self._gen += 1
        self._disconnect_push = None
        self._read_timeout = self.command_timeout
        reader = asyncio.get_running_loop().create_task(self._read_loop(ws))
        was_up = False
        try:
            try:
                params = {"token": token, "name": self.name}
                result = await self._request(ws, "connect", params)
            except CommandFailed as exc:
                await ws.close()
                if exc.temporary or (exc.code == codes.TOKEN_EXPIRED.code and callable(self.token)):
                    return codes.CONNECTION_CLOSED.code, exc.message, False
                raise
            except (ConnectionLost, TimeoutError):
                await ws.close()
            else:
                was_up = True
                self.client_id = str(result.get("client", ""))
                self.connections += 1
                ping = result.get("ping")
                self._read_timeout = (
                    float(ping) + self.ping_slack if isinstance(ping, int | float) else None
                )
                self._ws = ws
                self._connected.set()
                for sub in list(self._subs.values()):
                    self._spawn(self._send_subscribe(sub))
            code, reason = await reader
            return code, reason, was_up
        finally:
            self._ws = None
            self._connected.clear()
            if not reader.done():
                reader.cancel()
                with contextlib.suppress(BaseException):
                    await reader
            for sub in self._subs.values():
                sub._live = False
            for fut, _ in self._pending.values():
                if not fut.done():
                    fut.set_exception(ConnectionLost("connection lost"))
            self._pending.clear()

    async def _read_loop(self, ws: ClientConnection) -> tuple[int, str]:
        """Read frames until the connection ends; the close code and reason."""
        try:
            return await self._read_frames(ws)
        finally:
            # Commands still waiting (``connect`` among them) learn at once that the
            # connection is gone rather than after their timeout.
            for fut, _ in self._pending.values():
                if not fut.done():
                    fut.set_exception(ConnectionLost("connection lost"))
            self._pending.clear()

    async def _read_frames(self, ws: ClientConnection) -> tuple[int, str]:
        # Bounded by the connection: every turn waits for a frame, and a server silent
        # for longer than its ping interval (plus slack) ends it.
        while True:
            try:
                async with asyncio.timeout(self._read_timeout):
                    frame = await ws.recv()
            except TimeoutError:
                await ws.close()
                return codes.NO_PONG.code, "no ping from the server"
            except ConnectionClosed as exc:
                return self._close_code(exc)
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
                    await self._dispatch(ws, msg)

    def _close_code(self, exc: ConnectionClosed) -> tuple[int, str]:
        code, reason = ABNORMAL_CLOSURE, "connection lost"
        if exc.rcvd is not None:
            code, reason = exc.rcvd.code, exc.rcvd.reason
        if code in _TRANSPORT_ONLY and self._disconnect_push is not None:
            # The close frame got lost or said nothing; the disconnect push said why.
            code, reason = self._disconnect_push
        if not reason:
            entry = codes.lookup(code)
            reason = entry.message if entry else ""
        return code, reason

    async def _dispatch(self, ws: ClientConnection, msg: dict[str, Any]) -> None:
        cid = msg.get("id")
        if isinstance(cid, int) and cid > 0:
            fut, handler = self._pending.pop(cid, (None, None))
            error = msg.get("error")
            exc = command_error(error) if isinstance(error, dict) else None
            result = None
            if exc is None:
                values = [v for k, v in msg.items() if k != "id" and isinstance(v, dict)]
                result = values[0] if values else {}
            if handler is not None:
                # Run before the next message so a subscribe's recovered publications are
                # queued ahead of the live ones that may share this frame.
                handler(result, exc)
            if fut is not None and not fut.done():
                if exc is not None:
                    fut.set_exception(exc)
                else:
                    fut.set_result(result or {})
            return
        push = msg.get("push")
        if isinstance(push, dict):
            self._on_push(push)
            return
        if not msg:  # the server's ping: answer with a pong
            with contextlib.suppress(ConnectionClosed):
                await ws.send("{}")

    def _on_push(self, push: dict[str, Any]) -> None:
        topic = str(push.get("channel", ""))
        if isinstance(pub := push.get("pub"), dict):
            self._on_pub(topic, pub)
        elif isinstance(unsub := push.get("unsubscribe"), dict):
            self._on_unsubscribe_push(topic, unsub)
        elif isinstance(disc := push.get("disconnect"), dict):
            self._disconnect_push = (int(disc.get("code", 0)), str(disc.get("reason", "")))

    def _on_pub(self, topic: str, pub: dict[str, Any]) -> None:
        sub = self._subs.get(topic)
        if sub is None or not sub._live:
            return
        offset = int(pub.get("offset", 0))
        if offset and sub.offset is not None:
            if offset <= sub.offset:
                return  # a repeat of something already delivered
            if offset > sub.offset + 1:
                # A hole: never deliver past it; resubscribe and recover what is missing.
                log.warning("%s: gap %s -> %s; recovering", topic, sub.offset, offset)
                self._resubscribe(sub, unsubscribe_first=True)
                return
        sub._deliver(offset, pub.get("data"))

    def _on_unsubscribe_push(self, topic: str, unsub: dict[str, Any]) -> None:
        sub = self._subs.get(topic)
        if sub is None:
            return
        code = int(unsub.get("code", codes.UNSUBSCRIBE_SERVER.code))
        entry = codes.lookup(code, codes.Family.UNSUBSCRIBE)
        if entry.retry if entry is not None else code >= codes.UNSUBSCRIBE_INSUFFICIENT.code:
            self._resubscribe(sub, unsubscribe_first=False)
        else:
            del self._subs[topic]
            sub._end(Unsubscribed(topic, code, str(unsub.get("reason", ""))))

    # -- subscriptions ------------------------------------------------------------------------

    def _resubscribe(self, sub: Subscription, *, unsubscribe_first: bool) -> None:
        sub._live = False
        sub._sent_gen = -1
        self._spawn(self._resubscribe_task(sub, unsubscribe_first))

    async def _resubscribe_task(self, sub: Subscription, unsubscribe_first: bool) -> None:
        ws = self._ws
        if ws is None:
            return  # the next connection resubscribes it
        if unsubscribe_first:
            with contextlib.suppress(RealtimeError, TimeoutError):
                await self._request(ws, "unsubscribe", {"channel": sub.topic})
        await self._send_subscribe(sub)

    async def _send_subscribe(self, sub: Subscription) -> None:
        ws, gen = self._ws, self._gen
        if ws is None or sub._sent_gen == gen or self._subs.get(sub.topic) is not sub:
            return
        sub._sent_gen = gen
        sub._live = False
        params: dict[str, Any] = {"channel": sub.topic}
        recovering = sub.offset is not None and sub.epoch is not None
        if recovering:
            params.update(recover=True, offset=sub.offset, epoch=sub.epoch)

        def on_reply(result: dict[str, Any] | None, exc: CommandFailed | None) -> None:
            self._on_subscribed(sub, gen, recovering, result, exc)

        with contextlib.suppress(RealtimeError):
            try:
                await self._request(ws, "subscribe", params, on_reply)
            except TimeoutError:
                # No answer on a live connection: start over on a fresh one.
                log.warning("%s: no subscribe reply; reconnecting", sub.topic)
                await ws.close(codes.CONNECTION_CLOSED.code, "no subscribe reply")

    def _on_subscribed(
        self,
        sub: Subscription,
        gen: int,
        recovering: bool,
        result: dict[str, Any] | None,
        exc: CommandFailed | None,
    ) -> None:
        if self._subs.get(sub.topic) is not sub or gen != self._gen:
            return
        if exc is not None:
            if exc.temporary and sub._retries < self.max_attempts:
                sub._retries += 1
                sub._sent_gen = -1
                self._spawn(self._retry_subscribe(sub, self.backoff.delay(sub._retries - 1)))
            else:
                del self._subs[sub.topic]
                sub._end(exc)
            return
        assert result is not None
        sub._retries = 0
        epoch = str(result.get("epoch", ""))
        offset = int(result.get("offset", 0))
        if recovering:
            recovered = bool(result.get("recovered"))
            pubs = [p for p in result.get("publications") or [] if isinstance(p, dict)]
            sub.recovered = recovered
            sub._queue.put_nowait(Recovery(sub.topic, recovered, len(pubs), offset, epoch))
            sub.epoch = epoch
            for pub in pubs:
                at = int(pub.get("offset", 0))
                if not (at and sub.offset is not None and at <= sub.offset):
                    sub._deliver(at, pub.get("data"))
        sub.offset, sub.epoch = offset, epoch
        sub._live = True
        if not sub._ready.done():
            sub._ready.set_result(None)

    async def _retry_subscribe(self, sub: Subscription, delay: float) -> None:
        await asyncio.sleep(delay)
        await self._send_subscribe(sub)

    async def _unsubscribe(self, sub: Subscription) -> None:
        if self._subs.get(sub.topic) is sub:
            del self._subs[sub.topic]
            ws = self._ws
            if ws is not None:
                with contextlib.suppress(RealtimeError, TimeoutError):
                    await self._request(ws, "unsubscribe", {"channel": sub.topic})
        sub._end()

    # -- plumbing -----------------------------------------------------------------------------

    async def _request(
        self,
        ws: ClientConnection,
        method: str,
        params: dict[str, Any],
        handler: Handler | None = None,
    ) -> dict[str, Any]:
        self._next_id += 1
        cid = self._next_id
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[cid] = (fut, handler)
        try:
            try:
                await ws.send(orjson.dumps({"id": cid, method: params}).decode())
            except ConnectionClosed:
                raise ConnectionLost("connection lost") from None
            async with asyncio.timeout(self.command_timeout):
                return await fut
        finally:
            self._pending.pop(cid, None)

    async def _wait_connected(self, wait: float | None) -> ClientConnection:
        if self._final is not None:
            raise self._final
        if self._task is None:
            raise RealtimeError("not connected: call connect() first")
        if self._ws is None:
            waiter = asyncio.ensure_future(self._connected.wait())
            try:
                await asyncio.wait(
                    {waiter, self._task}, timeout=wait, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                waiter.cancel()
            if self._task.done() and not self._task.cancelled():
                self._task.result()  # an unexpected crash surfaces here
        if self._final is not None:
            raise self._final
        if self._ws is None:
            raise ConnectionLost("not connected (reconnecting)")
        return self._ws

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
