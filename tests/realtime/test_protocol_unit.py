"""The sans-I/O parts: the code table, command parsing and encoding, WebSocket framing."""

from __future__ import annotations

import os
import re
from pathlib import Path

import orjson
import pytest

from sessionhub.core import centrifugo as proto
from sessionhub.core import codes
from sessionhub.core.centrifugo import CommandError, ProtocolError
from sessionhub.core.recovery import Malformed, format_id, parse_id
from sessionhub.server.realtime import wsframe

ROOT = Path(__file__).resolve().parents[2]


def test_code_table_ranges_and_reconnect_rules() -> None:
    for c in codes.ALL:
        if c.family is codes.Family.ERROR:
            assert 100 <= c.code < 200
        elif c.family is codes.Family.UNSUBSCRIBE:
            assert 2000 <= c.code < 3000 and c.retry == (c.code >= 2500)
        else:
            assert 3000 <= c.code < 5000
            assert c.retry == (c.code < 3500)
    assert codes.SLOW.code == 3008 and codes.SLOW.retry
    assert codes.INVALID_TOKEN.code == 3500 and not codes.INVALID_TOKEN.retry
    assert codes.reconnects(1006) and codes.reconnects(4000) and not codes.reconnects(4500)
    assert codes.lookup(103, codes.Family.ERROR) is codes.PERMISSION_DENIED
    numbers = [(c.family, c.code) for c in codes.ALL]
    assert len(numbers) == len(set(numbers))


def test_docs_carry_the_code_table() -> None:
    doc = (ROOT / "docs" / "realtime.md").read_text()
    assert codes.markdown_table() in doc, "regenerate: python -m sessionhub.core.codes"


def test_parse_frame_batches_pongs_and_unknown_methods() -> None:
    frame = b'{"id":1,"connect":{"token":"t"}}\n{}\n{"id":2,"subscribe":{"channel":"a"}}\n'
    cmds = proto.parse_frame(frame)
    assert [(c.id, c.method) for c in cmds] == [(1, "connect"), (0, ""), (2, "subscribe")]
    assert cmds[0].params == {"token": "t"}
    assert proto.parse_frame('{"id":3,"frobnicate":{}}')[0].method == "unknown"
    assert proto.parse_frame(b'{"id":4,"history":null}')[0].params == {}


@pytest.mark.parametrize(
    "frame",
    [
        b"{nope",
        b"[1]",
        b'{"id":-1,"connect":{}}',
        b'{"id":"x","connect":{}}',
        b'{"connect":{}}',
        b'{"id":1,"connect":3}',
    ],
)
def test_parse_frame_rejects_malformed(frame: bytes) -> None:
    with pytest.raises(ProtocolError) as err:
        proto.parse_frame(frame)
    assert err.value.code is codes.BAD_REQUEST_DISCONNECT


def test_params_are_validated_as_command_errors() -> None:
    with pytest.raises(CommandError) as err:
        proto.get_channel({"channel": "two words"})
    assert err.value.code is codes.UNKNOWN_CHANNEL
    with pytest.raises(CommandError):
        proto.get_channel({})
    with pytest.raises(CommandError):
        proto.get_int({"offset": "x"}, "offset")
    assert proto.get_int({"offset": "12"}, "offset") == 12
    assert proto.valid_topic("user:alice@example.com") and not proto.valid_topic("a,b")


