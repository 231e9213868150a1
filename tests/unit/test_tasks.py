"""The shared background-task helpers: a periodic job survives its failures (logged), and
``stop`` leaves no task running, whatever the tasks raise."""

from __future__ import annotations

import asyncio
import logging

import pytest

from sessionhub.tasks import every, stop


async def test_a_periodic_job_keeps_running_after_it_fails(
    caplog: pytest.LogCaptureFixture,
) -> None:
    runs: list[int] = []
    fourth = asyncio.Event()

    async def job() -> None:
        runs.append(len(runs))
        if len(runs) == 2:
            raise RuntimeError("boom")
        if len(runs) == 4:
            fourth.set()

    task = asyncio.create_task(every(0.001, job, "the test job"))
    with caplog.at_level(logging.ERROR, logger="sessionhub"):
        async with asyncio.timeout(5):
            await fourth.wait()
        await stop([task])
    assert task.done() and task.cancelled()
    assert [r.getMessage() for r in caplog.records] == ["the test job failed; will retry"]


async def test_stop_ends_every_task_even_one_that_raises_on_cancel() -> None:
    async def stubborn() -> None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            raise ValueError("raised while cancelled") from None

    tasks = [asyncio.create_task(asyncio.sleep(60)), asyncio.create_task(stubborn())]
    await asyncio.sleep(0)
    await stop([*tasks, None])
    assert all(t.done() for t in tasks)
