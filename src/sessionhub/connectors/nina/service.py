"""``NinaService``: the always-on NINA connector of a sessionhub node.

It follows every configured rig (``SESSIONHUB_NINA_URL``), whether or not anyone watches,
and turns what the rigs send into hub commands on sessions of kind ``imaging`` - one per
night, owner the rig. It never writes the store itself, except the bounded raw-event log.
Each change is published on the broker topic ``nina:<rig>`` as the ``/ws/unified``
messages (``messages.py``); ``state(rig)`` is what ``GET /api/nina/session-state`` returns.

Run it on one node: ``start()`` and ``close()`` are idempotent, so a leadership callback can
start and stop it.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any

import orjson

from ...core.errors import NotFound
from ...core.model import JSON, Session
from ...core.streams import Publication
from ...hub import Hub
from .config import NinaConfig
from .rawlog import RawLog, replay
from .runner import KIND, RigRunner
from .state import RigState, Rules

log = logging.getLogger("sessionhub.nina")

#: Prometheus metrics: name -> (type, help, health field or counter).
METRICS: Mapping[str, tuple[str, str]] = {
    "sessionhub_nina_connected": ("gauge", "1 while the rig's socket is open and seeded"),
    "sessionhub_nina_retries": ("gauge", "Failed connection attempts since the last success"),
    "sessionhub_nina_reconnects_total": ("counter", "Connections after the first"),
    "sessionhub_nina_last_event_timestamp_seconds": ("gauge", "Time of the rig's newest event"),
    "sessionhub_nina_events_total": ("counter", "Events received (history and live)"),
    "sessionhub_nina_applied_total": ("counter", "Events applied (new, not repeats)"),
    "sessionhub_nina_repeats_total": ("counter", "Events skipped as already applied"),
    "sessionhub_nina_bad_input_total": ("counter", "Frames and values that were not usable"),
    "sessionhub_nina_commits_total": ("counter", "Hub commands committed"),
    "sessionhub_nina_published_total": ("counter", "Messages published on nina:<rig>"),
}


class NinaService:
    """The connector: one ``RigRunner`` per configured rig."""

    def __init__(self, hub: Hub, config: NinaConfig, *, rng: random.Random | None = None) -> None:
        kind = hub.kinds.get(KIND)
        if kind is None:
            raise ValueError("the NINA connector needs the 'imaging' kind registered")
        if config.idle_timeout > 0:
            # One idle timeout for the fold and the scheduler's sweep alike.
            setattr(kind, "idle_timeout", timedelta(seconds=config.idle_timeout))  # noqa: B010
        self.hub = hub
        self.config = config
        self.rng = rng or random.Random()
        self.rules = Rules(
            idle_timeout=kind.idle_timeout, local=config.zone, rms_min_delta=config.rms_min_delta
        )
        self._runners = {rig.name: RigRunner(self, rig) for rig in config.rigs}
        self._unlisten: Callable[[], None] | None = None

    @classmethod
    def from_env(
        cls, hub: Hub, env: Mapping[str, str], extra: Mapping[str, Any]
    ) -> NinaService | None:
        """The service for ``SESSIONHUB_NINA_*`` (``extra["nina_<name>"]`` wins); None when
        ``SESSIONHUB_NINA_URL`` is not set. Raises ``ValueError`` on a bad setting."""
        config = NinaConfig.load(env, extra)
        return None if config is None else cls(hub, config)

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def rigs(self) -> tuple[str, ...]:
        return tuple(self._runners)

    @property
    def running(self) -> bool:
        return self._unlisten is not None

    async def start(self) -> None:
        """Take up each rig's newest night and start following the rigs (idempotent)."""
        if self._unlisten is not None:
            return
        for runner in self._runners.values():
            await runner.restore()
        # Changes from the broker, not this process's hub: an admin's stop made through
        # another node reaches the connector too.
        self._unlisten = self.hub.broker.subscribe(f"sessions:{KIND}", self._on_publication)
        for runner in self._runners.values():
            runner.start()
        log.info("nina connector following %s", ", ".join(self.rigs))

    async def close(self) -> None:
        """Stop following the rigs (idempotent; ``start`` may follow again)."""
        if self._unlisten is None:
            return
        self._unlisten()
        self._unlisten = None
        for runner in self._runners.values():
            await runner.stop()

    def _on_publication(self, pub: Publication) -> None:
        try:
            event = orjson.loads(pub.data)
            runner = self._runners.get(str(event.get("owner")))
            snapshot = (event.get("data") or {}).get("session")
            if runner is None or not isinstance(snapshot, dict):
                return
            session = Session.from_dict(snapshot)
        except (ValueError, TypeError, KeyError, AttributeError):
            log.warning("an imaging event on the broker could not be read")
            return
        runner.hub_changed(session)

    # -- reading and commands --------------------------------------------------------------

    def runner(self, rig: str | None = None) -> RigRunner:
        """The runner of ``rig`` (default: the first configured); 404 if unknown."""
        if rig is None:
            return next(iter(self._runners.values()))
        try:
            return self._runners[rig]
        except KeyError:
            raise NotFound(f"no NINA rig {rig[:64]!r} (rigs: {', '.join(self.rigs)})") from None

    async def state(self, rig: str | None = None) -> JSON:
        """The document's ``unifiedSession`` data object for the rig's current night, else its
        last one, plus ``images_by_type``, ``end_reason``, ``activity`` and ``stream``: the
        position on topic ``nina:<rig>`` it reflects (follow from there for what is next)."""
        return self.runner(rig).state_data()

    async def refresh(self, rig: str | None = None) -> JSON:
        """Seed again from the rig's event history; idempotent (repeats are skipped)."""
        return await self.runner(rig).refresh()

    async def replay(self, rig: str | None = None) -> RigState:
        """The rig's state rebuilt from its kept raw events alone (nothing is written)."""
        runner = self.runner(rig)
        raw = RawLog(self.hub, runner.rig.source, self.config.raw_retention)
        state, _ = replay(
            runner.name,
            await raw.records(),
            self.rules,
            window=timedelta(seconds=self.config.dedupe_window),
        )
        return state

    def health(self) -> JSON:
        """Per rig: connected, last event time, retries, counters of input and bad input."""
        return {
            "running": self.running,
            "rigs": {name: r.health() for name, r in self._runners.items()},
        }

    def metrics(self) -> dict[str, JSON]:
        """``{name: {"type", "help", "values": {rig: number}}}`` for a Prometheus collector
        (label ``rig``)."""
        out: dict[str, JSON] = {}
        for name, (kind, text) in METRICS.items():
            out[name] = {"type": kind, "help": text, "values": {}}
        for rig, r in self._runners.items():
            h = r.status.to_json()
            c = h["counts"]
            last = r.status.last_event_at
            values = {
                "sessionhub_nina_connected": 1.0 if h["connected"] else 0.0,
                "sessionhub_nina_retries": float(h["retries"]),
                "sessionhub_nina_reconnects_total": float(h["reconnects"]),
                "sessionhub_nina_last_event_timestamp_seconds": last.timestamp() if last else 0.0,
                "sessionhub_nina_events_total": float(c["events"]),
                "sessionhub_nina_applied_total": float(c["applied"]),
                "sessionhub_nina_repeats_total": float(c["duplicate"] + c["twin"] + c["stale"]),
                "sessionhub_nina_bad_input_total": float(h["bad_input"]),
                "sessionhub_nina_commits_total": float(c["commits"]),
                "sessionhub_nina_published_total": float(c["published"]),
            }
            for name, value in values.items():
                out[name]["values"][rig] = value
        return out
