"""One Centrifugo client connection as a sans-I/O state machine.

Every decision of a realtime connection lives here: who may connect, what a subscribe with
recovery answers, what is refused, when a token expires, when a silent client is cut off.
Nothing here does I/O or reads a clock. A command is handled by a generator
(:meth:`ClientState.handle`) that *yields* what it needs from the outside world - a token
checked, a permission, a stream position, the history since a position, a presence lease -
as :class:`Request` values, receives each answer (or the exception it raised) back, and
finally *returns* what to send: :class:`Send` (a reply or a push) and :class:`Close`.

The asyncio layer (``server/realtime/centrifugo.py``) is a thin pump that answers requests
with the hub and the node's registry. Tests drive the generators by hand: feed a command,
answer its requests, read the outputs - no server, no socket, no event loop.

Requests marked *sync* must be answered without awaiting, so that nothing published in
between can slip past a subscription being set up.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any

import orjson

from . import centrifugo as proto
from . import codes
from .centrifugo import Command, CommandError, ProtocolError
from .codes import Code
from .errors import Unauthenticated
from .principal import Principal
from .recovery import Activation, activate, needs_history, recover
from .streams import ClientInfo, Publication, StreamPosition
from .subscriptions import Subscriptions

#: Largest token accepted in ``connect``/``refresh`` (bytes). A JWT with a few claims is well
#: under 2 KiB; anything near this is not a token, and is refused with a disconnect.
MAX_TOKEN_BYTES = 16 * 1024


# -- what the pump is asked to do ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Authenticate:
    """Check ``token``: answer ``(principal, expires_at or None)`` or raise ``Unauthenticated``."""

    token: str


class Register:
    """The connection is authenticated: make it reachable by client id (sync)."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class _OnTopic:
    topic: str


class MayRead(_OnTopic):
    """May the principal follow ``topic`` (subscribe, history, presence)? Answer a bool."""

    __slots__ = ()


class MayPublish(_OnTopic):
    """May the principal publish to ``topic``? Answer a bool (sync)."""

    __slots__ = ()


class Detach(_OnTopic):
    """Stop delivering ``topic`` to this connection (sync)."""

    __slots__ = ()


class Position(_OnTopic):
    """The topic's current position: answer a ``StreamPosition``."""

    __slots__ = ()


class Join(_OnTopic):
    """Add (or renew) this connection's presence lease on ``topic``."""

    __slots__ = ()


class Leave(_OnTopic):
    """End this connection's presence on ``topic``."""

    __slots__ = ()


class PresenceOf(_OnTopic):
    """Who is present on ``topic``: answer ``dict[client id, ClientInfo]``."""

    __slots__ = ()


class PresenceStats(_OnTopic):
    """Answer ``(clients, distinct users)`` present on ``topic``."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class _OnSubscription:
    sub: Subscription


class Attach(_OnSubscription):
    """Register ``sub`` as pending: publications from now on go to ``sub.backlog`` (sync)."""

    __slots__ = ()


class Live(_OnSubscription):
    """Deliver live publications of ``sub.topic`` to this connection from now on (sync)."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class Emit:
    """Send ``outputs`` now, before what follows (sync): a subscribe reply must reach the
    client before the join events its presence lease is about to cause."""

    outputs: list[Output]


@dataclass(frozen=True, slots=True)
class History:
    """Publications after ``since`` (or the newest ``limit``): answer the broker's
    ``(publications, position, complete)``."""

    topic: str
    since: StreamPosition | None
    limit: int


@dataclass(frozen=True, slots=True)
class Publish:
    """Publish ``data`` (encoded JSON) to ``topic``."""

    topic: str
    data: bytes


Request = (
    Authenticate
    | Register
    | MayRead
    | MayPublish
    | Attach
    | Live
    | Detach
    | Emit
    | Position
    | History
    | Join
    | Leave
    | PresenceOf
    | PresenceStats
    | Publish
)

#: Requests answered at once, without awaiting (see the module docstring).
SYNC_REQUESTS = (Register, MayPublish, Attach, Live, Detach, Emit)


# -- what the connection sends --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Send:
    """One JSON message to the client (a reply, or a push that belongs to this client)."""

    payload: bytes
    reply: bool = True


