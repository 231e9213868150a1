"""``Subscriptions`` behaves as the dict it replaces, operation by operation, and is smaller."""

from __future__ import annotations

import random
import sys
from typing import Any

import pytest

from sessionhub.core.connection import ClientState, Limits, Subscription
from sessionhub.core.subscriptions import Subscriptions

TOPICS = ["user:alice", "session:1", "session:2", "kato:session_events"]


def _apply(target: Any, op: str, topic: str, sub: Subscription) -> object:
    """One operation on a dict or a Subscriptions; what it returned or raised."""
    try:
        if op == "set":
            target[topic] = sub
            return None
        if op == "del":
            del target[topic]
            return None
        if op == "pop":
            return target.pop(topic)
        if op == "pop_default":
            return target.pop(topic, None)
        if op == "get":
            return target.get(topic)
        if op == "getitem":
            return target[topic]
        if op == "clear":
            target.clear()
            return None
        raise AssertionError(op)
    except KeyError as exc:
        return ("KeyError", exc.args)


def _view(target: Any) -> tuple[object, ...]:
    return (
        len(target),
        bool(target),
        list(target),
        list(target.items()),
        list(target.values()),
        [t in target for t in TOPICS],
    )


@pytest.mark.parametrize("seed", range(40))
def test_every_operation_matches_a_dict(seed: int) -> None:
    rnd = random.Random(seed)
    model: dict[str, Subscription] = {}
    subs = Subscriptions()
    ops = ["set", "set", "set", "del", "pop", "pop_default", "get", "getitem", "clear"]
    for _ in range(60):
        op, topic = rnd.choice(ops), rnd.choice(TOPICS)
        sub = Subscription(topic, offset=rnd.randrange(100))
        assert _apply(subs, op, topic, sub) == _apply(model, op, topic, sub), (op, topic)
        assert _view(subs) == _view(model)
    assert dict(subs) == model


def test_one_subscription_is_held_without_a_dict() -> None:
    subs = Subscriptions()
    first, second = Subscription("user:alice"), Subscription("session:1")
    subs["user:alice"] = first
    subs["user:alice"] = first  # a renewal of the same key stays inline
    # The object is all it costs: the dict it replaces is about four times its size.
    assert sys.getsizeof(subs) < sys.getsizeof({"user:alice": first}) / 2
    assert not hasattr(subs, "__dict__")
    subs["session:1"] = second
    assert list(subs.items()) == [("user:alice", first), ("session:1", second)]
    assert subs.pop("user:alice") is first and list(subs) == ["session:1"]
    assert repr(subs) == f"Subscriptions({{'session:1': {second!r}}})"


def test_a_client_state_starts_with_no_subscriptions() -> None:
    state = ClientState("c1", Limits("0.1.0", 25.0), opened_at=0.0)
    assert isinstance(state.subs, Subscriptions) and not state.subs
