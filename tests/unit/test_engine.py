"""core.engine: commands in, (session, event) out. No I/O, time passed in."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from sessionhub.core import engine
from sessionhub.core.engine import MAX_METADATA_BYTES, Change
from sessionhub.core.errors import Forbidden, IllegalTransition, InvalidInput, NotFound
from sessionhub.core.model import CREATED, STATE_CHANGED, UPDATED, Session
from sessionhub.core.principal import SYSTEM_PRINCIPAL, Principal
from sessionhub.kinds.generic import Generic

from .kinds import Approval

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
ALICE = Principal("alice")
BOB = Principal("bob")
ROOT = Principal("root", frozenset({"admin"}))
GENERIC = Generic()
APPROVAL = Approval()


def make(
    kind: Any = GENERIC,
    owner: str = "alice",
    actor: Principal = ALICE,
    attributes: dict[str, Any] | None = None,
    metadata: dict[str, Any] | None = None,
) -> Change:
    if attributes is None:
        attributes = {"target": "pc-1"} if kind is APPROVAL else {}
    return engine.create(
        kind,
        session_id="s1",
        owner=owner,
        attributes=attributes,
        metadata=metadata or {},
        actor=actor,
        now=T0,
        event_id="e1",
    )


def act(kind: Any, s: Session, action: str, actor: Principal, **kw: Any) -> Change:
    return engine.act(
        kind, s, action, actor=actor, now=T0 + timedelta(minutes=1), event_id="e2", **kw
    )


# -- create ------------------------------------------------------------------------------


def test_create_starts_in_the_initial_state_at_version_one() -> None:
    c = make(metadata={"x": 1})
    s = c.session
    assert c.before is None
    assert (s.id, s.kind, s.owner, s.state, s.version) == ("s1", "generic", "alice", "active", 1)
    assert s.created_at == s.updated_at == s.last_activity_at == s.started_at == T0
    assert s.ended_at is None and s.end_reason is None
    assert s.attributes == {"label": None} and s.metadata == {"x": 1}
    e = c.event
    assert (e.id, e.type, e.session_id, e.kind, e.owner, e.actor, e.version) == (
        "e1",
        CREATED,
        "s1",
        "generic",
        "alice",
        "alice",
        1,
    )
    assert e.at == T0 and e.data["state"] == "active" and e.data["session"] == s.to_dict()


def test_a_session_created_in_a_live_state_counts_as_started() -> None:
    # Every non-ended state counts as started, so durations include the waiting time.
    s = make(APPROVAL).session
    assert s.state == "pending" and s.started_at == T0
    assert s.attributes == {"target": "pc-1", "mode": "view", "priority": 0, "note": None}


def test_only_an_admin_creates_for_another_user() -> None:
    with pytest.raises(Forbidden):
        make(owner="bob", actor=ALICE)
    assert make(owner="bob", actor=ROOT).session.owner == "bob"
    assert make(owner="bob", actor=SYSTEM_PRINCIPAL).event.actor == "system"


@pytest.mark.parametrize("owner", ["", "x" * 201])
def test_owner_must_be_a_short_non_empty_string(owner: str) -> None:
    with pytest.raises(InvalidInput, match="owner"):
        make(owner=owner, actor=ROOT)


def test_metadata_must_be_an_object() -> None:
    with pytest.raises(InvalidInput, match="metadata must be an object"):
        make(metadata=[1, 2])  # type: ignore[arg-type]


def test_metadata_larger_than_the_limit_is_rejected() -> None:
    with pytest.raises(InvalidInput, match="metadata"):
        make(metadata={"blob": "x" * (MAX_METADATA_BYTES + 1)})
    # Just under the limit is fine.
    assert make(metadata={"blob": "x" * (MAX_METADATA_BYTES - 100)}).session.version == 1


def test_metadata_must_be_json() -> None:
    with pytest.raises(InvalidInput, match="JSON"):
        make(metadata={"when": T0})


def test_a_kind_whose_initial_state_is_not_initial_cannot_create() -> None:
    class Odd(Generic):
        def initial_state(self, attributes: dict[str, Any]) -> str:
            return "ended"

    with pytest.raises(IllegalTransition):
        make(Odd())


# -- act ---------------------------------------------------------------------------------


def test_act_moves_forward_and_bumps_version_by_one() -> None:
    s = make(APPROVAL).session
    c = act(APPROVAL, s, "approve", ROOT)
    assert c.before == s
    n = c.session
    assert n.state == "active" and n.version == 2
    assert n.started_at == T0 and n.ended_at is None  # unchanged by later moves
    assert n.updated_at == n.last_activity_at == T0 + timedelta(minutes=1)
    assert c.event.type == STATE_CHANGED and c.event.version == 2 and c.event.actor == "root"
    assert c.event.data["from"] == "pending" and c.event.data["to"] == "active"
    assert c.event.data["action"] == "approve" and "reason" not in c.event.data


def test_ending_records_time_reason_and_detail() -> None:
    s = act(APPROVAL, make(APPROVAL).session, "approve", ROOT).session
    c = act(APPROVAL, s, "stop", ALICE, detail="User requested")
    n = c.session
    assert n.state == "stopped" and n.version == 3
    assert n.ended_at == T0 + timedelta(minutes=1)
    assert n.end_reason == "stopped" and n.end_detail == "User requested"
    assert c.event.data["reason"] == "stopped" and c.event.data["detail"] == "User requested"
    assert n.duration_seconds(T0 + timedelta(days=1)) == 60.0  # from creation to the end


def test_reason_overrides_the_transition_reason() -> None:
    s = act(APPROVAL, make(APPROVAL).session, "approve", ROOT).session
    n = act(APPROVAL, s, "drop", SYSTEM_PRINCIPAL, reason="lost").session
    assert n.end_reason == "lost"


def test_denying_a_pending_session_ends_it_with_reason_denied() -> None:
    n = act(APPROVAL, make(APPROVAL).session, "deny", ROOT).session
    assert n.state == "denied" and n.end_reason == "denied" and n.ended_at is not None


def test_owner_cannot_approve_and_stranger_cannot_touch() -> None:
    s = make(APPROVAL).session
    with pytest.raises(Forbidden):
        act(APPROVAL, s, "approve", ALICE)
    with pytest.raises(Forbidden, match="not your session"):
        act(APPROVAL, s, "stop", BOB)


def test_unknown_action_is_not_found() -> None:
    with pytest.raises(NotFound):
        act(GENERIC, make().session, "fly", ALICE)


def test_nothing_leaves_a_terminal_state() -> None:
    s = act(GENERIC, make().session, "end", ALICE).session
    for action in ("end", "drop"):
        with pytest.raises(IllegalTransition, match="terminal"):
            act(GENERIC, s, action, SYSTEM_PRINCIPAL)


def test_an_ended_state_that_is_not_terminal_keeps_its_first_reason() -> None:
    from .kinds import Swept

    kind = Swept()
    s = engine.create(
        kind,
        session_id="w",
        owner="alice",
        attributes={},
        metadata={},
        actor=ALICE,
        now=T0,
        event_id="a",
    ).session
    s = act(kind, s, "finish", ALICE, detail="done").session
    assert s.end_reason == "completed"
    later = engine.act(
        kind, s, "archive", actor=SYSTEM_PRINCIPAL, now=T0 + timedelta(hours=2), event_id="b"
    ).session
    assert later.state == "archived" and later.version == 3
    assert later.end_reason == "completed" and later.end_detail == "done"
    assert later.ended_at == s.ended_at  # ending time is when it first ended


# -- update ------------------------------------------------------------------------------


def test_update_replaces_metadata_and_validates_attributes() -> None:
    s = make(APPROVAL, metadata={"a": 1}).session
    c = engine.update(
        APPROVAL,
        s,
        actor=ALICE,
        now=T0 + timedelta(seconds=5),
        event_id="u",
        attributes={"mode": "control"},
        metadata={"b": 2},
    )
    n = c.session
    assert n.version == 2 and n.metadata == {"b": 2}
    assert n.attributes["mode"] == "control" and n.attributes["target"] == "pc-1"
    assert n.state == "pending" and n.updated_at == T0 + timedelta(seconds=5)
    assert c.event.type == UPDATED and c.event.version == 2
    assert c.event.data["changes"] == {"attributes": {"mode": "control"}, "metadata": ["b"]}


def test_update_merges_metadata_on_request_and_adds_counters() -> None:
    s = make(metadata={"a": 1}).session
    n = engine.update(
        GENERIC,
        s,
        actor=ALICE,
        now=T0,
        event_id="u",
        metadata={"b": 2},
        merge_metadata=True,
        counters={"frames": 3},
    ).session
    n = engine.update(GENERIC, n, actor=ALICE, now=T0, event_id="v", counters={"frames": 2}).session
    assert n.metadata == {"a": 1, "b": 2} and n.counters == {"frames": 5} and n.version == 3


@pytest.mark.parametrize("inc", [1.5, "2", True])
def test_counter_increments_must_be_integers(inc: Any) -> None:
    with pytest.raises(InvalidInput, match="counter"):
        engine.update(
            GENERIC, make().session, actor=ALICE, now=T0, event_id="u", counters={"c": inc}
        )


def test_update_of_an_immutable_attribute_is_rejected() -> None:
    s = make(APPROVAL).session
    with pytest.raises(InvalidInput, match="cannot be changed"):
        engine.update(APPROVAL, s, actor=ALICE, now=T0, event_id="u", attributes={"target": "pc-2"})
    # Sending the same value is not a change.
    n = engine.update(APPROVAL, s, actor=ALICE, now=T0, event_id="u", attributes={"target": "pc-1"})
    assert n.session.attributes["target"] == "pc-1"


def test_update_of_a_terminal_session_is_illegal_except_for_the_system() -> None:
    s = act(GENERIC, make().session, "end", ALICE).session
    with pytest.raises(IllegalTransition, match="terminal"):
        engine.update(GENERIC, s, actor=ROOT, now=T0, event_id="u", metadata={"x": 1})
    n = engine.update(GENERIC, s, actor=SYSTEM_PRINCIPAL, now=T0, event_id="u", metadata={"x": 1})
    assert n.session.state == "ended" and n.session.version == 3


def test_update_by_a_stranger_is_forbidden_and_by_admin_allowed() -> None:
    s = make().session
    with pytest.raises(Forbidden):
        engine.update(GENERIC, s, actor=BOB, now=T0, event_id="u", metadata={})
    assert (
        engine.update(GENERIC, s, actor=ROOT, now=T0, event_id="u", metadata={}).session.version
        == 2
    )


def test_update_metadata_limit_applies_to_the_merged_result() -> None:
    half = "x" * (MAX_METADATA_BYTES // 2 + 10)
    s = make(metadata={"a": half}).session
    with pytest.raises(InvalidInput, match="metadata"):
        engine.update(
            GENERIC, s, actor=ALICE, now=T0, event_id="u", metadata={"b": half}, merge_metadata=True
        )


def test_update_with_non_object_metadata_or_attributes_is_invalid() -> None:
    s = make().session
    with pytest.raises(InvalidInput):
        engine.update(GENERIC, s, actor=ALICE, now=T0, event_id="u", metadata="x")  # type: ignore[arg-type]
    with pytest.raises(InvalidInput):
        engine.update(GENERIC, s, actor=ALICE, now=T0, event_id="u", attributes=[1])  # type: ignore[arg-type]


def test_inputs_are_not_aliased_into_the_session() -> None:
    meta: dict[str, Any] = {"a": 1}
    s = make(metadata=meta).session
    meta["a"] = 2
    assert s.metadata == {"a": 1}