@dataclass(frozen=True, slots=True)
class Close:
    """End the connection: a disconnect push and a close frame with ``code``."""

    code: Code
    reason: str = ""


Output = Send | Close
Handler = Generator[Request, Any, list[Output]]


@dataclass(slots=True)
class Subscription:
    """One topic a connection follows."""

    topic: str
    join_leave: bool = False
    active: bool = False
    #: Publications that arrived while the subscribe command was being answered; the empty
    #: tuple once the subscription is live (nothing adds to it then, and an idle
    #: connection need not keep an empty list for it: 56 bytes).
    backlog: list[Publication] | tuple[()] = field(default_factory=list)
    offset: int = 0
    epoch: str = ""


@dataclass(frozen=True, slots=True)
class Limits:
    """What one connection may do, and the server's announced ping interval."""

    version: str
    ping_interval: float
    max_subscriptions: int = 128
    recover_limit: int = 1000


class ClientState:
    """The protocol state of one connection: who it is, what it follows, its liveness."""

    __slots__ = (
        "awaiting_pong",
        "client",
        "closed",
        "expires_at",
        "limits",
        "opened_at",
        "principal",
        "subs",
    )

    def __init__(self, client: str, limits: Limits, *, opened_at: float) -> None:
        self.client = client
        self.limits = limits
        self.opened_at = opened_at
        self.principal: Principal | None = None
        #: Unix time the credential expires (None: it does not).
        self.expires_at: float | None = None
        self.subs = Subscriptions()
        self.awaiting_pong = False
        self.closed = False

    @property
    def user(self) -> str:
        return self.principal.sub if self.principal else ""

    def info(self) -> ClientInfo:
        return ClientInfo(self.client, self.user)

    # -- input ------------------------------------------------------------------------------

    def receive(self, payload: bytes) -> list[Command]:
        """The commands of one text message; any message counts as a sign of life.

        Raises ``ProtocolError`` for a malformed frame (the connection must end)."""
        self.awaiting_pong = False
        if payload == proto.PING:  # a pong: nothing else to do
            return []
        return proto.parse_frame(payload)

    def handle(self, cmd: Command, now: float) -> Handler:
        """Handle one command at Unix time ``now``: a generator of requests returning outputs."""
        if cmd.method == "":
            return []
        if self.principal is None and cmd.method != "connect":
            return [Close(codes.BAD_REQUEST_DISCONNECT, "connect first")]
        handler = _HANDLERS.get(cmd.method)
        try:
            if handler is None:
                if cmd.method == "send":
                    return []  # asynchronous messages have no receiver here
                raise CommandError(codes.METHOD_NOT_FOUND)
            outputs, result = yield from handler(self, cmd, now)
        except CommandError as exc:
            return [Send(proto.error_reply(cmd.id, exc.code, exc.detail))]
        except ProtocolError as exc:
            return [Close(exc.code, exc.detail)]
        if result is not None:
            outputs.insert(0, Send(proto.reply(cmd.id, cmd.method, result)))
        return outputs

    # -- liveness ---------------------------------------------------------------------------

    def tick(self, now: float) -> Close | bool:
        """The periodic check at Unix time ``now``: a ``Close`` for a connection that must
        end (never connected in time, its token expired, no pong since the last ping), else
        True when a ping is due (and a pong is then awaited)."""
        if self.principal is None:
            if now - self.opened_at >= self.limits.ping_interval:
                return Close(codes.STALE)
            return False
        if self.expires_at is not None and now >= self.expires_at:
            return Close(codes.CONNECTION_EXPIRED)
        if self.awaiting_pong:
            return Close(codes.NO_PONG)
        self.awaiting_pong = True
        return True

    def activation(self, sub: Subscription, position: StreamPosition, *, ended: bool) -> Activation:
        """Join the live stream: what of the backlog to deliver, and whether to go live."""
        backlog, sub.backlog = sub.backlog, ()
        result = activate(sub.topic, position, backlog, ended=ended)
        sub.offset, sub.epoch = result.position.offset, result.position.epoch
        return result


# -- command handlers -----------------------------------------------------------------------

# Each returns (outputs after the reply, the reply's result or None for no reply).
Result = Generator[Request, Any, tuple[list[Output], dict[str, Any] | None]]


