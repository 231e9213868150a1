"""The lifecycle machine: forward-only construction checks and action resolution."""

from __future__ import annotations

import pytest

from sessionhub.core.errors import Forbidden, IllegalTransition, NotFound
from sessionhub.core.lifecycle import Lifecycle, transition
from sessionhub.kinds.generic import Generic

from .kinds import Approval

ADMIN = frozenset({"admin"})
OWNER = frozenset({"owner"})
SYSTEM = frozenset({"system"})


def test_terminal_states_are_those_without_a_way_out() -> None:
    assert Approval.lifecycle.terminal == {"stopped", "denied", "dropped"}
    assert Generic.lifecycle.terminal == {"ended", "dropped"}


def test_actions_are_listed_once_in_declaration_order() -> None:
    assert Approval.lifecycle.actions == ("approve", "deny", "stop", "drop")


def test_rank_follows_declared_order() -> None:
    lc = Approval.lifecycle
    assert [lc.rank(s) for s in lc.states] == [0, 1, 2, 3, 4]


def test_resolve_returns_the_transition_for_an_allowed_role() -> None:
    t = Approval.lifecycle.resolve("pending", "approve", ADMIN)
    assert t.target == "active" and t.reason is None
    t = Approval.lifecycle.resolve("active", "stop", OWNER)
    assert t.target == "stopped" and t.reason == "stopped"


def test_resolve_unknown_action_is_not_found_and_lists_actions() -> None:
    with pytest.raises(NotFound) as err:
        Approval.lifecycle.resolve("pending", "launch", ADMIN)
    assert "approve" in err.value.detail and err.value.status == 404


def test_resolve_wrong_role_is_forbidden() -> None:
    with pytest.raises(Forbidden) as err:
        Approval.lifecycle.resolve("pending", "approve", OWNER)
    assert "admin" in err.value.detail and err.value.status == 403
    with pytest.raises(Forbidden):
        Generic.lifecycle.resolve("active", "drop", OWNER)


def test_resolve_from_wrong_state_is_illegal_and_names_allowed_sources() -> None:
    with pytest.raises(IllegalTransition) as err:
        Approval.lifecycle.resolve("active", "approve", ADMIN)
    assert "pending" in err.value.detail and err.value.status == 409


def test_resolve_from_terminal_state_says_terminal() -> None:
    for state in ("stopped", "denied", "dropped"):
        with pytest.raises(IllegalTransition, match="terminal"):
            Approval.lifecycle.resolve(state, "stop", ADMIN | OWNER | SYSTEM)


def test_a_backwards_transition_is_rejected_at_construction() -> None:
    with pytest.raises(ValueError, match="backwards"):
        Lifecycle(
            states=("a", "b"),
            initial=frozenset({"a"}),
            ended=frozenset(),
            transitions=(transition("back", "b", "a"),),
        )


def test_a_self_loop_is_rejected_at_construction() -> None:
    with pytest.raises(ValueError, match="backwards"):
        Lifecycle(
            states=("a", "b"),
            initial=frozenset({"a"}),
            ended=frozenset(),
            transitions=(transition("stay", "a", "a"),),
        )


@pytest.mark.parametrize(
    ("states", "initial", "ended", "transitions", "message"),
    [
        (("a", "a"), {"a"}, set(), (), "duplicate"),
        (("a",), {"x"}, set(), (), "unknown state"),
        (("a",), {"a"}, {"z"}, (), "unknown state"),
        (("a", "b"), {"a"}, set(), (transition("go", "a", "c"),), "unknown state"),
        (("a", "b"), {"a"}, set(), (transition("go", "q", "b"),), "unknown state"),
        (("a", "b"), {"a"}, {"b"}, (transition("end", "a", "b"),), "without a reason"),
    ],
)
def test_invalid_lifecycles_are_rejected(
    states: tuple[str, ...],
    initial: set[str],
    ended: set[str],
    transitions: tuple[object, ...],
    message: str,
) -> None:
    with pytest.raises(ValueError, match=message):
        Lifecycle(
            states=states,
            initial=frozenset(initial),
            ended=frozenset(ended),
            transitions=transitions,  # type: ignore[arg-type]
        )


def test_transition_helper_accepts_one_or_many_sources_and_default_roles() -> None:
    t = transition("go", "a", "b")
    assert t.sources == {"a"} and t.roles == {"owner", "admin", "system"}
    t = transition("go", ["a", "b"], "c", roles=["admin"], reason="r")
    assert t.sources == {"a", "b"} and t.roles == {"admin"} and t.reason == "r"
