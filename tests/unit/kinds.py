"""Kinds used only by tests: a richer lifecycle with an approval step, and one with every sweep.

``Approval``: pending -> active (admin approves) -> stopped; pending -> denied (admin);
pending|active -> stopped (owner); active -> dropped (system, heartbeat timeout).
From ``pending`` two different actions are legal for an admin (``approve`` and ``deny``),
which is what the concurrency tests race against each other.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import ClassVar

from sessionhub.core.kind import Attr, Kind
from sessionhub.core.lifecycle import Lifecycle, transition


class Approval(Kind):
    name = "approval"
    id_prefix = "apr"
    attributes: ClassVar[Mapping[str, Attr]] = {
        "target": Attr(str, required=True, max_length=50, mutable=False),
        "mode": Attr(str, choices=("view", "control"), default="view"),
        "priority": Attr(int, default=0),
        "note": Attr(str, max_length=20),
    }
    lifecycle = Lifecycle(
        states=("pending", "active", "stopped", "denied", "dropped"),
        initial=frozenset({"pending"}),
        ended=frozenset({"stopped", "denied", "dropped"}),
        transitions=(
            transition("approve", "pending", "active", roles=("admin",)),
            transition("deny", "pending", "denied", roles=("admin",), reason="denied"),
            transition("stop", ("pending", "active"), "stopped", reason="stopped"),
            transition("drop", "active", "dropped", roles=("system",), reason="heartbeat_timeout"),
        ),
    )
    heartbeat_timeout = timedelta(seconds=60)
    heartbeat_states = frozenset({"active"})


class Swept(Kind):
    """Every sweep the scheduler knows: heartbeat drop, idle abandon, archive and delete."""

    name = "swept"
    id_prefix = "swp"
    lifecycle = Lifecycle(
        states=("open", "live", "abandoned", "finished", "dropped", "archived"),
        initial=frozenset({"open"}),
        ended=frozenset({"abandoned", "finished", "dropped", "archived"}),
        transitions=(
            transition("go", "open", "live"),
            transition("abandon", "open", "abandoned", roles=("system",), reason="idle_timeout"),
            transition("finish", ("open", "live"), "finished", reason="completed"),
            transition("drop", "live", "dropped", roles=("system",), reason="heartbeat_timeout"),
            transition(
                "archive",
                ("abandoned", "finished", "dropped"),
                "archived",
                roles=("system",),
                reason="archived",
            ),
        ),
    )
    heartbeat_timeout = timedelta(seconds=30)
    heartbeat_states = frozenset({"live"})
    idle_timeout = timedelta(seconds=120)
    archive_after = timedelta(hours=1)
    archive_from = frozenset({"abandoned", "finished", "dropped"})
    delete_after = timedelta(days=1)
    delete_from = frozenset({"archived"})
