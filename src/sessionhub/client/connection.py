"""One realtime connection that reconnects by itself: the socket, the reconnect loop with
its :class:`Backoff`, the server's pings, and the commands waiting for their replies.

It is the half of :class:`~sessionhub.client.realtime.RealtimeClient` that knows nothing of
subscriptions (the client subclasses :class:`Connection` and adds them), kept apart so that
each half can be read on its own. The subclass hears of the connection's life through
hooks: :meth:`Connection._on_connected`, :meth:`Connection._on_disconnected`,
:meth:`Connection._on_stopped` and :meth:`Connection._on_push`.

What a disconnect means is not decided here but by :func:`should_reconnect` (the shared
table of :mod:`sessionhub.core.codes`): a final code stops the client with
:class:`Disconnected`, any other reconnects after a bounded, jittered backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from ..core import codes
from . import wire
from .realtime_errors import (
    CommandFailed,
    ConnectionLost,
    Disconnected,
    RealtimeError,
    should_reconnect,
)
from .wire import ABNORMAL_CLOSURE

log = logging.getLogger("sessionhub.client")

#: A token, or a coroutine function returning one (called before every (re)connect, so a
#: client can renew an expiring token).
TokenSource = str | Callable[[], Awaitable[str]]

#: Called with a command's reply (result or error) as soon as it is read, before any later
#: message: what a subscribe's recovered publications need to stay ahead of live ones.
Handler = Callable[[dict[str, Any] | None, CommandFailed | None], None]


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


class Connection:
    """The connection under :class:`~sessionhub.client.realtime.RealtimeClient`, which
    documents the options (and gives them their defaults, in one place)."""

    def __init__(
        self,
        url: str,
        token: TokenSource,
        *,
        max_attempts: int,
        backoff: Backoff | None,
        command_timeout: float,
        ping_slack: float,
        stable_after: float,
        name: str,
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

    async def call(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """Send any command (``history``, ``presence``, ``ping``...) and return its result."""
        ws = await self._wait_connected(self.command_timeout)
        return await self._request(ws, method, params or {})

    async def aclose(self) -> None:
        """Close the connection and stop reconnecting."""
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

    async def wait_closed(self) -> None:
        """Wait until the client stops; raises the error that stopped it, if any."""
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(self._task)
        if self._final is not None:
            raise self._final

    # -- hooks for the subclass ---------------------------------------------------------------

    def _on_connected(self) -> None:
        """The ``connect`` command succeeded: the connection is up and commands may be sent."""

    def _on_disconnected(self) -> None:
        """The connection is gone (before the commands waiting on it fail)."""

    def _on_stopped(self, exc: RealtimeError) -> None:
        """The client stopped for good with ``exc`` (it is :attr:`error` already)."""

    def _on_push(self, push: dict[str, Any]) -> None:
        """A push from the server. The connection itself only needs the ``disconnect`` push
        (why the server is closing); a subclass handles the others and passes this one on."""
        if isinstance(disc := push.get("disconnect"), dict):
            self._disconnect_push = (int(disc.get("code", 0)), str(disc.get("reason", "")))

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
        self._on_stopped(exc)

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
                self._on_connected()
            code, reason = await reader
            return code, reason, was_up
        finally:
            self._ws = None
            self._connected.clear()
            if not reader.done():
                reader.cancel()
                with contextlib.suppress(BaseException):
                    await reader
            self._on_disconnected()
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
                return wire.close_code(exc, self._disconnect_push)
            for msg in wire.messages(frame):
                await self._dispatch(ws, msg)

    async def _dispatch(self, ws: ClientConnection, msg: dict[str, Any]) -> None:
        cid = msg.get("id")
        if isinstance(cid, int) and cid > 0:
            fut, handler = self._pending.pop(cid, (None, None))
            result, exc = wire.reply(msg)
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
                await ws.send(wire.PONG)

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
                await ws.send(wire.encode(cid, method, params))
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
