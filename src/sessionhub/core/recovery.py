"""Recovery of a topic's stream from a client's position: one decision for every transport.

A client that was away comes back with the position it last saw (``offset`` and ``epoch``).
The broker's history answers what followed it, or that it cannot. This module turns the
question and the answer into what the transport tells the client - exactly the missed
publications (``recovered: true``), or the plain statement that they are gone
(``recovered: false``) - and never lets a position that cannot prove continuity pass as
recovered:

* a position **without an epoch** (a bare offset) cannot tell whether the stream it counted
  in is the one that exists now (the server may have restarted and counted again from 1),
  so it is never recovered;
* a position that **cannot be read** is reported as such (``Malformed``), not treated as a
  fresh start.

It also reads and writes the positions carried in SSE ids (``Last-Event-ID``). Pure: no I/O,
no clock.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from .streams import Publication, StreamPosition
from .topics import ends_topic

#: Longest epoch accepted in a position (ours are 8 hex characters; Redis ones are longer).
MAX_EPOCH = 64


@dataclass(frozen=True, slots=True)
class Malformed:
    """A position a client sent that is not one (``text`` is what it sent, cut short)."""

    text: str
    reason: str


#: What a client asked to resume from, per topic: a position, nothing (start fresh), or junk.
Resume = StreamPosition | Malformed | None


@dataclass(frozen=True, slots=True)
class Recovery:
    """The outcome of resuming one topic.

    ``recovered`` is None for a fresh start (nothing was asked), True when ``publications``
    are exactly what followed the client's position, False when that cannot be known or is
    gone. ``start`` is the position the live stream continues from; ``ended``: the replay's
    last publication is the topic's last (a deleted session's).
    """

    start: StreamPosition
    recovered: bool | None
    publications: list[Publication] = field(default_factory=list)
    ended: bool = False
    #: Why it could not recover (for the client's ``unrecovered`` message).
    reason: str = ""

    @property
    def missed(self) -> int:
        return len(self.publications)


def needs_history(since: Resume) -> StreamPosition | None:
    """The position to ask the broker's history about, or None when no question is needed
    (a fresh start, junk, or a position without an epoch, which cannot be recovered)."""
    if isinstance(since, StreamPosition) and since.epoch:
        return since
    return None


def recover(
    topic: str,
    since: Resume,
    current: StreamPosition,
    history: tuple[Sequence[Publication], bool] | None = None,
) -> Recovery:
    """Decide how ``topic`` resumes for a client that asked for ``since``.

    ``current`` is the topic's position now; ``history`` is the broker's answer for
    :func:`needs_history`'s position (publications after it, and whether that is complete),
    or None when no question was asked.
    """
    if since is None:
        return Recovery(start=current, recovered=None)
    if isinstance(since, Malformed):
        return Recovery(start=current, recovered=False, reason=f"not a position: {since.reason}")
    if not since.epoch:
        return Recovery(
            start=current,
            recovered=False,
            reason="a position without an epoch cannot prove that nothing was missed",
        )
    if history is None:
        raise ValueError("a position with an epoch needs the history's answer")
    pubs, complete = history
    if not complete:
        return Recovery(
            start=current,
            recovered=False,
            reason="the missed publications are no longer kept: reload the snapshot",
        )
    replay = list(pubs)
    top = replay[-1].offset if replay else since.offset
    ended = bool(replay) and ends_topic(topic, replay[-1].data)
    return Recovery(
        start=StreamPosition(top, current.epoch), recovered=True, publications=replay, ended=ended
    )


@dataclass(frozen=True, slots=True)
class Activation:
    """What to do with publications that arrived while a subscription was being answered:
    ``deliver`` them (in order, repeats dropped), then go ``live`` - unless the stream moved
    under the client (``gap``: a new epoch or a hole; it must resubscribe and recover) or the
    topic ended (``ended``)."""

    deliver: list[Publication]
    position: StreamPosition
    outcome: str  # "live" | "gap" | "ended"


def activate(
    topic: str, position: StreamPosition, backlog: Sequence[Publication], *, ended: bool = False
) -> Activation:
    """Join the live stream at ``position`` given the ``backlog`` that arrived meanwhile."""
    deliver: list[Publication] = []
    offset = position.offset
    for pub in backlog:
        if pub.epoch == position.epoch and pub.offset <= offset:
            continue  # already in the reply (recovered) or before the client's position
        if pub.epoch != position.epoch or pub.offset != offset + 1:
            return Activation(deliver, StreamPosition(offset, position.epoch), "gap")
        offset = pub.offset
        deliver.append(pub)
        ended = ended or ends_topic(topic, pub.data)
    return Activation(deliver, StreamPosition(offset, position.epoch), "ended" if ended else "live")


# -- positions in SSE ids ----------------------------------------------------------------------


def format_id(positions: dict[str, StreamPosition]) -> str:
    """The SSE ``id`` for the positions of a stream's topics: ``<offset>:<epoch>`` for one
    topic, ``<topic>@<offset>:<epoch>`` for each topic, space-separated, for several."""
    if len(positions) == 1:
        (pos,) = positions.values()
        return f"{pos.offset}:{pos.epoch}"
    return " ".join(f"{t}@{p.offset}:{p.epoch}" for t, p in positions.items())


def _position(text: str) -> StreamPosition | Malformed:
    offset, sep, epoch = text.partition(":")
    if not offset.isdigit() or len(offset) > 19:
        return Malformed(text[:80], "the offset must be a non-negative integer")
    if sep and (not epoch or len(epoch) > MAX_EPOCH or not epoch.isalnum()):
        return Malformed(text[:80], "the epoch must be 1 to 64 letters or digits")
    return StreamPosition(int(offset), epoch)


def parse_id(value: str, topics: Sequence[str]) -> dict[str, Resume]:
    """Positions to resume from, per topic, from an SSE ``Last-Event-ID``.

    A bare offset (``7``) names no epoch; it is kept as such (epoch ``""``) so that
    :func:`recover` answers it honestly. Anything that is not a position is ``Malformed``.
    """
    out: dict[str, Resume] = dict.fromkeys(topics)
    value = value.strip()
    if not value:
        return out
    if "@" not in value:
        if len(topics) != 1:
            junk = Malformed(value[:80], "a stream of several topics needs topic@offset:epoch")
            return dict.fromkeys(topics, junk)
        out[topics[0]] = _position(value)
        return out
    for part in value.split():
        topic, sep, pos = part.rpartition("@")
        if not sep or not topic:
            return dict.fromkeys(topics, Malformed(part[:80], "want topic@offset:epoch"))
        if topic in out:
            out[topic] = _position(pos)
    return out
