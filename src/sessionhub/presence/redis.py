"""Redis presence: leases shared by every node, so a dead node's clients lapse everywhere.

Layout (``prefix`` namespaces every name, so two clusters can share a Redis):

- ``{prefix}:presence:{topic}`` - sorted set, client id -> lease expiry (``clock`` seconds);
- ``{prefix}:presence-info:{topic}`` - hash, client id -> encoded ``ClientInfo``;
- ``{prefix}:presence-due`` - sorted set, topic -> its earliest lease expiry: the topics
  ``expire`` has to visit, so it never scans every topic;
- ``{prefix}:presence-events`` - one pub/sub channel for the events of every topic
  (``{prefix}:db{n}:presence-events`` in database ``n`` > 0: pub/sub ignores databases, and
  two clusters on one server must not hear each other).

Every change is one Lua script that also publishes its events, so removing an expired lease
and announcing it are one atomic step: when several nodes run ``expire`` at once, each lost
lease is removed, and announced (``lost``), exactly once. The node that ran the script tells
its own watchers from the script's reply, synchronously as the memory implementation does;
the other nodes hear it on the channel (a node skips its own messages).

One channel for all topics, not one per topic: presence events are few (a join or leave per
subscription), and a node subscribed once at start never has a window in which a new
watcher misses events. Each node filters what it hears by the topics it watches. Events
published while a node's connection is down are lost to that node (it reconnects by itself);
``presence`` always reads the truth.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import Any, TypeVar, cast

from redis.asyncio import Redis
from redis.exceptions import RedisError

from ..core.streams import ClientInfo, PresenceEvent
from ..redis_calls import Calls, Script, redis_pool
from .base import PresenceListener

log = logging.getLogger(__name__)
T = TypeVar("T")

# KEYS: 1 leases, 2 infos, 3 due index. ARGV: 1 node, 2 topic, 3 channel, 4 now, then the
# script's own. An event is ``node:kind:<len>:topic<len>:client`` + the encoded info.
_COMMON = """
local function event(kind, client, info)
  return ARGV[1] .. ':' .. kind .. ':' .. #ARGV[2] .. ':' .. ARGV[2] .. #client .. ':'
    .. client .. info
