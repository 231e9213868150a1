"""Follow one session without a gap: a REST snapshot, then every newer change, live.

The snapshot's ``stream`` is the position of ``session:<id>`` read *before* the snapshot, so
subscribing from there misses nothing. The session's ``version`` is the identity of each
change (+1 on every change, carried by the snapshot and by every event): a publication whose
``version`` is not newer than the state already yielded is a repeat and is skipped - the
snapshot's own change seen again live, or an event the server published again after a
crash (delivery is at least once, under a new offset; the version stays). If the stream
ever cannot be recovered (after a long outage, a server restart with the memory broker), a
fresh snapshot is loaded and yielded instead of carrying on past a hole. So each version is
yielded at most once, in order, and a jump over versions is always a snapshot
(``event is None``), never a silent gap.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from .realtime import Publication, RealtimeClient, Recovery
from .rest import SessionHubClient


@dataclass(frozen=True, slots=True)
class SessionUpdate:
    """The session's state after a change. ``version`` identifies the change (yielded at
    most once, in increasing order). ``event`` is the event that made it, or ``None`` when
    ``session`` comes from a REST snapshot (the first one, or a reload after a gap)."""

    session: dict[str, Any]
    version: int
    event: dict[str, Any] | None


async def follow(
    rest: SessionHubClient,
    realtime: RealtimeClient,
    session_id: str,
    *,
    max_reloads: int = 100,
) -> AsyncIterator[SessionUpdate]:
    """Yield the session's state: the snapshot first, then after each newer event (newer
    by ``version``, the identity of a change: repeats and republications are skipped).

    Runs until the caller stops iterating (or the realtime client stops for good, whose
    error is raised). ``max_reloads`` bounds snapshot reloads after unrecoverable gaps.
    """
    snapshot = await rest.get_session(session_id)
    stream = snapshot["stream"]
    sub = await realtime.subscribe(
        str(stream["topic"]), since=(int(stream["offset"]), str(stream["epoch"]))
    )
    try:
        version = int(snapshot["version"])
        yield SessionUpdate(snapshot, version, None)
        reloads = 0
        async for item in sub:
            if isinstance(item, Recovery):
                if item.recovered:
                    continue
                reloads += 1
                if reloads > max_reloads:
                    raise RuntimeError(f"{session_id}: more than {max_reloads} unrecoverable gaps")
                snapshot = await rest.get_session(session_id)
                if int(snapshot["version"]) > version:
                    version = int(snapshot["version"])
                    yield SessionUpdate(snapshot, version, None)
                continue
            update = _update(item)
            if update is not None and update.version > version:
                version = update.version
                yield update
    finally:
        await sub.unsubscribe()


def _update(pub: Publication) -> SessionUpdate | None:
    event = pub.data
    if not isinstance(event, dict) or not isinstance(event.get("version"), int):
        return None
    data = event.get("data")
    session = data.get("session") if isinstance(data, dict) else None
    if not isinstance(session, dict):
        return None
    return SessionUpdate(session, int(event["version"]), event)
