"""``observe.TurnHandler``: the request log's lines of one event-loop turn leave in one
write, in order, and nothing logged is held back past the turn, a thread or an exit."""

from __future__ import annotations

import asyncio
import io
import logging
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest
from tests.processes import Server

from sessionhub.server.observe import JsonFormatter, TurnHandler, flushing_signals


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


@pytest.mark.slow
async def test_a_server_stopped_by_sigterm_writes_its_last_lines(tmp_path: Path) -> None:
    """uvicorn re-raises SIGTERM once it has shut down, which skips ``atexit``: the lines
    the handler still held (the shutdown's own) must be written before the process ends."""
    server = Server(tmp_path / "data", None, tmp_path / "server.log")
    try:
        await server.wait_ready()
        async with httpx.AsyncClient(base_url=server.url) as http:
            assert (await http.get("/api/health")).status_code == 200
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(timeout=20) == -signal.SIGTERM  # still ended by the signal
        records = [orjson.loads(line) for line in server.log().splitlines() if line[:1] == "{"]
        assert records[-1]["msg"].startswith("Finished server process"), records[-3:]
        assert any(r["msg"] == "Application shutdown complete." for r in records)
    finally:
        server.stop()


def test_flushing_signals_flush_then_do_what_the_signal_did_before(
    logged: tuple[logging.Logger, TurnHandler, Counting],
) -> None:
    _, handler, stream = logged
    seen: list[int] = []

    def record(signum: int, _frame: object) -> None:
        seen.append(signum)

    original = signal.signal(signal.SIGUSR1, record)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        with flushing_signals((signal.SIGUSR1,)):
            handler._lines.append("held")  # as if logged in a turn that never ended
            signal.raise_signal(signal.SIGUSR1)
            assert lines(stream) == ["held"]  # written first,
            assert seen == [signal.SIGUSR1]  # then the handler from before ran
        assert signal.getsignal(signal.SIGUSR1) is record  # put back as it was
    finally:
        root.removeHandler(handler)
        signal.signal(signal.SIGUSR1, original)
