"""The kinds this server knows. Adding a kind: one file in this package plus one line here."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import timedelta

from ..core.errors import InvalidInput
from ..core.kind import TIMEOUTS, Kind
from .generic import Generic
from .imaging import Imaging
from .remote_access import RemoteAccess
from .room import Room
from .screen_share import ScreenShare
from .workspace import Workspace

BUILTIN: tuple[type[Kind], ...] = (
    Generic,
    Workspace,
    RemoteAccess,
    ScreenShare,
    Imaging,
    Room,
)


class Registry(Mapping[str, Kind]):
    """Name -> kind instance, with per-kind timeout overrides from settings."""

    def __init__(self, kinds: Iterable[Kind]) -> None:
        self._kinds = {k.name: k for k in kinds}

    def __getitem__(self, name: str) -> Kind:
        return self._kinds[name]

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self._kinds)

    def __len__(self) -> int:
        return len(self._kinds)

    def get_kind(self, name: str) -> Kind:
        """The kind called ``name``, or a 422 naming the known ones."""
        try:
            return self._kinds[name]
        except KeyError:
            known = ", ".join(sorted(self._kinds))
            raise InvalidInput(f"unknown kind {name!r} (known: {known})") from None

    def shortest_timeout(self) -> timedelta | None:
        values = [k.heartbeat_timeout for k in self._kinds.values() if k.heartbeat_timeout]
        values += [k.idle_timeout for k in self._kinds.values() if k.idle_timeout]
        values += [k.wait_timeout for k in self._kinds.values() if k.wait_timeout]
        return min(values) if values else None


def default_registry(overrides: Mapping[str, Mapping[str, float]] | None = None) -> Registry:
    """All built-in kinds; ``overrides`` maps kind -> {timeout attribute: seconds}."""
    kinds: list[Kind] = []
    for cls in BUILTIN:
        kind = cls()
        for attr, seconds in (overrides or {}).get(cls.name, {}).items():
            if attr not in TIMEOUTS:
                raise ValueError(f"unknown timeout {attr!r} for kind {cls.name!r}")
            setattr(kind, attr, timedelta(seconds=seconds))
        kinds.append(kind)
    return Registry(kinds)
