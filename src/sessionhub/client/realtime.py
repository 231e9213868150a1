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

A publication's identity is its event's ``(session_id, version)``, not its offset: repeats
are dropped by it (:mod:`sessionhub.client.subscription` says how).

This module is the client users import from; it holds the subscription protocol
(subscribe, resubscribe, recover, follow the offsets) on top of its parts, each a module of
its own and re-exported here: :mod:`.connection` (the socket, reconnects, commands),
:mod:`.wire` (the JSON framing), :mod:`.subscription` (what a reader gets, repeats dropped)
and :mod:`.realtime_errors` (the errors, and what a code means).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from types import TracebackType
from typing import Any

from ..core import codes
from .connection import Backoff as Backoff
from .connection import Connection
from .connection import Handler as Handler
from .connection import TokenSource as TokenSource
from .realtime_errors import CommandFailed as CommandFailed
from .realtime_errors import ConnectionLost as ConnectionLost
from .realtime_errors import Disconnected as Disconnected
from .realtime_errors import PermissionDenied as PermissionDenied
from .realtime_errors import RealtimeError as RealtimeError
from .realtime_errors import Unsubscribed as Unsubscribed
from .realtime_errors import command_error as command_error
from .realtime_errors import should_reconnect as should_reconnect
from .subscription import _END as _END
from .subscription import SEEN_SESSIONS as SEEN_SESSIONS
from .subscription import Publication as Publication
from .subscription import Recovery as Recovery
from .subscription import Subscription as Subscription
from .subscription import _End as _End
from .wire import _TRANSPORT_ONLY as _TRANSPORT_ONLY
from .wire import ABNORMAL_CLOSURE as ABNORMAL_CLOSURE

log = logging.getLogger("sessionhub.client")


class RealtimeClient(Connection):
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
        super().__init__(
            url,
            token,
            max_attempts=max_attempts,
            backoff=backoff,
            command_timeout=command_timeout,
            ping_slack=ping_slack,
            stable_after=stable_after,
            name=name,
        )
        self._subs: dict[str, Subscription] = {}

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

    async def aclose(self) -> None:
        """Close the connection and end every subscription's iterator."""
        await super().aclose()
        for sub in list(self._subs.values()):
            sub._end()
        self._subs.clear()

    # -- what the connection tells ------------------------------------------------------------

    def _on_connected(self) -> None:
        for sub in list(self._subs.values()):
            self._spawn(self._send_subscribe(sub))

    def _on_disconnected(self) -> None:
        for sub in self._subs.values():
            sub._live = False

    def _on_stopped(self, exc: RealtimeError) -> None:
        for sub in list(self._subs.values()):
            sub._end(exc)
        self._subs.clear()

    def _on_push(self, push: dict[str, Any]) -> None:
        topic = str(push.get("channel", ""))
        if isinstance(pub := push.get("pub"), dict):
            self._on_pub(topic, pub)
        elif isinstance(unsub := push.get("unsubscribe"), dict):
            self._on_unsubscribe_push(topic, unsub)
        else:
            super()._on_push(push)  # the disconnect push is the connection's

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