end
local function expire_dead()
  local out = {}
  local dead = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[4], 'LIMIT', 0, 10000)
  for _, client in ipairs(dead) do
    local info = redis.call('HGET', KEYS[2], client) or '0:'
    redis.call('ZREM', KEYS[1], client)
    redis.call('HDEL', KEYS[2], client)
    redis.call('PUBLISH', ARGV[3], event('x', client, info))
    out[#out + 1] = client
    out[#out + 1] = info
  end
  return out
end
local function reindex()
  local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  if first[2] then
    redis.call('ZADD', KEYS[3], first[2], ARGV[2])
  else
    redis.call('ZREM', KEYS[3], ARGV[2])
  end
end
"""

#: ARGV 5 expiry, 6 client, 7 info, 8 key ttl (ms). Returns ``{new (0|1), lost...}``.
_JOIN = (
    _COMMON
    + """
local lost = expire_dead()
local new = redis.call('ZSCORE', KEYS[1], ARGV[6]) == false
redis.call('ZADD', KEYS[1], ARGV[5], ARGV[6])
redis.call('HSET', KEYS[2], ARGV[6], ARGV[7])
if new then redis.call('PUBLISH', ARGV[3], event('j', ARGV[6], ARGV[7])) end
reindex()
-- Only so that a topic every node forgot does not stay for ever; leases end by score.
for _, key in ipairs({KEYS[1], KEYS[2]}) do
  if redis.call('PTTL', key) < tonumber(ARGV[8]) then redis.call('PEXPIRE', key, ARGV[8]) end
end
table.insert(lost, 1, new and 1 or 0)
return lost
"""
)

#: ARGV 5 client. Returns the client's encoded info, or nil if it was not present.
_LEAVE = (
    _COMMON
    + """
local info = redis.call('HGET', KEYS[2], ARGV[5])
if not info then return false end
redis.call('ZREM', KEYS[1], ARGV[5])
redis.call('HDEL', KEYS[2], ARGV[5])
redis.call('PUBLISH', ARGV[3], event('l', ARGV[5], info))
reindex()
return info
"""
)

#: ARGV 5 "1" to return the live presence too. Returns ``{lost, {client, info, ...}}``.
_EXPIRE = (
    _COMMON
    + """
local lost = expire_dead()
reindex()
if ARGV[5] == '1' then return {lost, redis.call('HGETALL', KEYS[2])} end
return {lost, {}}
"""
)


_JOIN_SCRIPT, _LEAVE_SCRIPT, _EXPIRE_SCRIPT = Script(_JOIN), Script(_LEAVE), Script(_EXPIRE)
_WATCHDOG = b"sessionhub-presence-watchdog"


def encode_info(info: ClientInfo) -> bytes:
    """``<len>:user`` then, if there is one, ``+`` and the connection info (binary-safe)."""
    user = info.user.encode()
    tail = b"" if info.conn_info is None else b"+" + info.conn_info
    return b"%d:%s%s" % (len(user), user, tail)


def _split(data: bytes) -> tuple[bytes, bytes]:
    """``<len>:value rest`` -> (value, rest)."""
    size, _, rest = data.partition(b":")
    n = int(size)
    return rest[:n], rest[n:]


def decode_info(client: str, data: bytes) -> ClientInfo:
    user, tail = _split(data)
    return ClientInfo(client, user.decode(), tail[1:] if tail.startswith(b"+") else None)


class RedisPresence:
    """``Presence`` over Redis, for many nodes (see the module doc).

    ``clock`` gives lease times; leases are compared across nodes, so it is the wall clock by
    default (an injected clock works against a real Redis).
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "sessionhub",
        clock: Callable[[], float] = time.time,
        socket_timeout: float = 2.0,
        socket_connect_timeout: float = 2.0,
        health_check_interval: float = 10.0,
        max_connections: int = 16,
    ) -> None:
        self.prefix = prefix
        self.node = secrets.token_hex(8)
        self._clock = clock
        self._pool = redis_pool(
            url,
            name=f"{prefix}-presence-{self.node}",
            socket_timeout=socket_timeout,
            socket_connect_timeout=socket_connect_timeout,
            health_check_interval=health_check_interval,
            max_connections=max_connections,
        )
        self._redis = Redis(connection_pool=self._pool)
        kw = self._pool.connection_kwargs
        self._timeout = socket_timeout * 2 + socket_connect_timeout + 0.5
        # Every script here may run twice without harm - a join is a renewal the second
        # time, a leave finds nothing, an expiry nothing more to expire - so each call is
        # tried once more after a broken connection.
        self._calls = Calls(self._pool, self._timeout)
        self._ping_interval = health_check_interval
        db = int(kw.get("db") or 0)
        self._channel = f"{prefix if db == 0 else f'{prefix}:db{db}'}:presence-events".encode()
        self._due = f"{prefix}:presence-due"
        self._watchers: dict[str, list[PresenceListener]] = {}
        self._live = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def channel(self) -> bytes:
        """The pub/sub channel every node announces joins and leaves on."""
        return self._channel

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Start hearing other nodes' events; waits (bounded) until the channel is live, so
        a watcher added after ``start`` misses nothing. Redis need not be up yet."""
        if self._task is None:
            self._task = asyncio.create_task(self._listen(), name="sessionhub-presence-pubsub")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._live.wait(), self._timeout)

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            # Cancelled again if it goes on: on Python 3.11 a cancel that meets an expiring
            # ``asyncio.timeout`` (redis-py reads with one) turns into a TimeoutError.
            for _ in range(20):
                task.cancel()
                done, _ = await asyncio.wait({task}, timeout=0.5)
                if done:
                    break
        self._watchers.clear()
        await self._redis.aclose()
        await self._pool.aclose()

    # -- calls ----------------------------------------------------------------------------

    async def _call(self, what: str, make: Callable[[], Awaitable[T]]) -> T:
        """Run one call, bounded; ``Unavailable`` if Redis does not answer."""
        return await self._calls(what, make, idempotent=True)

    def _keys(self, topic: str) -> list[str]:
        return [
            f"{self.prefix}:presence:{topic}",
            f"{self.prefix}:presence-info:{topic}",
            self._due,
        ]

    def _args(self, topic: str, *more: Any) -> list[Any]:
        return [self.node, topic, self._channel, repr(self._clock()), *more]

    def _notify(self, topic: str, event: PresenceEvent) -> None:
        for listener in tuple(self._watchers.get(topic, ())):
            try:
                listener(event)
            except Exception:  # one failing watcher must not stop the others
                log.exception("presence watcher failed on %s", topic)

    def _lost(self, topic: str, flat: Sequence[bytes]) -> int:
        for i in range(0, len(flat) - 1, 2):
            info = decode_info(flat[i].decode(), flat[i + 1])
            self._notify(topic, PresenceEvent(topic, False, info, "lost"))
        return len(flat) // 2

    # -- the Presence protocol ------------------------------------------------------------

    async def join(self, topic: str, info: ClientInfo, *, ttl: float) -> bool:
        expiry = repr(self._clock() + ttl)
        key_ttl = math.ceil(max(ttl, 60.0) * 2 * 1000)
        args = self._args(topic, expiry, info.client, encode_info(info), key_ttl)
        keys = self._keys(topic)
        reply = await self._call("join", lambda: _JOIN_SCRIPT(self._redis, keys, args))
        self._lost(topic, reply[1:])
        new = bool(reply[0] == 1)
        if new:
            self._notify(topic, PresenceEvent(topic, True, info))
        return new

    async def leave(self, topic: str, client: str) -> bool:
        args = self._args(topic, client)
        keys = self._keys(topic)
        data = await self._call("leave", lambda: _LEAVE_SCRIPT(self._redis, keys, args))
        if data is None:
            return False
        self._notify(topic, PresenceEvent(topic, False, decode_info(client, data), "left"))
        return True

    async def presence(self, topic: str) -> dict[str, ClientInfo]:
        args = self._args(topic, "1")
        keys = self._keys(topic)
        lost, flat = await self._call("presence", lambda: _EXPIRE_SCRIPT(self._redis, keys, args))
        self._lost(topic, lost)
        out: dict[str, ClientInfo] = {}
        for i in range(0, len(flat) - 1, 2):
            client = flat[i].decode()
            out[client] = decode_info(client, flat[i + 1])
        return out

    async def stats(self, topic: str) -> tuple[int, int]:
        clients = await self.presence(topic)
        return len(clients), len({i.user for i in clients.values()})

    def watch(self, topic: str, listener: PresenceListener) -> Callable[[], None]:
        self._watchers.setdefault(topic, []).append(listener)

        def unwatch() -> None:
            listeners = self._watchers.get(topic)
            if listeners is not None and listener in listeners:
                listeners.remove(listener)
                if not listeners:
                    del self._watchers[topic]

        return unwatch

    async def expire(self) -> int:
        """Remove the leases that ran out on every topic (whichever node holds them)."""
        removed = 0
        for _ in range(100):  # pages of due topics; the rest waits for the next call
            now = repr(self._clock())
            due = await self._call(
                "expire",
                partial(self._redis.zrangebyscore, self._due, "-inf", now, start=0, num=100),
            )
            for name in cast(list[bytes], due):
                topic = name.decode()
                args, keys = self._args(topic, "0"), self._keys(topic)
                lost, _ = await self._call(
                    "expire", partial(_EXPIRE_SCRIPT, self._redis, keys, args)
                )
                removed += self._lost(topic, lost)
            if len(due) < 100:
                break
        return removed

    # -- other nodes' events --------------------------------------------------------------

    def _on_message(self, data: bytes) -> None:
        node, kind, rest = data.split(b":", 2)
        if node.decode() == self.node:
            return  # told our own watchers already, from the script's reply
        topic_b, rest = _split(rest)
        topic = topic_b.decode()
        if topic not in self._watchers:
            return
        client, info = _split(rest)
        ci = decode_info(client.decode(), info)
        if kind == b"j":
            self._notify(topic, PresenceEvent(topic, True, ci))
        else:
            self._notify(topic, PresenceEvent(topic, False, ci, "left" if kind == b"l" else "lost"))

    async def _listen(self) -> None:
        """Subscribe to the events channel and keep it so: PING when quiet, give up a
        connection silent for two intervals, reconnect with backoff (doubling, jitter)."""
        loop = asyncio.get_running_loop()
        first, longest = 0.05, 5.0
        delay = first
        while True:  # until close() cancels it
            pubsub = self._redis.pubsub()
            try:
                await pubsub.subscribe(self._channel)
                heard = loop.time()
                while True:
                    msg = await pubsub.get_message(timeout=self._ping_interval)
                    now = loop.time()
                    if msg is None:
                        if now - heard >= 2 * self._ping_interval:
                            raise TimeoutError(f"no reply from Redis for {now - heard:.1f}s")
                        await pubsub.ping(_WATCHDOG)
                        continue
                    heard = now
                    if msg["type"] == "subscribe":
                        self._live.set()
                        delay = first
                    elif msg["type"] == "message":
                        try:
                            self._on_message(msg["data"])
                        except Exception:
                            log.exception("handling a presence event failed")
            except (RedisError, OSError) as exc:
                log.warning("Redis presence events lost (%s); reconnecting in %.2fs", exc, delay)
            finally:
                self._live.clear()
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(longest, delay * 2)
