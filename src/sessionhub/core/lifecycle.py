"""The lifecycle machine: forward-only states, named transitions, roles allowed per transition."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from .errors import Forbidden, IllegalTransition, NotFound


@dataclass(frozen=True, slots=True)
class Transition:
    """A named action moving a session from one of ``sources`` to ``target``.

    ``roles`` names who may trigger it: ``owner``, ``admin``, ``system`` (the scheduler and
    upstream connectors). ``reason`` is the end reason recorded when ``target`` ends the
    session (for example ``stopped``, ``denied``, ``heartbeat_timeout``).
    """

    action: str
    sources: frozenset[str]
    target: str
    roles: frozenset[str]
    reason: str | None = None


def transition(
    action: str,
    sources: Iterable[str] | str,
    target: str,
    roles: Iterable[str] = ("owner", "admin", "system"),
    reason: str | None = None,
) -> Transition:
    src = frozenset([sources]) if isinstance(sources, str) else frozenset(sources)
    return Transition(action, src, target, frozenset(roles), reason)


def dropped_when_silent(source: str = "active") -> Transition:
    """``drop``: ``source`` -> ``dropped`` when the session's heartbeats stop (the sweep's
    ``heartbeat_timeout``; an admin may also drop it)."""
    return transition(
        "drop", source, "dropped", roles=("system", "admin"), reason="heartbeat_timeout"
    )


@dataclass(frozen=True, slots=True)
class Lifecycle:
    """States in forward order; a transition may only move to a later state.

    ``ended`` states close the session (``ended_at`` and ``end_reason`` are set);
    ``terminal`` states have no way out. Both are checked at construction so a kind
    cannot declare a lifecycle that moves backwards or leaves a terminal state.
    """

    states: tuple[str, ...]
    initial: frozenset[str]
    ended: frozenset[str]
    transitions: tuple[Transition, ...]
    _by_action: dict[str, list[Transition]] = field(default_factory=dict, compare=False)
    #: Computed once: every change asks whether its session's state is terminal.
    _terminal: frozenset[str] = field(init=False, default=frozenset(), compare=False, repr=False)

    def __post_init__(self) -> None:
        rank = {s: i for i, s in enumerate(self.states)}
        if len(rank) != len(self.states):
            raise ValueError("duplicate state")
        for s in self.initial | self.ended:
            if s not in rank:
                raise ValueError(f"unknown state {s!r}")
        for t in self.transitions:
            if t.target not in rank or any(s not in rank for s in t.sources):
                raise ValueError(f"transition {t.action!r} names an unknown state")
            for s in t.sources:
                if rank[s] >= rank[t.target]:
                    raise ValueError(f"transition {t.action!r} moves backwards: {s} -> {t.target}")
            if t.target in self.ended and t.reason is None:
                raise ValueError(f"transition {t.action!r} ends the session without a reason")
            self._by_action.setdefault(t.action, []).append(t)
        sources = {s for t in self.transitions for s in t.sources}
        object.__setattr__(self, "_terminal", frozenset(s for s in self.states if s not in sources))

    @property
    def terminal(self) -> frozenset[str]:
        """States no transition leaves."""
        return self._terminal

    @property
    def actions(self) -> tuple[str, ...]:
        return tuple(self._by_action)

    def rank(self, state: str) -> int:
        return self.states.index(state)

    def resolve(self, state: str, action: str, roles: frozenset[str]) -> Transition:
        """The transition ``action`` takes from ``state`` for a caller with ``roles``."""
        candidates = self._by_action.get(action)
        if not candidates:
            raise NotFound(
                f"unknown action {action!r}; this kind's actions are: {', '.join(self.actions)}"
            )
        for t in candidates:
            if state in t.sources:
                if not (t.roles & roles):
                    raise Forbidden(f"action {action!r} needs one of the roles {sorted(t.roles)}")
                return t
        if state in self.terminal:
            raise IllegalTransition(
                f"session is {state!r}, a terminal state; {action!r} is not possible"
            )
        allowed = sorted({s for t in candidates for s in t.sources})
        raise IllegalTransition(
            f"action {action!r} is not possible from state {state!r} (only from {allowed})"
        )


def ends_or_drops(action: str, ended: str, reason: str) -> Lifecycle:
    """The lifecycle of a session that lives until its owner ends it (``action``: active ->
    ``ended``, with ``reason``) or its heartbeats stop (``drop``: active -> dropped)."""
    return Lifecycle(
        states=("active", ended, "dropped"),
        initial=frozenset({"active"}),
        ended=frozenset({ended, "dropped"}),
        transitions=(transition(action, "active", ended, reason=reason), dropped_when_silent()),
    )
