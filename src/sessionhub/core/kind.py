"""The ``Kind`` policy interface: what one type of session is allowed to be and do."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, ClassVar

from .errors import InvalidInput
from .lifecycle import Lifecycle
from .model import JSON, Event, Session


@dataclass(frozen=True, slots=True)
class Attr:
    """One attribute of a kind: its JSON type, allowed values, default and whether required."""

    type: type | tuple[type, ...]
    choices: tuple[Any, ...] | None = None
    default: Any = None
    required: bool = False
    max_length: int | None = None
    mutable: bool = True


_TYPE_NAMES = {
    str: "string",
    int: "integer",
    float: "number",
    bool: "boolean",
    dict: "object",
    list: "array",
}


def _type_name(t: type | tuple[type, ...]) -> str:
    if isinstance(t, tuple):
        return " or ".join(_TYPE_NAMES.get(x, x.__name__) for x in t)
    return _TYPE_NAMES.get(t, t.__name__)


def _article(noun: str) -> str:
    return ("an " if noun[:1] in "aeiou" else "a ") + noun


#: The per-kind timeouts (``Kind`` attributes) that SESSIONHUB_KIND_TIMEOUTS may set.
TIMEOUTS = ("heartbeat_timeout", "idle_timeout", "wait_timeout", "archive_after", "delete_after")


class Kind:
    """Policy for one type of session. Subclass it in ``kinds/<name>.py`` and register it.

    Everything here is pure: no I/O, time passed in. The hub asks the kind which state a
    new session starts in, validates attributes against ``attributes``, applies lifecycle
    transitions and runs the timeouts below from the scheduler.
    """

    name: ClassVar[str]
    id_prefix: ClassVar[str]
    lifecycle: ClassVar[Lifecycle]
    attributes: ClassVar[Mapping[str, Attr]] = {}
    #: No heartbeat for this long -> action ``heartbeat_action`` (reason ``heartbeat_timeout``).
    heartbeat_timeout: ClassVar[timedelta | None] = None
    heartbeat_action: ClassVar[str] = "drop"
    #: No activity for this long -> action ``idle_action`` (reason ``idle_timeout``).
    idle_timeout: ClassVar[timedelta | None] = None
    idle_action: ClassVar[str] = "abandon"
    #: This long unchanged in one of ``wait_states`` -> action ``wait_action`` (reason
    #: ``wait_reason``): a session waiting on someone who never comes (an approval, say)
    #: does not wait forever.
    wait_timeout: ClassVar[timedelta | None] = None
    wait_states: ClassVar[frozenset[str]] = frozenset()
    wait_action: ClassVar[str] = ""
    wait_reason: ClassVar[str] = "wait_timeout"
    #: This long in one of ``archive_from`` -> action ``archive``.
    archive_after: ClassVar[timedelta | None] = None
    archive_from: ClassVar[frozenset[str]] = frozenset()
    #: This long after ending (or archiving) -> the row and its events are deleted.
    delete_after: ClassVar[timedelta | None] = None
    delete_from: ClassVar[frozenset[str]] = frozenset()
    #: Random bytes in a new id (hex-encoded after ``id_prefix_``).
    id_bytes: ClassVar[int] = 8
    #: States in which a heartbeat is accepted.
    heartbeat_states: ClassVar[frozenset[str] | None] = None
    #: Metadata keys the kind's own services keep (e.g. ``_commands``): callers cannot set them
    #: through the generic API, and replacing the metadata keeps them.
    reserved_metadata: ClassVar[frozenset[str]] = frozenset()

    def alive_states(self) -> frozenset[str]:
        """The states in which sessions of this kind are dropped when heartbeats stop:
        ``heartbeat_states``, or by default every state that has not ended."""
        if self.heartbeat_states is not None:
            return self.heartbeat_states
        return frozenset(self.lifecycle.states) - self.lifecycle.ended

    def initial_state(self, attributes: JSON) -> str:
        """The state a new session starts in; by default the first initial state."""
        return (
            self.lifecycle.states[0]
            if len(self.lifecycle.initial) != 1
            else next(iter(self.lifecycle.initial))
        )

    def validate_attributes(self, given: Mapping[str, Any], *, base: JSON | None = None) -> JSON:
        """Check ``given`` against the schema and return the full attribute set.

        With ``base`` (an update), missing keys keep their current value and immutable
        attributes may not change.
        """
        if not isinstance(given, Mapping):
            raise InvalidInput("attributes must be an object")
        unknown = sorted(set(given) - set(self.attributes))
        if unknown:
            known = ", ".join(sorted(self.attributes)) or "none"
            raise InvalidInput(
                f"unknown attribute(s) {unknown} for kind {self.name!r} (known: {known})"
            )
        out: JSON = dict(base) if base is not None else {}
        for name, spec in self.attributes.items():
            if name in given:
                value = given[name]
                if base is not None and not spec.mutable and value != base.get(name):
                    raise InvalidInput(f"attribute {name!r} cannot be changed after creation")
                ok = isinstance(value, spec.type) and not (
                    isinstance(value, bool) and spec.type in (int, float, (int, float))
                )
                if value is None and not spec.required:
                    ok = True
                if not ok:
                    raise InvalidInput(
                        f"attribute {name!r} must be {_article(_type_name(spec.type))}"
                    )
                if spec.choices is not None and value not in spec.choices:
                    raise InvalidInput(f"attribute {name!r} must be one of {list(spec.choices)}")
                if (
                    spec.max_length is not None
                    and isinstance(value, str)
                    and len(value) > spec.max_length
                ):
                    raise InvalidInput(f"attribute {name!r} is longer than {spec.max_length}")
                out[name] = value
            elif base is None:
                if spec.required:
                    raise InvalidInput(f"attribute {name!r} is required for kind {self.name!r}")
                out[name] = spec.default
        return out

    def view(self, session: Session) -> JSON:
        """Extra, kind-specific fields merged into the session's REST representation."""
        return {}

    def notifications(self, event: Event, before: Session | None) -> list[JSON]:
        """Notifications an event produces (``[{"event": ..., "data": {...}}]``); none by default."""
        return []
