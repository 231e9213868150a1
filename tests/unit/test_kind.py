"""Kind attribute validation: types, choices, lengths, required, immutable, unknown names."""

from __future__ import annotations

from typing import Any

import pytest

from sessionhub.core.errors import InvalidInput
from sessionhub.core.kind import Attr, Kind
from sessionhub.core.lifecycle import Lifecycle
from sessionhub.kinds.generic import Generic
from sessionhub.kinds.registry import BUILTIN, Registry, default_registry

from .kinds import Approval, Swept

KIND = Approval()


def test_defaults_fill_missing_attributes() -> None:
    assert KIND.validate_attributes({"target": "a"}) == {
        "target": "a",
        "mode": "view",
        "priority": 0,
        "note": None,
    }


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({}, "'target' is required"),
        ({"target": None}, "'target' must be a string"),
        ({"target": 5}, "'target' must be a string"),
        ({"target": "a", "mode": "edit"}, "must be one of"),
        ({"target": "a", "priority": "1"}, "'priority' must be an integer"),
        ({"target": "a", "priority": True}, "'priority' must be an integer"),
        ({"target": "a", "priority": 1.5}, "'priority' must be an integer"),
        ({"target": "x" * 51}, "longer than 50"),
        ({"target": "a", "colour": "red"}, r"unknown attribute\(s\) \['colour'\]"),
    ],
)
def test_bad_attributes_are_rejected_with_a_clear_message(
    given: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidInput, match=message):
        KIND.validate_attributes(given)


def test_attributes_must_be_a_mapping() -> None:
    with pytest.raises(InvalidInput, match="must be an object"):
        KIND.validate_attributes(["target"])  # type: ignore[arg-type]


def test_optional_attributes_accept_null() -> None:
    assert KIND.validate_attributes({"target": "a", "note": None})["note"] is None


def test_update_keeps_missing_values_and_guards_immutables() -> None:
    base = KIND.validate_attributes({"target": "a", "priority": 3})
    assert KIND.validate_attributes({"mode": "control"}, base=base) == {**base, "mode": "control"}
    with pytest.raises(InvalidInput, match="cannot be changed"):
        KIND.validate_attributes({"target": "b"}, base=base)
    # Required attributes are not demanded again on update.
    assert KIND.validate_attributes({}, base=base) == base


def test_number_attributes_take_ints_and_floats_but_not_bools() -> None:
    class Num(Kind):
        name = "num"
        id_prefix = "num"
        lifecycle = Generic.lifecycle
        attributes = {"ratio": Attr((int, float))}  # noqa: RUF012

    k = Num()
    assert k.validate_attributes({"ratio": 1})["ratio"] == 1
    assert k.validate_attributes({"ratio": 0.5})["ratio"] == 0.5
    with pytest.raises(InvalidInput, match="integer or number"):
        k.validate_attributes({"ratio": False})


def test_a_kind_without_attributes_names_none_known() -> None:
    class Bare(Kind):
        name = "bare"
        id_prefix = "b"
        lifecycle = Lifecycle(("a",), frozenset({"a"}), frozenset(), ())

    with pytest.raises(InvalidInput, match="known: none"):
        Bare().validate_attributes({"x": 1})
    assert Bare().initial_state({}) == "a"


def test_view_and_notifications_default_to_nothing() -> None:
    from datetime import UTC, datetime

    from sessionhub.core import engine
    from sessionhub.core.principal import Principal

    g = Generic()
    c = engine.create(
        g,
        session_id="s",
        owner="a",
        attributes={},
        metadata={},
        actor=Principal("a"),
        now=datetime(2026, 1, 1, tzinfo=UTC),
        event_id="e",
    )
    assert g.view(c.session) == {} and g.notifications(c.event, None) == []


def test_registry_lookup_and_shortest_timeout() -> None:
    reg = Registry([Generic(), Approval(), Swept()])
    assert sorted(reg) == ["approval", "generic", "swept"] and len(reg) == 3
    assert reg.get_kind("approval").name == "approval"
    with pytest.raises(
        InvalidInput, match=r"unknown kind 'nope' \(known: approval, generic, swept\)"
    ):
        reg.get_kind("nope")
    assert reg.shortest_timeout() is not None
    assert reg.shortest_timeout().total_seconds() == 30  # type: ignore[union-attr]


def test_default_registry_applies_timeout_overrides_per_instance() -> None:
    reg = default_registry({"generic": {"heartbeat_timeout": 7}})
    assert reg["generic"].heartbeat_timeout is not None
    assert reg["generic"].heartbeat_timeout.total_seconds() == 7
    # The class default is untouched (overrides are per server, not global).
    assert (
        Generic.heartbeat_timeout is not None and Generic.heartbeat_timeout.total_seconds() == 300
    )
    with pytest.raises(ValueError, match="unknown timeout"):
        default_registry({"generic": {"lifetime": 1}})


@pytest.mark.parametrize("cls", BUILTIN, ids=lambda c: c.name)
def test_no_builtin_state_is_a_dead_end(cls: type[Kind]) -> None:
    """Every state a session can rest in is left by the scheduler in time, or is ended."""
    kind = cls()
    lc = kind.lifecycle
    alive = kind.alive_states()
    for state in frozenset(lc.states) - lc.ended:
        ways_out = [
            kind.heartbeat_timeout is not None and state in alive,
            kind.idle_timeout is not None,
            kind.wait_timeout is not None and state in kind.wait_states,
        ]
        assert any(ways_out), f"{kind.name}: nothing moves a session out of {state!r}"
    # Each timeout's action is a transition the scheduler (role system) may take out of
    # every state it sweeps (resolve raises otherwise).
    open_states = frozenset(lc.states) - lc.ended
    for states, action in (
        (alive if kind.heartbeat_timeout else frozenset(), kind.heartbeat_action),
        (open_states if kind.idle_timeout else frozenset(), kind.idle_action),
        (kind.wait_states if kind.wait_timeout else frozenset(), kind.wait_action),
    ):
        for state in states:
            assert lc.resolve(state, action, frozenset({"system"})).target != state
