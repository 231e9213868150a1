"""Topics of an event and who may subscribe to them."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from sessionhub.core.model import Event
from sessionhub.core.principal import SYSTEM_PRINCIPAL, Principal
from sessionhub.core.topics import event_topics, parse, session_topics, static_permission

ALICE = Principal("alice")
ROOT = Principal("root", frozenset({"admin"}))


def test_an_event_goes_to_all_kind_session_and_owner_topics() -> None:
    e = Event(
        id="e",
        type="session.created",
        session_id="ses_1",
        kind="generic",
        owner="alice",
        actor="alice",
        at=datetime(2026, 1, 1, tzinfo=UTC),
        version=1,
        data={},
    )
    assert event_topics(e) == ("sessions", "sessions:generic", "session:ses_1", "user:alice")
    assert session_topics("x", "k", "o") == ("sessions", "sessions:k", "session:x", "user:o")


def test_parse_splits_prefix_and_rest() -> None:
    assert parse("session:abc") == ("session", "abc")
    assert parse("sessions") == ("sessions", None)
    assert parse("room:a:b") == ("room", "a:b")
    assert parse("user:") == ("user", "")


@pytest.mark.parametrize(
    ("principal", "topic", "expected"),
    [
        (ROOT, "sessions", True),
        (ROOT, "user:bob", True),
        (SYSTEM_PRINCIPAL, "sessions:generic", True),
        (ALICE, "sessions", False),
        (ALICE, "sessions:generic", False),
        (ALICE, "user:alice", True),
        (ALICE, "user:bob", False),
        (ALICE, "session:ses_1", None),
        (ALICE, "session:", False),
        (ALICE, "notifications", True),
        (ALICE, "notifications:alice", True),
        (ALICE, "notifications:bob", False),
        (ALICE, "whatever", False),
    ],
)
def test_static_permission(principal: Principal, topic: str, expected: bool | None) -> None:
    assert static_permission(principal, topic) is expected


def test_principal_roles_on_a_session() -> None:
    assert ALICE.roles_on("alice") == {"owner"}
    assert ALICE.roles_on("bob") == frozenset()
    assert ROOT.roles_on("alice") == {"admin"}
    assert ALICE.may_read("alice") and not ALICE.may_read("bob") and ROOT.may_read("bob")
    assert SYSTEM_PRINCIPAL.is_admin and SYSTEM_PRINCIPAL.is_system and not ROOT.is_system


def test_a_room_topic_is_open_to_anyone_signed_in() -> None:
    """Rooms are open spaces (as upstream): who plays in one is no secret to a signed-in user."""
    from sessionhub.core.principal import Principal
    from sessionhub.core.topics import static_permission

    assert static_permission(Principal("alice"), "room:lobby") is True
    assert static_permission(Principal("alice"), "room") is False  # no slug: not a room topic