def test_pushes_embed_the_encoded_data_verbatim() -> None:
    data = b'{"type":"session.created","n":1}'
    push = proto.pub_push("session:x", data, 7)
    assert data in push
    assert orjson.loads(push) == {
        "push": {"channel": "session:x", "pub": {"data": orjson.loads(data), "offset": 7}}
    }
    err = orjson.loads(proto.error_reply(3, codes.INTERNAL))
    assert err == {
        "id": 3,
        "error": {"code": 100, "message": "internal server error", "temporary": True},
    }
    assert "temporary" not in orjson.loads(proto.error_reply(3, codes.PERMISSION_DENIED))["error"]
    d = orjson.loads(proto.disconnect_push(codes.SLOW))["push"]["disconnect"]
    assert d == {"code": 3008, "reason": "slow", "reconnect": True}
    res = orjson.loads(
        proto.reply(
            1,
            "subscribe",
            proto.subscribe_result(
                offset=5,
                epoch="e",
                was_recovering=True,
                recovered=True,
                publications=[proto.publication(data, 5)],
            ),
        )
    )
    assert res["subscribe"]["publications"] == [{"data": orjson.loads(data), "offset": 5}]


def _client_frame(op: int, payload: bytes, fin: bool = True) -> bytes:
    mask = os.urandom(4)
    n = len(payload)
    head = bytes(((0x80 if fin else 0) | op,))
    if n < 126:
        head += bytes((0x80 | n,))
    elif n < 65536:
        head += bytes((0x80 | 126,)) + n.to_bytes(2, "big")
    else:
        head += bytes((0x80 | 127,)) + n.to_bytes(8, "big")
    return head + mask + wsframe.apply_mask(payload, mask)


def test_frame_parser_handles_splits_fragments_and_control_frames() -> None:
    p = wsframe.FrameParser(max_size=1 << 20)
    big = b"x" * 70000
    data = (
        _client_frame(wsframe.OP_TEXT, b"hello")
        + _client_frame(wsframe.OP_TEXT, b"frag-", fin=False)
        + _client_frame(wsframe.OP_PING, b"p")
        + _client_frame(wsframe.OP_CONT, b"ment")
        + _client_frame(wsframe.OP_TEXT, big)
    )
    got: list[tuple[int, bytes]] = []
    for i in range(0, len(data), 7):  # byte-dribbled
        got += p.feed(data[i : i + 7])
    assert got == [
        (wsframe.OP_TEXT, b"hello"),
        (wsframe.OP_PING, b"p"),
        (wsframe.OP_TEXT, b"frag-ment"),
        (wsframe.OP_TEXT, big),
    ]


def test_a_parser_detached_mid_message_carries_it_and_leaves_the_shared_one_idle() -> None:
    shared = wsframe.shared(1 << 20)
    assert shared is wsframe.shared(1 << 20) and shared.is_shared and shared.idle
    data = _client_frame(wsframe.OP_TEXT, b"frag-", fin=False) + _client_frame(
        wsframe.OP_CONT, b"ment"
    )
    assert shared.feed(data[:9]) == [] and not shared.idle
    own = shared.detach()
    assert shared.idle and not own.is_shared and own.max_size == 1 << 20
    assert shared.feed(_client_frame(wsframe.OP_TEXT, b"other")) == [(wsframe.OP_TEXT, b"other")]
    assert own.feed(data[9:]) == [(wsframe.OP_TEXT, b"frag-ment")] and own.idle
    own.feed(_client_frame(wsframe.OP_TEXT, b"x", fin=False))
    own.reset()
    assert own.idle and own.feed(_client_frame(wsframe.OP_TEXT, b"y")) == [(wsframe.OP_TEXT, b"y")]


def test_each_thread_has_its_own_shared_parser() -> None:
    """Servers on event loops in two threads of one process (an embedding, the tests) must
    not feed one parser at once: a thread switch mid-feed would interleave their frames."""
    import threading

    mine = wsframe.shared(1 << 20)
    theirs: list[wsframe.FrameParser] = []
    worker = threading.Thread(
        target=lambda: theirs.extend((wsframe.shared(1 << 20), wsframe.shared(1 << 20)))
    )
    worker.start()
    worker.join(5)
    assert len(theirs) == 2 and theirs[0] is theirs[1] and theirs[0].is_shared
    assert theirs[0] is not mine and wsframe.shared(1 << 20) is mine