def _token(params: dict[str, Any], *, required: bool) -> str:
    raw = params.get("token")
    if isinstance(raw, str) and len(raw.encode()) > MAX_TOKEN_BYTES:
        raise ProtocolError(
            codes.BAD_REQUEST_DISCONNECT,
            f"token too large ({len(raw.encode())} bytes; at most {MAX_TOKEN_BYTES})",
        )
    return proto.get_str(params, "token", required=required, max_len=MAX_TOKEN_BYTES)


def _authenticate(token: str) -> Generator[Request, Any, tuple[Principal, float | None]]:
    if not token:
        raise CommandError(codes.UNAUTHORIZED, "a token is required")
    try:
        verified: tuple[Principal, float | None] = yield Authenticate(token)
    except Unauthenticated as exc:
        if "expired" in exc.detail:
            raise CommandError(codes.TOKEN_EXPIRED) from None
        raise ProtocolError(codes.INVALID_TOKEN) from None
    return verified


def _connect(state: ClientState, cmd: Command, now: float) -> Result:
    if state.principal is not None:
        raise ProtocolError(codes.BAD_REQUEST_DISCONNECT, "already connected")
    state.principal, state.expires_at = yield from _authenticate(_token(cmd.params, required=False))
    yield Register()
    expires_in = None if state.expires_at is None else state.expires_at - now
    limits = state.limits
    return [], proto.connect_result(
        state.client, limits.version, ping=limits.ping_interval, expires_in=expires_in
    )


def _refresh(state: ClientState, cmd: Command, now: float) -> Result:
    principal, expires_at = yield from _authenticate(_token(cmd.params, required=True))
    if principal.sub != state.user:
        raise ProtocolError(codes.INVALID_TOKEN, "a refresh token must be for the same user")
    state.principal, state.expires_at = principal, expires_at
    result: dict[str, Any] = {"client": state.client, "version": state.limits.version}
    if expires_at is not None:
        result["expires"] = True
        result["ttl"] = max(1, int(expires_at - now))
    return [], result


def _require_read(topic: str) -> Generator[Request, Any, None]:
    if not (yield MayRead(topic)):
        raise CommandError(codes.PERMISSION_DENIED)


def _subscribe(state: ClientState, cmd: Command, _now: float) -> Result:
    p = cmd.params
    topic = proto.get_channel(p)
    if topic in state.subs:
        raise CommandError(codes.ALREADY_SUBSCRIBED)
    if len(state.subs) >= state.limits.max_subscriptions:
        raise CommandError(codes.LIMIT_EXCEEDED, "too many subscriptions on one connection")
    recover_asked = proto.get_bool(p, "recover")
    offset = proto.get_int(p, "offset")
    epoch = proto.get_str(p, "epoch", max_len=64)
    flag = proto.get_int(p, "flag")
    yield from _require_read(topic)
    if state.closed or topic in state.subs:
        return [], None  # the connection ended, or a second subscribe won the race
    sub = Subscription(topic, join_leave=proto.get_bool(p, "join_leave"))
    state.subs[topic] = sub
    yield Attach(sub)
    try:
        if recover_asked:
            since = StreamPosition(offset, epoch)
            asked = needs_history(since)
            history = None
            if asked is not None:
                pubs, current, complete = yield History(topic, asked, state.limits.recover_limit)
                history = (pubs, complete)
            else:
                current = yield Position(topic)
            outcome = recover(topic, since, current, history)
            if not outcome.recovered and flag & proto.FLAG_REJECT_UNRECOVERED:
                raise CommandError(codes.UNRECOVERABLE_POSITION)
            result = proto.subscribe_result(
                offset=outcome.start.offset,
                epoch=outcome.start.epoch,
                was_recovering=True,
                recovered=bool(outcome.recovered),
                publications=[proto.publication(x.data, x.offset) for x in outcome.publications],
            )
            position, ended = outcome.start, outcome.ended
        else:
            position = yield Position(topic)
            result = proto.subscribe_result(offset=position.offset, epoch=position.epoch)
            ended = False
    except BaseException:
        state.subs.pop(topic, None)
        yield Detach(topic)
        raise
    if state.closed or state.subs.get(topic) is not sub:
        return [], None
    # The reply goes first; then what arrived meanwhile, then live (all without awaiting).
    reply = Send(proto.reply(cmd.id, "subscribe", result))
    done = state.activation(sub, position, ended=ended)
    outputs: list[Output] = [reply]
    outputs += [Send(proto.pub_push(x.topic, x.data, x.offset), reply=False) for x in done.deliver]
    if done.outcome == "live":
        sub.active = True
        yield Live(sub)
        yield Emit(outputs)
        yield Join(topic)
        return [], None
    # The stream moved under us (a new epoch, a gap): let the client resubscribe and recover
    # instead of carrying on with a hole; or the session was deleted: end as live ones end.
    code = codes.UNSUBSCRIBE_INSUFFICIENT if done.outcome == "gap" else codes.SESSION_DELETED
    state.subs.pop(topic, None)
    yield Detach(topic)
    outputs.append(Send(proto.unsubscribe_push(topic, code), reply=False))
    return outputs, None


