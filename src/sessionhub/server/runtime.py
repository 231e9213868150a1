"""Builds the running pieces of one node from settings, as typed fields.

The hub (store, broker, presence), the scheduler, the authenticator, the realtime node with
its wire formats, the frame relay, the consumers of the event log and the seed applications'
services. Everything that starts and stops does so in :meth:`Runtime.start` and
:meth:`Runtime.close`, in dependency order.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ..auth import Authenticator, load_or_create_secret, parse_api_keys
from ..backends import open_hub
from ..connectors.nina.service import NinaService
from ..consumers.base import Consumers
from ..consumers.counts import SessionCounts
from ..consumers.notifications import Notifier
from ..consumers.webhooks import WebhookConfig, WebhookDispatcher
from ..hub import Hub, utcnow
from ..leadership import Leadership
from ..relay.frames import FrameRelay
from ..scheduler import Scheduler
from ..settings import Settings
from ..workflows.workspaces import WorkspaceService
from .realtime.centrifugo import PATH as CENTRIFUGO_PATH
from .realtime.centrifugo import Centrifugo, CentrifugoConfig
from .realtime.frames import PATH as FRAMES_PATH
from .realtime.frames import Frames
from .realtime.kato import PATH as KATO_PATH
from .realtime.kato import KatoConfig, KatoService
from .realtime.node import RealtimeNode
from .realtime.unified import PATH as UNIFIED_PATH
from .realtime.unified import Unified

if TYPE_CHECKING:
    from .compat.aesthetic import Rooms

log = logging.getLogger("sessionhub")

Step = Callable[[], Awaitable[Any]]


@dataclass
class Runtime:
    """Everything one server process runs; transports reach the hub and services here."""

    settings: Settings
    hub: Hub
    scheduler: Scheduler
    auth: Authenticator
    realtime: RealtimeNode
    centrifugo: Centrifugo
    relay: FrameRelay
    consumers: Consumers
    notifier: Notifier
    webhooks: WebhookDispatcher
    workspaces: WorkspaceService
    #: KATO's ``/ws`` (None when ``SESSIONHUB_KATO_ENABLED=0``) and its live counts.
    kato: KatoService | None = None
    counts: SessionCounts | None = None
    #: The NINA connector and its ``/ws/unified`` (None without ``SESSIONHUB_NINA_URL``).
    nina: NinaService | None = None
    unified: Unified | None = None
    #: Multiplayer rooms (the Aesthetic Computer socket and its data channels).
    rooms: Rooms | None = None
    #: The roles one node at a time runs, by name, with this node's lease on each.
    leaders: dict[str, Leadership] = field(default_factory=dict)
    secret_created: bool = False
    #: Async steps run at start / close, in order (close in reverse), after the built-in ones.
    on_start: list[Step] = field(default_factory=list)
    on_close: list[Step] = field(default_factory=list)

    async def start(self) -> None:
        await self.hub.start()
        await self.realtime.start()
        if self.kato is not None:
            await self.kato.start()
        await self.relay.start()
        if "nina" in self.leaders:
            await self.leaders["nina"].start()
        # Webhooks start before the consumers and stop after them, so the notifier can
        # still wake them.
        await self.webhooks.start()
        for fn in self.on_start:
            await fn()
        await self.consumers.start()
        await self.leaders["scheduler"].start()
        self.scheduler.start()

    async def close(self) -> None:
        steps: list[Step] = [self.scheduler.stop, self.consumers.close]
        steps += [lead.close for role, lead in self.leaders.items() if role != "consumers"]
        steps += list(reversed(self.on_close))
        steps += [self.webhooks.close]
        if self.nina is not None:
            steps.append(self.nina.close)
        if self.unified is not None:
            steps.append(self.unified.close)
        steps += [self.relay.close]
        if self.kato is not None:
            steps.append(self.kato.close)
        steps.append(self.realtime.close)
        for step in steps:
            try:
                await step()
            except Exception:
                log.exception("shutdown step failed")
        await self.hub.close()


def _extra(settings: Settings, name: str, default: Any) -> Any:
    # Settings.extra wins over the SESSIONHUB_* settings (tests and the benchmarks use it).
    return settings.extra.get(name, default)


def build_runtime(settings: Settings, *, clock: Callable[[], datetime] = utcnow) -> Runtime:
    """Wire every piece of a node for ``settings``."""
    created = False
    secret = settings.jwt_secret
    public_key = settings.public_key_pem()
    if not secret and not public_key:
        secret, created = load_or_create_secret(settings.data_dir)
    auth = Authenticator(
        secret=secret or None, public_key=public_key, api_keys=parse_api_keys(settings.api_keys)
    )
    hub = open_hub(settings, clock=clock)
    node_id = settings.resolved_node_id()
    lease = settings.leader_lease_seconds
    sweeps = Leadership(hub, "scheduler", node_id, ttl=lease)
    scheduler = Scheduler(hub, interval=settings.sweep_interval or None, leader=sweeps)

    node = RealtimeNode(
        hub,
        auth,
        ping_interval=settings.ping_interval,
        max_queue_bytes=int(
            _extra(settings, "realtime_queue_bytes", settings.realtime_queue_bytes)
        ),
        max_per_peer=int(
            _extra(settings, "realtime_max_per_address", settings.realtime_max_per_address)
        ),
        close_timeout=float(
            _extra(settings, "realtime_close_timeout", settings.realtime_close_timeout)
        ),
        recover_limit=settings.history_size,
    )
    publish = _extra(settings, "realtime_publish_topics", settings.realtime_publish_topics)
    if isinstance(publish, str):
        publish = [p.strip() for p in publish.split(",") if p.strip()]
    centrifugo = Centrifugo(
        node,
        CentrifugoConfig(
            max_subscriptions=int(
                _extra(settings, "realtime_max_subscriptions", settings.realtime_max_subscriptions)
            ),
            recover_limit=settings.history_size,
            publish_topics=tuple(publish),
        ),
    )
    node.route(CENTRIFUGO_PATH, centrifugo.open, wire="centrifugo")

    flush = float(
        _extra(settings, "relay_flush_seconds", None)
        or os.environ.get("SESSIONHUB_RELAY_FLUSH_SECONDS")
        or 2.0
    )
    relay = FrameRelay(hub, flush_interval=flush)
    node.route(FRAMES_PATH, Frames(relay).open, wire="frames")

    consumers = Consumers(hub, node_id=node_id, lease_ttl=lease)
    kato: KatoService | None = None
    counts: SessionCounts | None = None
    kato_config = KatoConfig.load(os.environ, settings.extra)
    if kato_config.enabled:
        counts = SessionCounts(
            hub,
            kinds=kato_config.kind_list(),
            alert_above=kato_config.alert_active_sessions if kato_config.system_alerts else 0.0,
        )
        consumers.add(counts)
        kato = KatoService(node, kato_config, counts)
        node.route(KATO_PATH, kato.open, wire="kato")

    nina = NinaService.from_env(hub, os.environ, settings.extra)
    unified: Unified | None = None
    leaders = {"scheduler": sweeps, "consumers": consumers.leadership}
    if nina is not None:
        unified = Unified(node, nina)
        node.route(UNIFIED_PATH, unified.open, wire="unified")
        # Always on, and on one node only: the one holding the lease follows the rigs.
        leaders["nina"] = Leadership(
            hub, "nina", node_id, ttl=lease, on_gain=nina.start, on_lose=nina.close
        )

    webhook_config = WebhookConfig.load(extra=settings.extra, data_dir=settings.data_dir)
    notifier = Notifier.with_webhooks(hub, webhook_config)
    assert notifier.webhooks is not None
    notifier.settle = consumers.drain
    consumers.add(notifier)
    workspaces = WorkspaceService(hub)
    workspaces.settle = consumers.drain
    consumers.add(workspaces.rule)
    runtime = Runtime(
        settings=settings,
        hub=hub,
        scheduler=scheduler,
        auth=auth,
        realtime=node,
        centrifugo=centrifugo,
        relay=relay,
        consumers=consumers,
        notifier=notifier,
        webhooks=notifier.webhooks,
        workspaces=workspaces,
        kato=kato,
        counts=counts,
        nina=nina,
        unified=unified,
        leaders=leaders,
        secret_created=created,
    )
    # Imported here: the rooms' module reaches the runtime through the routers' dependencies.
    from .compat import aesthetic

    aesthetic.install(runtime)
    return runtime
