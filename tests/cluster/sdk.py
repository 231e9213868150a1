"""The official ``centrifuge-python`` SDK, recording what each subscription sees."""

from __future__ import annotations

from typing import Any

from centrifuge import (
    Client,
    ClientEventHandler,
    DisconnectedContext,
    JoinContext,
    LeaveContext,
    PublicationContext,
    SubscribedContext,
    SubscribingContext,
    SubscriptionErrorContext,
    SubscriptionEventHandler,
    UnsubscribedContext,
)

from .harness import until


class Seen(SubscriptionEventHandler):
    """Everything one subscription is told, in order."""

    def __init__(self) -> None:
        self.pubs: list[tuple[int, Any]] = []
        self.subscribed: list[SubscribedContext] = []
        self.unsubscribed: list[UnsubscribedContext] = []
        self.joins: list[tuple[str, str]] = []
        self.leaves: list[tuple[str, str]] = []
        #: (code, reason) each time the SDK went back to subscribing (a resubscribe).
        self.subscribing: list[tuple[int, str]] = []
        self.errors: list[str] = []

    async def on_publication(self, ctx: PublicationContext) -> None:
        self.pubs.append((ctx.pub.offset, ctx.pub.data))

    async def on_subscribed(self, ctx: SubscribedContext) -> None:
        self.subscribed.append(ctx)

    async def on_unsubscribed(self, ctx: UnsubscribedContext) -> None:
        self.unsubscribed.append(ctx)

    async def on_subscribing(self, ctx: SubscribingContext) -> None:
        self.subscribing.append((ctx.code, ctx.reason))

    async def on_error(self, ctx: SubscriptionErrorContext) -> None:
        self.errors.append(repr(ctx.error))

    async def on_join(self, ctx: JoinContext) -> None:
        self.joins.append((ctx.info.client, ctx.info.user))

    async def on_leave(self, ctx: LeaveContext) -> None:
        self.leaves.append((ctx.info.client, ctx.info.user))

    @property
    def offsets(self) -> list[int]:
        return [o for o, _ in self.pubs]

    @property
    def data(self) -> list[Any]:
        return [d for _, d in self.pubs]


class Disconnects(ClientEventHandler):
    def __init__(self) -> None:
        self.seen: list[DisconnectedContext] = []

    async def on_disconnected(self, ctx: DisconnectedContext) -> None:
        self.seen.append(ctx)


def client(url: str, token: str) -> Client:
    """A client that reconnects quickly (the tests' clock is short)."""
    return Client(
        url,
        token=token,
        proxy=None,
        timeout=5.0,
        min_reconnect_delay=0.05,
        max_reconnect_delay=0.5,
    )


async def subscribe(c: Client, topic: str, **options: Any) -> Seen:
    """Subscribe (recoverable, positioned: the SDK keeps its stream position) and wait for
    the server's answer."""
    seen = Seen()
    sub = c.new_subscription(
        topic,
        events=seen,
        recoverable=True,
        positioned=True,
        min_resubscribe_delay=0.05,
        max_resubscribe_delay=0.5,
        **options,
    )
    await sub.subscribe()
    await until(lambda: bool(seen.subscribed or seen.unsubscribed), what=f"subscribe {topic}")
    assert seen.subscribed, f"subscribe to {topic} refused: {seen.unsubscribed}"
    return seen