def _unsubscribe(state: ClientState, cmd: Command, _now: float) -> Result:
    topic = proto.get_channel(cmd.params)
    if state.subs.pop(topic, None) is not None:
        yield Detach(topic)
        yield Leave(topic)
    return [], {}


def _publish(_state: ClientState, cmd: Command, _now: float) -> Result:
    topic = proto.get_channel(cmd.params)
    if not (yield MayPublish(topic)):
        raise CommandError(codes.PERMISSION_DENIED)
    if "data" not in cmd.params:
        raise CommandError(codes.BAD_REQUEST, "data is required")
    yield Publish(topic, orjson.dumps(cmd.params["data"]))
    return [], {}


def _presence(_state: ClientState, cmd: Command, _now: float) -> Result:
    topic = proto.get_channel(cmd.params)
    yield from _require_read(topic)
    clients: dict[str, ClientInfo] = yield PresenceOf(topic)
    present = {c: proto.client_info(i.client, i.user, i.conn_info) for c, i in clients.items()}
    return [], {"presence": present}


def _presence_stats(_state: ClientState, cmd: Command, _now: float) -> Result:
    topic = proto.get_channel(cmd.params)
    yield from _require_read(topic)
    clients, users = yield PresenceStats(topic)
    return [], {"num_clients": clients, "num_users": users}


def _history(state: ClientState, cmd: Command, _now: float) -> Result:
    p = cmd.params
    topic = proto.get_channel(p)
    yield from _require_read(topic)
    most = state.limits.recover_limit
    limit = proto.get_int(p, "limit")
    limit = most if limit < 0 else min(limit, most)
    reverse = proto.get_bool(p, "reverse")
    since_raw = p.get("since")
    if isinstance(since_raw, dict):
        since = StreamPosition(
            proto.get_int(since_raw, "offset"), proto.get_str(since_raw, "epoch", max_len=64)
        )
        pubs, pos, complete = yield History(topic, since, max(limit, 1))
        if not complete and len(pubs) < max(limit, 1):
            raise CommandError(codes.UNRECOVERABLE_POSITION)
        pubs = pubs[:limit]
    elif since_raw is not None:
        raise CommandError(codes.BAD_REQUEST, "since must be an object")
    else:
        pubs, pos, _ = yield History(topic, None, limit)
    if reverse:
        pubs = pubs[::-1]
    return [], {
        "publications": [proto.publication(x.data, x.offset) for x in pubs],
        "epoch": pos.epoch,
        "offset": pos.offset,
    }


def _ping(_state: ClientState, _cmd: Command, _now: float) -> Result:
    return [], {}
    yield  # a generator like the others


def _sub_refresh(_state: ClientState, _cmd: Command, _now: float) -> Result:
    # Subscriptions here need no token of their own, so there is nothing to refresh.
    return [], {}
    yield  # a generator like the others


_HANDLERS = {
    "connect": _connect,
    "refresh": _refresh,
    "subscribe": _subscribe,
    "unsubscribe": _unsubscribe,
    "publish": _publish,
    "presence": _presence,
    "presence_stats": _presence_stats,
    "history": _history,
    "ping": _ping,
    "sub_refresh": _sub_refresh,
}
