"""``BoundedHttp.connection_made`` (server/serving.py) is uvicorn's own but for where the
addresses come from: it must leave the protocol in the state uvicorn's leaves it in, and on
uvloop it must not ask the transport for its socket (uvloop keeps the pseudo-socket it makes,
and the address tuples that socket returned, for the connection's life: 364 bytes each)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from sessionhub.server.serving import _addresses, bounded_http_protocol


class FakeSocket:
    def __init__(self, sockname: Any, peername: Any) -> None:
        self.family = 0  # neither AF_INET nor AF_INET6: _nodelay leaves it alone
        self._sockname, self._peername = sockname, peername

    def getsockname(self) -> Any:
        return self._sockname

    def getpeername(self) -> Any:
        return self._peername


class FakeTransport(asyncio.Transport):
    """A transport that answers get_extra_info as asyncio's and uvloop's do, and records
    what it was asked."""

    def __init__(self, sockname: Any, peername: Any, ssl: bool = False) -> None:
        super().__init__()
        self.asked: list[str] = []
        self._info = {
            "socket": FakeSocket(sockname, peername),
            "sockname": sockname,
            "peername": peername,
            "sslcontext": object() if ssl else None,
        }

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        self.asked.append(name)
        return self._info.get(name, default)

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass


class UvloopTransport(FakeTransport):
    pass


UvloopTransport.__module__ = "uvloop.loop"  # what _nodelay and _addresses go by

ADDRESSES = [
    (("127.0.0.1", 8000), ("127.0.0.1", 51234)),
    (("::1", 8000, 0, 0), ("::1", 51234, 0, 0)),  # IPv6: four-tuples
    ("/run/sessionhub.sock", ""),  # a Unix socket: a path, and no peer address
]


def protocols(loop: asyncio.AbstractEventLoop) -> tuple[Any, Any]:
    config = Config(app=None, timeout_keep_alive=5)
    config.load()  # type: ignore[no-untyped-call]
    state = ServerState()
    ours = bounded_http_protocol()
    assert isinstance(ours, type)
    make: Any = ours
    return (
        HttpToolsProtocol(config=config, server_state=state, app_state={}, _loop=loop),
        make(config=config, server_state=state, app_state={}, _loop=loop),
    )


@pytest.mark.parametrize("ssl", [False, True])
@pytest.mark.parametrize(("sockname", "peername"), ADDRESSES)
def test_connection_made_leaves_the_state_uvicorns_leaves(
    sockname: Any, peername: Any, ssl: bool
) -> None:
    loop = asyncio.new_event_loop()
    try:
        theirs, ours = protocols(loop)
        theirs.connection_made(FakeTransport(sockname, peername, ssl))
        ours.connection_made(FakeTransport(sockname, peername, ssl))
        for name in ("server", "client", "scheme"):
            assert getattr(ours, name) == getattr(theirs, name), name
        assert type(ours.flow) is type(theirs.flow)
        assert ours in ours.connections and theirs in theirs.connections
        # Every field uvicorn's connection_made sets, ours sets: a newer uvicorn that sets
        # one more fails here.
        fresh_theirs, fresh_ours = protocols(loop)
        # And at construction none more than uvicorn's: past CPython's 30 shared keys each
        # HTTP connection would get a dict of its own (1.3 KB).
        assert set(vars(fresh_ours)) == set(vars(fresh_theirs))
        changed = {k for k, v in vars(theirs).items() if vars(fresh_theirs).get(k) is not v}
        ours_changed = {k for k, v in vars(ours).items() if vars(fresh_ours).get(k) is not v}
        assert changed <= ours_changed, changed - ours_changed
        ours.connection_lost(None)
        assert ours not in ours.connections
    finally:
        loop.close()


@pytest.mark.parametrize(("sockname", "peername"), ADDRESSES)
def test_on_uvloop_the_socket_is_never_asked_for(sockname: Any, peername: Any) -> None:
    loop = asyncio.new_event_loop()
    try:
        _, ours = protocols(loop)
        transport = UvloopTransport(sockname, peername)
        ours.connection_made(transport)
        assert "socket" not in transport.asked
        assert (ours.server, ours.client) == _addresses(FakeTransport(sockname, peername))
        ours.connection_lost(None)
    finally:
        loop.close()
