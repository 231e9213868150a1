"""Background tasks: a periodic job that outlives its failures, and an orderly stop.

Every long-lived piece of a node (the outbox's marks, the realtime tick, the relays'
flushes) runs a loop of the same shape; here it is once, so each logs a failure the same
way and keeps going, and each stops the same way: cancelled, then awaited, so that nothing
runs on after ``close()`` returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

log = logging.getLogger("sessionhub")


async def every(seconds: float, job: Callable[[], Awaitable[Any]], what: str) -> None:
    """Run ``job`` every ``seconds`` (after a first wait) until cancelled; a failure is
    logged as "``what`` failed; will retry" and the next round runs as usual."""
    while True:
        await asyncio.sleep(seconds)
        try:
            await job()
        except Exception:
            log.exception("%s failed; will retry", what)


async def stop(tasks: Iterable[asyncio.Task[Any] | None]) -> None:
    """Cancel ``tasks`` and wait until each has ended (whatever it raised)."""
    running = [t for t in tasks if t is not None]
    for task in running:
        task.cancel()
    for task in running:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
