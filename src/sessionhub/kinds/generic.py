"""``generic``: the simplest kind; active until ended, dropped when heartbeats stop."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import ClassVar

from ..core.kind import Attr, Kind
from ..core.lifecycle import ends_or_drops


class Generic(Kind):
    name = "generic"
    id_prefix = "ses"
    attributes: ClassVar[Mapping[str, Attr]] = {"label": Attr(str, max_length=200)}
    lifecycle = ends_or_drops("end", "ended", reason="ended")
    heartbeat_timeout = timedelta(minutes=5)
    heartbeat_states = frozenset({"active"})
