"""What a subscription is: the stream of one topic as the reader sees it.

A :class:`Subscription` holds the position it delivered (offset and epoch, where a recovery
starts from), queues :class:`Publication` and :class:`Recovery` items in stream order, and
drops repeats. The client (:mod:`sessionhub.client.realtime`) decides when to (re)subscribe
and feeds it; this module owns what the reader gets.

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
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    # Only for the annotation: the client imports this module, not the reverse.
    from .realtime import RealtimeClient

#: Sessions whose newest delivered version a subscription remembers, to drop repeats.
SEEN_SESSIONS: Final = 10_000


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
