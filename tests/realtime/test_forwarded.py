"""Which address a WebSocket is counted against behind a proxy (the per-address limit):
the client a trusted proxy names in X-Forwarded-For, as uvicorn does for HTTP requests."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from sessionhub.server.realtime.native import client_address


def config(allow: str | list[str] = "127.0.0.1,::1", proxy: bool = True) -> object:
    return SimpleNamespace(proxy_headers=proxy, forwarded_allow_ips=allow)


@pytest.mark.parametrize(
    ("peer", "forwarded", "cfg", "counted"),
    [
        ("127.0.0.1", "203.0.113.7", config(), "203.0.113.7"),  # nginx on the same host
        ("127.0.0.1", "198.51.100.1, 203.0.113.7", config(), "203.0.113.7"),  # nearest hop
        ("10.0.0.5", "203.0.113.7", config("10.0.0.0/8"), "203.0.113.7"),  # a trusted net
        ("10.0.0.5", "203.0.113.7", config("*"), "203.0.113.7"),
        ("192.0.2.9", "203.0.113.7", config(), "192.0.2.9"),  # an untrusted peer's claim
        ("127.0.0.1", "203.0.113.7", config(proxy=False), "127.0.0.1"),
        ("127.0.0.1", "", config(), "127.0.0.1"),
        ("127.0.0.1", "127.0.0.1", config(), "127.0.0.1"),  # every hop trusted: the first
    ],
)
def test_the_counted_address(peer: str, forwarded: str, cfg: object, counted: str) -> None:
    headers = {"x-forwarded-for": forwarded} if forwarded else {}
    assert client_address(peer, headers, cfg) == counted
