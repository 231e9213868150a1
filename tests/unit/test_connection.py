"""The Centrifugo connection's state machine (core/connection.py), driven by hand: feed a
command, answer the requests it yields, read what it sends. No server, no socket, no loop."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
import pytest

from sessionhub.core import codes
from sessionhub.core import connection as m
from sessionhub.core.centrifugo import Command, ProtocolError
from sessionhub.core.errors import Unauthenticated
from sessionhub.core.principal import Principal
from sessionhub.core.streams import ClientInfo, Publication, StreamPosition

NOW = 1_800_000_000.0
ALICE = Principal("alice")
EPOCH = "e1"
HERE = StreamPosition(5, EPOCH)

Answer = Callable[[m.Request], Any]


def state(**limits: Any) -> m.ClientState:
    return m.ClientState("c1", m.Limits(version="t", ping_interval=25, **limits), opened_at=NOW - 1)


def cmd(cid: int, method: str, **params: Any) -> Command:
    return Command(cid, method, params)


def drive(
    s: m.ClientState, command: Command, answer: Answer, now: float = NOW
) -> tuple[list[m.Request], list[m.Output]]:
    """Run one command: every request it makes, answered by ``answer`` (which may raise)."""
    gen = s.handle(command, now)
    requests: list[m.Request] = []
    emitted: list[m.Output] = []
    reply: Any = None
    error: BaseException | None = None
    while True:
        try:
            request = gen.throw(error) if error is not None else gen.send(reply)
        except StopIteration as stop:
            return requests, emitted + list(stop.value)
        requests.append(request)
        reply, error = None, None
        if isinstance(request, m.Emit):
            emitted += request.outputs
            continue
        try:
            reply = answer(request)
        except Exception as exc:
            error = exc


def world(
    *,
    token: tuple[Principal, float | None] = (ALICE, NOW + 3600),
    readable: bool = True,
    position: StreamPosition = HERE,
    history: tuple[list[Publication], bool] | None = None,
) -> Answer:
    """Answers for a client whose token is good and who may read everything."""

    def answer(request: m.Request) -> Any:
        if isinstance(request, m.Authenticate):
            if request.token == "expired":
                raise Unauthenticated("token expired")
            if request.token == "bad":
                raise Unauthenticated("invalid token: signature")
            return token
        if isinstance(request, m.MayRead):
            return readable
        if isinstance(request, m.MayPublish):
            return False
        if isinstance(request, m.Position):
            return position
        if isinstance(request, m.History):
            pubs, complete = history or ([], True)
            return pubs, position, complete
        if isinstance(request, m.PresenceOf):
            return {"c1": ClientInfo("c1", "alice")}
        if isinstance(request, m.PresenceStats):
            return (1, 1)
        return None

    return answer


def sent(outputs: list[m.Output]) -> list[dict[str, Any]]:
    return [orjson.loads(o.payload) for o in outputs if isinstance(o, m.Send)]


def connected() -> m.ClientState:
    s = state()
    drive(s, cmd(1, "connect", token="good"), world())
    assert s.principal == ALICE
    return s


def pub(offset: int, data: bytes = b'{"n":1}', epoch: str = EPOCH) -> Publication:
    return Publication("user:alice", offset, epoch, data)


# -- connect and refresh ------------------------------------------------------------------------


def test_connect_authenticates_registers_and_announces_expiry_and_ping() -> None:
    s = state()
    requests, out = drive(s, cmd(1, "connect", token="good"), world())
    assert [type(r) for r in requests] == [m.Authenticate, m.Register]
    (reply,) = sent(out)
    assert reply["id"] == 1 and reply["connect"]["client"] == "c1"
    assert reply["connect"]["expires"] is True and reply["connect"]["ttl"] == 3600
    assert reply["connect"]["ping"] == 25 and reply["connect"]["pong"] is True


@pytest.mark.parametrize(
    ("token", "expected"),
    [
        ("", ("error", codes.UNAUTHORIZED.code)),
        ("expired", ("error", codes.TOKEN_EXPIRED.code)),
        ("bad", ("close", codes.INVALID_TOKEN.code)),
        ("x" * (m.MAX_TOKEN_BYTES + 1), ("close", codes.BAD_REQUEST_DISCONNECT.code)),
    ],
)
def test_connect_refusals(token: str, expected: tuple[str, int]) -> None:
    s = state()
    _, out = drive(s, cmd(1, "connect", token=token), world())
    kind, code = expected
    if kind == "close":
        assert isinstance(out[0], m.Close) and out[0].code.code == code
    else:
        assert sent(out)[0]["error"]["code"] == code
    assert s.principal is None


def test_a_huge_token_is_said_to_be_too_large() -> None:
    _, out = drive(state(), cmd(1, "connect", token="y" * 100_000), world())
    assert isinstance(out[0], m.Close) and "token too large" in out[0].reason


def test_commands_before_connect_and_a_second_connect_close() -> None:
    _, out = drive(state(), cmd(1, "subscribe", channel="user:alice"), world())
    assert isinstance(out[0], m.Close) and out[0].reason == "connect first"
    s = connected()
    _, out = drive(s, cmd(2, "connect", token="good"), world())
    assert isinstance(out[0], m.Close) and out[0].code is codes.BAD_REQUEST_DISCONNECT


def test_refresh_must_be_for_the_same_user() -> None:
    s = connected()
    _, out = drive(s, cmd(2, "refresh", token="t"), world(token=(ALICE, NOW + 60)))
    assert sent(out)[0]["refresh"]["ttl"] == 60 and s.expires_at == NOW + 60
    _, out = drive(s, cmd(3, "refresh", token="t"), world(token=(Principal("bob"), None)))
    assert isinstance(out[0], m.Close) and out[0].code is codes.INVALID_TOKEN


# -- subscribe and recovery ---------------------------------------------------------------------


def test_subscribe_attaches_before_reading_then_replies_then_goes_live_then_joins() -> None:
    s = connected()
    requests, out = drive(s, cmd(2, "subscribe", channel="user:alice"), world())
    kinds = [type(r) for r in requests]
    assert kinds == [m.MayRead, m.Attach, m.Position, m.Live, m.Emit, m.Join]
    (reply,) = sent(out)
    assert reply["subscribe"]["offset"] == 5 and reply["subscribe"]["epoch"] == EPOCH
    assert s.subs["user:alice"].active


def test_subscribe_refusals() -> None:
    s = connected()
    _, out = drive(s, cmd(2, "subscribe", channel="user:bob"), world(readable=False))
    assert sent(out)[0]["error"]["code"] == codes.PERMISSION_DENIED.code and not s.subs
    drive(s, cmd(3, "subscribe", channel="user:alice"), world())
    _, out = drive(s, cmd(4, "subscribe", channel="user:alice"), world())
    assert sent(out)[0]["error"]["code"] == codes.ALREADY_SUBSCRIBED.code
    small = connected()
    small.limits = m.Limits(version="t", ping_interval=25, max_subscriptions=1)
    drive(small, cmd(2, "subscribe", channel="a"), world())
    _, out = drive(small, cmd(3, "subscribe", channel="b"), world())
    assert sent(out)[0]["error"]["code"] == codes.LIMIT_EXCEEDED.code


def test_recovery_replays_exactly_what_followed_the_position() -> None:
    s = connected()
    missed = [pub(4), pub(5)]
    params = {"channel": "user:alice", "recover": True, "offset": 3, "epoch": EPOCH}
    requests, out = drive(s, cmd(2, "subscribe", **params), world(history=(missed, True)))
    history = next(r for r in requests if isinstance(r, m.History))
    assert history.since == StreamPosition(3, EPOCH)
    result = sent(out)[0]["subscribe"]
    assert result["recovered"] is True and result["was_recovering"] is True
    assert [p["offset"] for p in result["publications"]] == [4, 5] and result["offset"] == 5


def test_a_lost_position_is_never_recovered_silently() -> None:
    s = connected()
    params = {"channel": "user:alice", "recover": True, "offset": 3, "epoch": "old"}
    _, out = drive(s, cmd(2, "subscribe", **params), world(history=([], False)))
    result = sent(out)[0]["subscribe"]
    assert result["recovered"] is False and "publications" not in result
    assert result["offset"] == 5  # from where the stream is now


def test_a_position_without_an_epoch_cannot_prove_continuity() -> None:
    """Issue 13: a bare offset (the stream may have restarted and counted again) is never
    ``recovered: true``, and the broker is not even asked."""
    s = connected()
    params = {"channel": "user:alice", "recover": True, "offset": 3, "epoch": ""}
    requests, out = drive(s, cmd(2, "subscribe", **params), world(history=([pub(4)], True)))
    assert not any(isinstance(r, m.History) for r in requests)
    assert sent(out)[0]["subscribe"]["recovered"] is False


def test_flag_2_refuses_instead_of_answering_unrecovered() -> None:
    s = connected()
    params = {"channel": "user:alice", "recover": True, "offset": 3, "epoch": "old", "flag": 2}
    requests, out = drive(s, cmd(2, "subscribe", **params), world(history=([], False)))
    assert sent(out)[0]["error"]["code"] == codes.UNRECOVERABLE_POSITION.code
    assert "user:alice" not in s.subs and isinstance(requests[-1], m.Detach)


def _attach_and_publish(backlog: list[Publication]) -> Answer:
    """Answers that deliver ``backlog`` to the subscription while its position is read."""
    base = world()

    def answer(request: m.Request) -> Any:
        if isinstance(request, m.Attach):
            answer.sub = request.sub  # type: ignore[attr-defined]
        if isinstance(request, m.Position):
            answer.sub.backlog.extend(backlog)  # type: ignore[attr-defined]
        return base(request)

    return answer


def test_what_arrives_while_subscribing_follows_the_reply_without_repeats() -> None:
    s = connected()
    answer = _attach_and_publish([pub(5), pub(6), pub(7)])  # 5 is already in the position
    _, out = drive(s, cmd(2, "subscribe", channel="user:alice"), answer)
    msgs = sent(out)
    assert "subscribe" in msgs[0]
    assert [x["push"]["pub"]["offset"] for x in msgs[1:]] == [6, 7]
    assert s.subs["user:alice"].offset == 7


def test_a_gap_while_subscribing_unsubscribes_with_insufficient_state() -> None:
    s = connected()
    _, out = drive(s, cmd(2, "subscribe", channel="user:alice"), _attach_and_publish([pub(8)]))
    msgs = sent(out)
    assert msgs[-1]["push"]["unsubscribe"]["code"] == codes.UNSUBSCRIBE_INSUFFICIENT.code
    assert "user:alice" not in s.subs


def test_a_deleted_sessions_last_publication_ends_its_topic() -> None:
    s = connected()
    last = Publication("session:s1", 6, EPOCH, b'{"type":"session.deleted"}')
    answer = _attach_and_publish([last])
    _, out = drive(s, cmd(2, "subscribe", channel="session:s1"), answer)
    msgs = sent(out)
    assert msgs[1]["push"]["pub"]["offset"] == 6
    assert msgs[2]["push"]["unsubscribe"]["code"] == codes.SESSION_DELETED.code


# -- other commands -----------------------------------------------------------------------------


def test_unsubscribe_history_presence_and_publish() -> None:
    s = connected()
    drive(s, cmd(2, "subscribe", channel="user:alice"), world())
    requests, out = drive(s, cmd(3, "unsubscribe", channel="user:alice"), world())
    assert [type(r) for r in requests] == [m.Detach, m.Leave] and sent(out) == [
        {"id": 3, "unsubscribe": {}}
    ]
    _, out = drive(s, cmd(4, "history", channel="user:alice", limit=5), world())
    assert sent(out)[0]["history"]["offset"] == 5
    _, out = drive(s, cmd(5, "presence", channel="user:alice"), world())
    assert sent(out)[0]["presence"]["presence"]["c1"]["user"] == "alice"
    _, out = drive(s, cmd(6, "presence_stats", channel="user:alice"), world())
    assert sent(out)[0]["presence_stats"] == {"num_clients": 1, "num_users": 1}
    _, out = drive(s, cmd(7, "publish", channel="user:alice", data={}), world())
    assert sent(out)[0]["error"]["code"] == codes.PERMISSION_DENIED.code
    _, out = drive(s, cmd(8, "frobnicate"), world())
    assert sent(out)[0]["error"]["code"] == codes.METHOD_NOT_FOUND.code


def test_history_since_a_lost_position_is_an_error() -> None:
    s = connected()
    since = {"offset": 1, "epoch": "old"}
    _, out = drive(
        s, cmd(2, "history", channel="t", since=since, limit=3), world(history=([], False))
    )
    assert sent(out)[0]["error"]["code"] == codes.UNRECOVERABLE_POSITION.code


def test_a_malformed_frame_is_a_protocol_error_and_a_pong_is_nothing() -> None:
    s = connected()
    s.awaiting_pong = True
    assert s.receive(b"{}") == [] and s.awaiting_pong is False
    with pytest.raises(ProtocolError):
        s.receive(b"{nope")


# -- liveness and expiry ------------------------------------------------------------------------


def test_tick_pings_then_cuts_off_a_silent_client() -> None:
    s = connected()
    assert s.tick(NOW) is True and s.awaiting_pong
    closed = s.tick(NOW + 25)
    assert isinstance(closed, m.Close) and closed.code is codes.NO_PONG


def test_tick_ends_an_expired_token_and_a_client_that_never_connected() -> None:
    s = connected()
    closed = s.tick(NOW + 3600)
    assert isinstance(closed, m.Close) and closed.code is codes.CONNECTION_EXPIRED
    fresh = state()
    assert fresh.tick(NOW) is False  # opened a second ago: still allowed to connect
    stale = fresh.tick(NOW + 30)
    assert isinstance(stale, m.Close) and stale.code is codes.STALE


def test_subscribers_of_one_topic_share_its_name_and_keep_no_backlog_once_live() -> None:
    # Memory per idle connection (bench/conn_heap.py): each subscriber's copy of the topic
    # name, parsed afresh from its command, and the empty backlog list it kept once live.
    subs = []
    for _ in range(2):
        s = connected()
        channel = "".join(["user:", "alice"])  # a new string each time, as a parser makes
        drive(s, cmd(2, "subscribe", channel=channel), world())
        subs.append(s.subs["user:alice"])
    assert subs[0].active and subs[1].active
    assert subs[0].topic is subs[1].topic
    assert subs[0].backlog == () and subs[1].backlog == ()
