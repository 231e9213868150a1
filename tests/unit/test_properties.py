"""Property tests: whatever commands arrive, in whatever order, from whoever, a session

- never moves backwards (state rank never decreases),
- never leaves a terminal state,
- gets ``version`` + 1 per change (create = 1) and exactly one event per change,
- is ended (``ended_at`` and ``end_reason``) exactly when its state is an ended state.

Run over the generic kind and over the richer ``approval`` test kind.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from sessionhub.core import engine
from sessionhub.core.errors import SessionHubError
from sessionhub.core.kind import Kind
from sessionhub.core.principal import SYSTEM_PRINCIPAL, Principal
from sessionhub.kinds.generic import Generic

from .kinds import Approval, Swept

T0 = datetime(2026, 1, 1, tzinfo=UTC)
PRINCIPALS = {
    "owner": Principal("alice"),
    "admin": Principal("root", frozenset({"admin"})),
    "system": SYSTEM_PRINCIPAL,
    "stranger": Principal("mallory"),
}
KINDS: list[Kind] = [Generic(), Approval(), Swept()]


def commands(kind: Kind) -> st.SearchStrategy[list[tuple[str, Any, str]]]:
    actions = st.sampled_from([*kind.lifecycle.actions, "bogus"])
    act = st.tuples(st.just("act"), actions, st.sampled_from(sorted(PRINCIPALS)))
    attr_names = sorted(kind.attributes)
    attrs = st.dictionaries(
        st.sampled_from([*attr_names, "unknown"]),
        st.one_of(st.none(), st.integers(-3, 3), st.sampled_from(["view", "control", "pc-1", "x"])),
        max_size=3,
    )
    meta = st.dictionaries(st.text(max_size=5), st.integers(), max_size=3)
    upd = st.tuples(st.just("update"), st.tuples(attrs, meta), st.sampled_from(sorted(PRINCIPALS)))
    return st.lists(st.one_of(act, upd), max_size=25)


def check_invariants(kind: Kind, s: Any) -> None:
    lc = kind.lifecycle
    ended = s.state in lc.ended
    assert (s.ended_at is not None) == ended
    assert (s.end_reason is not None) == ended
    assert s.updated_at >= s.created_at


def run(kind: Kind, cmds: list[tuple[str, Any, str]]) -> None:
    lc = kind.lifecycle
    attributes = {"target": "pc-1"} if "target" in kind.attributes else {}
    c = engine.create(
        kind,
        session_id="s",
        owner="alice",
        attributes=attributes,
        metadata={},
        actor=PRINCIPALS["owner"],
        now=T0,
        event_id="e0",
    )
    s = c.session
    assert s.version == 1 and c.event.version == 1
    check_invariants(kind, s)
    events = [c.event]
    for i, (op, arg, who) in enumerate(cmds, start=1):
        now = T0 + timedelta(seconds=i)
        actor = PRINCIPALS[who]
        try:
            if op == "act":
                change = engine.act(kind, s, arg, actor=actor, now=now, event_id=f"e{i}")
            else:
                attrs, meta = arg
                change = engine.update(
                    kind, s, actor=actor, now=now, event_id=f"e{i}", attributes=attrs, metadata=meta
                )
        except SessionHubError:
            continue  # a refused command changes nothing (the values are immutable)
        new = change.session
        assert change.before is s
        assert who != "stranger", "a stranger changed someone else's session"
        assert new.version == s.version + 1
        assert change.event.version == new.version and change.event.session_id == s.id
        assert lc.rank(new.state) >= lc.rank(s.state), f"{s.state} -> {new.state}"
        if s.state in lc.terminal:
            assert new.state == s.state, f"left terminal state {s.state}"
        if s.state in lc.ended:
            # Once ended, the end time and reason never change.
            assert (new.ended_at, new.end_reason) == (s.ended_at, s.end_reason)
        if op == "act":
            assert lc.rank(new.state) > lc.rank(s.state)
        else:
            assert new.state == s.state
        check_invariants(kind, new)
        events.append(change.event)
        s = new
    assert [e.version for e in events] == list(range(1, s.version + 1))


@settings(max_examples=150, deadline=None)
@given(cmds=commands(KINDS[0]))
def test_generic_sessions_only_move_forward(cmds: list[tuple[str, Any, str]]) -> None:
    run(KINDS[0], cmds)


@settings(max_examples=200, deadline=None)
@given(cmds=commands(KINDS[1]))
def test_approval_sessions_only_move_forward(cmds: list[tuple[str, Any, str]]) -> None:
    run(KINDS[1], cmds)


@settings(max_examples=100, deadline=None)
@given(cmds=commands(KINDS[2]))
def test_swept_sessions_only_move_forward(cmds: list[tuple[str, Any, str]]) -> None:
    run(KINDS[2], cmds)


@settings(max_examples=100, deadline=None)
@given(
    states=st.lists(st.sampled_from("abcdef"), min_size=2, max_size=6, unique=True),
    pairs=st.lists(st.tuples(st.integers(0, 5), st.integers(0, 5)), max_size=8),
)
def test_a_lifecycle_can_only_be_declared_forward(
    states: list[str], pairs: list[tuple[int, int]]
) -> None:
    """Any declared transition whose source is not before its target is refused."""
    from sessionhub.core.lifecycle import Lifecycle, transition

    ts = [
        transition(f"t{i}", states[a % len(states)], states[b % len(states)])
        for i, (a, b) in enumerate(pairs)
    ]
    backwards = any(states.index(next(iter(t.sources))) >= states.index(t.target) for t in ts)
    try:
        Lifecycle(tuple(states), frozenset(states[:1]), frozenset(), tuple(ts))
    except ValueError:
        assert backwards
    else:
        assert not backwards
