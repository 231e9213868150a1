"""The hot REST routes answered by the HTTP protocol itself, before ASGI.

The fast lane (``fastlane.py``) took FastAPI's routing out of a change, an action and a
heartbeat; what was left around them was the ASGI layer: a scope, receive and send
callables, four middleware frames, message dicts for the response head and body, a
Starlette response run as an ASGI app. Measured with ``bench/heartbeats.py`` (a paced
load, keep-alive connections), a bare ``asyncio`` protocol answering ``{}`` costs 37 µs
a request on this project's 2-core machine, a FastAPI route answering ``{}`` 200-300 µs: the
framework, not the work, was the heartbeat's cost.

So under ``sessionhub serve`` the HTTP protocol (``serving.BoundedHttp``) hands a request
for one of those routes to :func:`take` once its head is parsed. The request then runs as
a :class:`LaneCycle`, uvicorn's own request cycle with a different ``run_asgi``: it waits
for the body, asks the same :class:`~.fastlane.Lane` the ASGI middleware asks, writes the
answer's head and body in one write, and counts and logs it as ``ObserveMiddleware`` would
(``observe.record``). Whatever the lane leaves to FastAPI (a 401, a 422, any error it
words) goes through the ordinary ASGI path with the body already read, from the same
cycle, so answers, pipelining, keep-alive and shutdown behave as uvicorn's own.

Only requests whose framing is plain take this path: ``Content-Length`` (or no body) within
the body limit, no ``Transfer-Encoding``, no ``Expect: 100-continue``, no query string or
percent-encoding in the target. Anything else is uvicorn's and FastAPI's, unchanged.

This leans on uvicorn's httptools protocol (``HttpToolsProtocol``'s attributes and
``RequestResponseCycle``): ``pyproject.toml`` pins the tested range, and
``tests/test_httplane.py`` fails if either changes shape.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, cast

from starlette.responses import Response
from starlette.types import Scope
from uvicorn.protocols.http.flow_control import HIGH_WATER_LIMIT
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, RequestResponseCycle

from .fastlane import Hot, Lane
from .observe import Metrics, record

_METHODS = {b"PATCH": "PATCH", b"POST": "POST"}


class HttpLane:
    """What the HTTP protocol needs to answer the hot routes: the lane, the metrics and the
    body limit (a larger body is ``ObserveMiddleware``'s to refuse, through ASGI)."""

    def __init__(self, lane: Lane, metrics: Metrics, max_body: int) -> None:
        self.lane = lane
        self.metrics = metrics
        self.max_body = max_body


def take(protocol: Any, http: HttpLane) -> bool:
    """Start the request whose head ``protocol`` (a ``HttpToolsProtocol``) has just parsed
    as a :class:`LaneCycle`, as uvicorn's ``on_headers_complete`` starts its own cycles.
    False: not a request for the lane; uvicorn goes on as usual."""
    method = _METHODS.get(protocol.parser.get_method())
    url: bytes = protocol.url
    if (
        method is None
        or protocol.expect_100_continue
        or protocol.limit_concurrency is not None
        or protocol.root_path
        or not url.startswith(b"/api/sessions/")
        or b"?" in url
        or b"%" in url
        or b"#" in url
    ):
        return False
    try:
        path = url.decode("ascii")
    except UnicodeDecodeError:
        return False
    hot = http.lane.match(method, path)
    if hot is None:
        return False
    length = 0
    for name, value in protocol.headers:
        if name == b"transfer-encoding":
            return False
        if name == b"content-length":
            if not (value.isdigit() and int(value) <= http.max_body):
                return False
            length = int(value)
    version = protocol.parser.get_http_version()
    scope = protocol.scope
    scope["method"] = method
    if version != "1.1":
        scope["http_version"] = version
    scope["path"] = path
    scope["raw_path"] = url
    scope["query_string"] = b""
    cycle = LaneCycle(
        scope=scope,
        transport=protocol.transport,
        flow=protocol.flow,
        logger=protocol.logger,
        access_logger=protocol.access_logger,
        access_log=protocol.access_log,
        default_headers=protocol.server_state.default_headers,
        message_event=asyncio.Event(),
        expect_100_continue=False,
        keep_alive=version != "1.0" and protocol.parser.should_keep_alive(),
        on_response=protocol.on_response_complete,
    )
    cycle.http = http
    cycle.hot = hot
    existing = protocol.cycle
    protocol.cycle = cycle
    idle = existing is None or existing.response_complete
    if idle and length <= HIGH_WATER_LIMIT:
        # Started once its body is in (``complete``): then what needs no await is answered
        # there and then. (A larger body pauses reading until a task takes it.)
        cycle.deferred = True
    elif idle:
        protocol._start_asgi_task(cycle, protocol.app)
    else:  # pipelined behind a request still being answered: queued, as uvicorn queues
        protocol.flow.pause_reading()
        protocol.pipeline.appendleft((cycle, protocol.app))
    return True


def complete(protocol: Any) -> None:
    """The request's body is in (the protocol's ``on_message_complete``): a deferred lane
    request is answered now if it can be (``LaneCycle.answer_now``), else its task starts."""
    cycle = protocol.cycle
    if type(cycle) is LaneCycle and cycle.deferred:
        cycle.deferred = False
        if protocol.flow.write_paused or not cycle.answer_now():
            protocol._start_asgi_task(cycle, protocol.app)


class LaneCycle(RequestResponseCycle):
    """One lane request: uvicorn's cycle (body, flow control, disconnects, keep-alive,
    pipelining), answered by the lane, or by the ASGI app when the lane leaves it."""

    http: HttpLane
    hot: Hot
    #: Not started yet: waiting for its body (see ``take`` and ``complete``).
    deferred = False

    @property
    def _asgi(self) -> Scope:
        """The scope as the ASGI layer types it (uvicorn's ``HTTPScope`` is a TypedDict)."""
        return cast(Scope, self.scope)

    async def run_asgi(self, app: Any) -> None:
        start = time.perf_counter()
        try:
            while self.more_body and not self.disconnected:
                self.flow.resume_reading()
                await self.message_event.wait()
                self.message_event.clear()
            if self.disconnected:
                return
            response = await self.http.lane.answer(self._asgi, bytes(self.body), self.hot)
            if response is None:
                # FastAPI words this answer: the ASGI path, its receive() replaying the body.
                self.message_event.set()
                await super().run_asgi(app)
                return
            if self.flow.write_paused and not self.disconnected:
                await self.flow.drain()
            if not self.disconnected:
                self._write(response, start)
        except Exception as exc:  # a bug of the lane's own (answer() catches the handler's)
            self.logger.error("Exception in the HTTP lane", exc_info=exc)
            if not self.response_started and not self.disconnected:
                await self.send_500_response()
        finally:
            self.on_response = lambda: None

    def answer_now(self) -> bool:
        """Answer at once, from the protocol's callback, what needs no await (the lane's
        ``answer_now``); False: run as a task (``run_asgi``)."""
        start = time.perf_counter()
        response = self.http.lane.answer_now(self._asgi, self.hot)
        if response is None:
            return False
        self.more_body = False
        self._write(response, start)
        self.on_response = lambda: None
        return True

    def _write(self, response: Response, start: float) -> None:
        """The request's metrics and log line, then the whole answer in one write (head and
        body) and what uvicorn's ``send`` does once a response is complete. Counted before
        it is written, so a client that has its answer finds it in the metrics and the log
        (a test in another thread, a scrape right after)."""
        status = response.status_code
        record(self.http.metrics, self._asgi, status, start)
        head = [STATUS_LINE[status]]
        for name, value in self.default_headers:
            head += (name, b": ", value, b"\r\n")
        for name, value in response.raw_headers:
            head += (name, b": ", value, b"\r\n")
        if not self.keep_alive:
            head.append(b"connection: close\r\n")
        head += (b"\r\n", bytes(response.body))
        self.response_started = self.response_complete = True
        self.transport.write(b"".join(head))
        self.message_event.set()
        if not self.keep_alive:
            self.transport.close()
        self.on_response()
