"""One pub/sub connection per node, subscribed to exactly the channels the node listens to.

The broker says which channels it wants (``add``/``discard``, synchronous, from
``subscribe``); one task owns the connection: it connects, SUBSCRIBEs and UNSUBSCRIBEs as the
wanted set changes (batched: one command for every change made in the same loop turn), reads
messages, PINGs when the line is quiet, and reconnects with backoff when the connection drops
or goes silent. After every (re)connection it subscribes again to everything wanted.

It reports two things: each message (``on_message(channel, data)``) and each channel that has
become live (``on_live(channel)``: Redis confirmed the SUBSCRIBE, so every message published
from now on arrives). What was published while a channel was not live is lost to pub/sub;
``on_live`` is the broker's cue to compare its position with Redis and fill the gap from
the history.

Its own raw connection rather than redis-py's ``PubSub``: that one reconnects and
resubscribes inside its reads, out of sight, and drops PING replies, so neither the moment a
channel is live again nor a silent (half-open) connection could be seen.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable, Iterable

from redis.asyncio.connection import AbstractConnection
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

#: Channels per SUBSCRIBE/UNSUBSCRIBE command, so one command never grows without bound.
_BATCH = 500


def _chunks(items: Iterable[bytes]) -> Iterable[list[bytes]]:
    batch: list[bytes] = []
    for item in items:
        batch.append(item)
        if len(batch) == _BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


async def _push(response: object) -> object:
    return response


def _pass_pushes_through(conn: AbstractConnection) -> None:
    """With RESP3, hand pub/sub pushes to the reader as they are (as redis-py's own
    ``PubSub`` does): the default handler formats every message for a debug log first."""
    parser = getattr(conn, "_parser", None)
    setter = getattr(parser, "set_pubsub_push_handler", None)
    if setter is not None:
        setter(_push)


async def stop(task: asyncio.Task[None]) -> None:
    """Cancel ``task`` and wait for it, bounded. Cancelled again if it goes on: on Python
    3.11 a cancel that meets an expiring ``asyncio.timeout`` (redis-py reads with one) turns
    into a TimeoutError, which the reconnect loop would take for a network failure."""
    for _ in range(20):
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=0.5)
        if done:
            return
    log.error("the Redis pub/sub task did not stop")


class Subscriber:
    """Keeps one pub/sub connection subscribed to the wanted channels (see the module doc).

    ``ping_interval``: a connection that has said nothing for this long is PINGed, and one
    silent for twice as long is given up and replaced. ``backoff``: the first and the longest
    wait between connection attempts (doubling, with jitter).
    """

    def __init__(
        self,
        connect: Callable[[], AbstractConnection],
        *,
        on_message: Callable[[bytes, bytes], None],
        on_live: Callable[[bytes], None],
        ping_interval: float = 5.0,
        backoff: tuple[float, float] = (0.05, 5.0),
    ) -> None:
        self._connect = connect
        self._on_message = on_message
        self._on_live = on_live
        self._ping_interval = ping_interval
        self._backoff = backoff
        self._wanted: set[bytes] = set()
        #: Channels SUBSCRIBE was sent for on the current connection (and not UNSUBSCRIBEd).
        self._sent: set[bytes] = set()
        self._live: set[bytes] = set()
        self._dirty = asyncio.Event()
        self._write_lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        #: Whether a connection is up now; how many times one was (re)established.
        self.connected = False
        self.connections = 0

    # -- what the broker wants ------------------------------------------------------------

    def add(self, channel: bytes) -> None:
        if channel not in self._wanted:
            self._wanted.add(channel)
            self._dirty.set()

    def discard(self, channel: bytes) -> None:
        if channel in self._wanted:
            self._wanted.discard(channel)
            self._dirty.set()

    def is_live(self, channel: bytes) -> bool:
        """Whether Redis confirmed the subscription to ``channel`` on the current connection."""
        return channel in self._live and channel in self._wanted

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="sessionhub-redis-pubsub")

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            await stop(task)

    # -- the connection task --------------------------------------------------------------

    async def _run(self) -> None:
        first, longest = self._backoff
        delay = first
        while True:  # until close() cancels it
            conn: AbstractConnection | None = None
            try:
                conn = self._connect()
                await conn.connect()  # type: ignore[no-untyped-call]
                _pass_pushes_through(conn)
                self.connected = True
                self.connections += 1
                delay = first
                # A new connection is subscribed to nothing: subscribe again to all wanted.
                self._sent.clear()
                self._live.clear()
                self._dirty.set()
                await self._session(conn)
            except (RedisError, OSError) as exc:
                log.warning("Redis pub/sub connection lost (%s); reconnecting in %.2fs", exc, delay)
            except Exception:  # a bug, not the network: still keep the node listening
                log.exception("Redis pub/sub connection failed; reconnecting in %.2fs", delay)
            finally:
                self.connected = False
                self._sent.clear()
                self._live.clear()
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await conn.disconnect(nowait=True)
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(longest, delay * 2)

    async def _session(self, conn: AbstractConnection) -> None:
        """Read and control one connection until either fails.

        Two plain tasks and ``asyncio.wait``, not a ``TaskGroup``: on Python 3.11 a failing
        TaskGroup child leaves the parent task marked as cancelling, after which redis-py's
        timeouts take a later ``close()`` for their own and the task never stops.
        """
        reader = asyncio.create_task(self._read(conn))
        control = asyncio.create_task(self._control(conn))
        try:
            done, _ = await asyncio.wait({reader, control}, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()  # the failure that ended the session
        finally:
            for task in (reader, control):
                task.cancel()
            await asyncio.gather(reader, control, return_exceptions=True)

    async def _write(self, conn: AbstractConnection, *args: bytes | str) -> None:
        async with self._write_lock:
            await conn.send_command(*args, check_health=False)

    async def _control(self, conn: AbstractConnection) -> None:
        """Makes the connection's subscriptions follow the wanted set."""
        while True:  # until the connection fails or close() cancels the session
            await self._dirty.wait()
            self._dirty.clear()
            add = [c for c in self._wanted if c not in self._sent]
            drop = [c for c in self._sent if c not in self._wanted]
            for batch in _chunks(add):
                self._sent.update(batch)
                await self._write(conn, "SUBSCRIBE", *batch)
            for batch in _chunks(drop):
                self._sent.difference_update(batch)
                self._live.difference_update(batch)
                await self._write(conn, "UNSUBSCRIBE", *batch)

    async def _read(self, conn: AbstractConnection) -> None:
        loop = asyncio.get_running_loop()
        heard = loop.time()
        while True:  # until the connection fails or close() cancels the session
            # push_request: with RESP3 (redis-py's default) messages are pushes.
            reply = await conn.read_response(timeout=self._ping_interval, push_request=True)
            now = loop.time()
            if reply is None:  # quiet for a ping interval
                if now - heard >= 2 * self._ping_interval:
                    raise TimeoutError(f"no reply from Redis for {now - heard:.1f}s")
                await self._write(conn, "PING")
                continue
            heard = now
            if not isinstance(reply, list) or len(reply) < 2:
                continue  # PONG outside subscribed mode
            kind = reply[0]
            if kind == b"message":
                try:
                    self._on_message(reply[1], reply[2])
                except Exception:  # a bad message must not take the connection down
                    log.exception("handling a Redis pub/sub message failed")
            elif kind == b"subscribe":
                channel = reply[1]
                # A late confirmation of a channel dropped meanwhile is not a live channel.
                if channel in self._wanted and channel in self._sent:
                    self._live.add(channel)
                    try:
                        self._on_live(channel)
                    except Exception:
                        log.exception("handling a Redis pub/sub confirmation failed")
            elif kind == b"unsubscribe":
                self._live.discard(reply[1])
