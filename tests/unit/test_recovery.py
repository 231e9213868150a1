"""One recovery decision for every transport (core/recovery.py), and SSE ids."""

from __future__ import annotations

import pytest

from sessionhub.core.recovery import (
    Malformed,
    activate,
    format_id,
    needs_history,
    parse_id,
    recover,
)
from sessionhub.core.streams import Publication, StreamPosition

P = StreamPosition
NOW = P(10, "e2")


def pub(offset: int, epoch: str = "e2", data: bytes = b"{}") -> Publication:
    return Publication("user:a", offset, epoch, data)


def test_a_fresh_start_starts_at_the_current_position() -> None:
    out = recover("user:a", None, NOW)
    assert out.recovered is None and out.start == NOW and out.publications == []


def test_a_complete_history_is_exactly_what_followed() -> None:
    since = P(7, "e2")
    assert needs_history(since) == since
    out = recover("user:a", since, NOW, ([pub(8), pub(9), pub(10)], True))
    assert out.recovered is True and out.missed == 3 and out.start == P(10, "e2")
    assert recover("user:a", P(10, "e2"), NOW, ([], True)).start == P(10, "e2")


@pytest.mark.parametrize(
    "since",
    [P(3, ""), Malformed("garbage", "not a position")],
    ids=["bare-offset", "junk"],
)
def test_what_cannot_prove_continuity_is_unrecovered_without_asking(since: object) -> None:
    assert needs_history(since) is None  # type: ignore[arg-type]
    out = recover("user:a", since, NOW)  # type: ignore[arg-type]
    assert out.recovered is False and out.start == NOW and out.reason


def test_an_incomplete_history_is_unrecovered() -> None:
    out = recover("user:a", P(1, "e1"), NOW, ([], False))
    assert out.recovered is False and "reload" in out.reason and out.start == NOW


def test_a_recovered_deletion_ends_the_topic() -> None:
    last = Publication("session:s", 4, "e", b'{"type":"session.deleted"}')
    out = recover("session:s", P(3, "e"), P(4, "e"), ([last], True))
    assert out.recovered and out.ended


def test_activation_drops_repeats_and_stops_at_a_gap_or_a_new_epoch() -> None:
    assert activate("user:a", P(5, "e2"), [pub(5), pub(6)]).deliver == [pub(6)]
    gap = activate("user:a", P(5, "e2"), [pub(6), pub(8)])
    assert gap.outcome == "gap" and gap.deliver == [pub(6)] and gap.position == P(6, "e2")
    assert activate("user:a", P(5, "e2"), [pub(1, "e3")]).outcome == "gap"
    assert activate("user:a", P(5, "e2"), []).outcome == "live"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("7:ab", P(7, "ab")),
        ("7", P(7, "")),  # a bare offset, kept as such: recover() refuses it
        ("sessions@3", P(3, "")),  # the topic@ form for one topic
    ],
)
def test_sse_ids_for_one_topic(value: str, expected: P) -> None:
    assert parse_id(value, ["sessions"] if "@" in value else ["user:a"]) in (
        {"sessions": expected},
        {"user:a": expected},
    )


@pytest.mark.parametrize("value", ["garbage", "-1:x", "7:", "7:a b", "1:" + "e" * 65, "x@1:e"])
def test_malformed_sse_ids_are_said_to_be_malformed(value: str) -> None:
    (got,) = parse_id(value, ["user:a"]).values()
    assert isinstance(got, Malformed) if value != "x@1:e" else got is None


def test_sse_ids_for_several_topics_round_trip() -> None:
    many = {"user:a@x.org": P(1, "e1"), "session:s": P(2, "e2")}
    assert parse_id(format_id(many), list(many)) == many
    assert all(isinstance(v, Malformed) for v in parse_id("7:e1", list(many)).values())
    assert parse_id("", list(many)) == {t: None for t in many}