def test_frame_parser_enforces_the_rules() -> None:
    with pytest.raises(wsframe.WebSocketError):  # unmasked client frame
        wsframe.FrameParser().feed(bytes((0x81, 1)) + b"x")
    with pytest.raises(wsframe.WebSocketError) as err:
        wsframe.FrameParser(max_size=10).feed(_client_frame(wsframe.OP_TEXT, b"y" * 11))
    assert err.value.code == wsframe.CLOSE_TOO_BIG
    with pytest.raises(wsframe.WebSocketError):
        wsframe.FrameParser().feed(_client_frame(wsframe.OP_CONT, b"x"))


def test_server_frames_and_handshake() -> None:
    assert wsframe.text(b"hi") == b"\x81\x02hi"
    assert wsframe.text(b"a" * 200)[:4] == b"\x81\x7e\x00\xc8"
    assert wsframe.parse_close(wsframe.close(3008, "slow")[2:]) == (3008, "slow")
    # The RFC 6455 example key.
    assert wsframe.accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    req = wsframe.parse_request(
        b"GET /connection/websocket?x=1 HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n"
        b"Connection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        b"Sec-WebSocket-Version: 13\r\n\r\n"
    )
    assert req.path == "/connection/websocket"
    assert b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" in wsframe.handshake_response(req)
    req.headers["sec-websocket-version"] = "8"
    with pytest.raises(wsframe.WebSocketError):
        wsframe.handshake_response(req)


def test_sse_ids_round_trip() -> None:
    from sessionhub.core.streams import StreamPosition as P

    one = {"user:a": P(7, "ab")}
    assert format_id(one) == "7:ab"
    assert parse_id("7:ab", ["user:a"]) == one
    assert parse_id("7", ["user:a"]) == {"user:a": P(7, "")}
    many = {"user:a@x.org": P(1, "e1"), "session:s": P(2, "e2")}
    ident = format_id(many)
    assert re.fullmatch(r"\S+ \S+", ident)
    assert parse_id(ident, list(many)) == many
    # Junk is said to be junk (issue 13), never taken for a fresh start.
    junk = parse_id("garbage", list(many))
    assert set(junk) == set(many) and all(isinstance(v, Malformed) for v in junk.values())


def test_plain_handshakes_are_shared_and_the_rest_keep_their_own() -> None:
    from sessionhub.server.realtime import socket as sock

    plain = sock.Handshake.from_target("/connection/websocket", {}, "10.0.0.1")
    again = sock.Handshake.from_target("/connection/websocket", {"user-agent": "x"}, "10.0.0.1")
    assert plain is again  # nothing per connection in it: one object for that address
    assert plain.query == {} and plain.headers == {} and plain.params is None
    other = sock.Handshake.from_target("/connection/websocket", {}, "10.0.0.2")
    assert other is not plain and other.peer == "10.0.0.2"
    # A query, a credential header or path parameters make a handshake of its own.
    token = sock.Handshake.from_target("/connection/websocket?token=t", {}, "10.0.0.1")
    assert token is not plain and token.credentials() == ("Bearer t", None)
    key = sock.Handshake.from_target("/connection/websocket", {"x-api-key": "k"}, "10.0.0.1")
    assert key is not plain and key.credentials() == (None, "k")
    routed = sock.Handshake.from_target("/stream/s1", {}, "10.0.0.1", {"session_id": "s1"})
    assert routed.params == {"session_id": "s1"}
    # The cache is bounded: many addresses start it over, and sharing still holds after.
    for i in range(sock._PLAIN_MAX + 10):
        sock.Handshake.from_target("/connection/websocket", {}, f"10.1.{i // 256}.{i % 256}")
    assert len(sock._PLAIN) <= sock._PLAIN_MAX
    fresh = sock.Handshake.from_target("/connection/websocket", {}, "10.0.0.1")
    assert fresh == plain and fresh is sock.Handshake.from_target(
        "/connection/websocket", {}, "10.0.0.1"
    )
