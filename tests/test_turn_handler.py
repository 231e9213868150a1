"""``observe.TurnHandler``: the request log's lines of one event-loop turn leave in one
write, in order, and nothing logged is held back past the turn, a thread or an exit."""

from __future__ import annotations

import asyncio
import io
import logging
import threading
from collections.abc import Iterator

import orjson
import pytest

from sessionhub.server.observe import JsonFormatter, TurnHandler


class Counting(io.StringIO):
    """A stream that counts its writes."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, s: str) -> int:
        self.writes += 1
        return super().write(s)


@pytest.fixture
def logged() -> Iterator[tuple[logging.Logger, TurnHandler, Counting]]:
    stream = Counting()
    handler = TurnHandler(stream)
    handler.setFormatter(logging.Formatter("%(message)s"))
    log = logging.getLogger("sessionhub.test.turns")
    log.propagate = False
    log.setLevel(logging.INFO)
    log.addHandler(handler)
    try:
        yield log, handler, stream
    finally:
        log.removeHandler(handler)
        log.propagate = True


def lines(stream: io.StringIO) -> list[str]:
    return stream.getvalue().splitlines()


async def test_one_turn_is_one_write_in_order(
    logged: tuple[logging.Logger, TurnHandler, Counting],
) -> None:
    log, _, stream = logged
    for n in range(5):
        log.info("line %d", n)
    assert lines(stream) == []  # not yet: the turn has not ended
    await asyncio.sleep(0)
    assert lines(stream) == [f"line {n}" for n in range(5)]
    assert stream.writes == 1
    log.info("next turn")
    await asyncio.sleep(0)
    assert lines(stream)[-1] == "next turn" and stream.writes == 2


async def test_a_thread_without_a_loop_writes_at_once_after_what_waits(
    logged: tuple[logging.Logger, TurnHandler, Counting],
) -> None:
    log, _, stream = logged
    log.info("from the loop")
    thread = threading.Thread(target=log.info, args=("from a thread",))
    thread.start()
    thread.join()
    assert lines(stream) == ["from the loop", "from a thread"]


async def test_many_lines_do_not_wait_for_the_turn(
    logged: tuple[logging.Logger, TurnHandler, Counting],
) -> None:
    log, handler, stream = logged
    for n in range(handler.max_lines):
        log.info("%d", n)
    assert len(lines(stream)) == handler.max_lines and stream.writes == 1


def test_no_loop_means_at_once(logged: tuple[logging.Logger, TurnHandler, Counting]) -> None:
    log, _, stream = logged
    log.info("no loop here")
    assert lines(stream) == ["no loop here"]


async def test_flush_writes_what_waits_once(
    logged: tuple[logging.Logger, TurnHandler, Counting],
) -> None:
    log, handler, stream = logged
    log.info("logged in the last turn")
    handler.flush()  # what logging.shutdown() does at exit
    assert lines(stream) == ["logged in the last turn"]
    await asyncio.sleep(0)  # the turn's own write finds nothing left
    assert lines(stream) == ["logged in the last turn"]


async def test_the_server_formatter_on_it_writes_json_lines(
    logged: tuple[logging.Logger, TurnHandler, Counting],
) -> None:
    log, handler, stream = logged
    handler.setFormatter(JsonFormatter())
    log.info("request", extra={"fields": {"status": 200}})
    log.info("request", extra={"fields": {"status": 404}})
    await asyncio.sleep(0)
    assert [orjson.loads(line)["status"] for line in lines(stream)] == [200, 404]
