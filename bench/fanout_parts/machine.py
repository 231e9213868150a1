"""The machine under the bench: CPU pinning (servers on one CPU, the load generator on the
others) and what else ran during a phase, so that a busy machine is flagged, not quoted.

``SERVER_CPUS`` and ``LOADGEN_CPUS`` are set once by ``fanout.main`` (or ``bench/cluster.py``)
and read where a child is started: refer to them as ``machine.SERVER_CPUS``, never import
the names (an imported copy would not see the assignment).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
from collections.abc import Callable
from pathlib import Path

import psutil

#: With --pin, every server runs on CPU 0 and the load generator on the other CPUs.
SERVER_CPUS: set[int] | None = None
LOADGEN_CPUS: set[int] | None = None


def child_setup(cpus: set[int] | None) -> Callable[[], None]:
    """A preexec_fn: pin the child (and so every thread it starts) and make it die with us."""

    def setup() -> None:
        if cpus:
            os.sched_setaffinity(0, cpus)
        with contextlib.suppress(Exception):
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG

    return setup


#: Above this (cores used by others, or share of a phase spent waiting for a CPU) a phase
#: is flagged: the machine was not quiet.
BUSY = 0.05


def sched_wait(pid: int) -> float:
    """Seconds the threads of ``pid`` have spent runnable but waiting for a CPU."""
    total = 0
    with contextlib.suppress(OSError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError, IndexError, ValueError):
                total += int(Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()[1])
    return total / 1e9


def busy_cpu() -> float:
    """CPU seconds the whole machine has been busy (steal included: a neighbour's work)."""
    t = psutil.cpu_times()
    return float(
        t.user
        + t.nice
        + t.system
        + getattr(t, "irq", 0)
        + getattr(t, "softirq", 0)
        + getattr(t, "steal", 0)
    )
