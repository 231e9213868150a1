"""The load generator: ``bench/loadgen.c`` compiled at run time, and ``Fleet``, one of its
processes (N subscribers and the publisher on one server) driven a command a line, each
phase's result completed with the server's CPU time and what else ran on the machine."""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import orjson
import psutil

from fanout_parts import machine
from fanout_parts.machine import busy_cpu, sched_wait
from fanout_parts.servers import Server
from fanout_parts.workload import BENCH, CHANNEL, PAD


def compile_loadgen(tmp: Path) -> Path:
    """``bench/loadgen.c`` and its parts (``bench/loadgen_parts/*.c``), one program."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise SystemExit("cc not found: the load generator is a C program (apt-get install gcc)")
    exe = tmp / "loadgen"
    sources = [BENCH / "loadgen.c", *sorted((BENCH / "loadgen_parts").glob("*.c"))]
    subprocess.run(
        [cc, "-O2", "-Wall", "-Wextra", "-o", str(exe), *(str(s) for s in sources)], check=True
    )
    return exe


class Fleet:
    """One load-generator process: N subscribers and the publisher on one server."""

    def __init__(self, exe: Path, server: Server, n: int, token: str) -> None:
        self.server, self.n = server, n
        cmd = [str(exe), "client", "--port", str(server.port), "--n", str(n)]
        cmd += ["--proto", server.proto, "--sub-path", server.sub_path]
        cmd += ["--pub-path", server.pub_path, "--channel", CHANNEL, "--pad", str(PAD)]
        if server.proto == "centrifugo":
            cmd += ["--token", token]
        self.proc = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            preexec_fn=machine.child_setup(machine.LOADGEN_CPUS),
        )
        self._buf = b""
        ready = self.read(180)
        if ready.get("event") != "ready":
            self.close()
            raise RuntimeError(f"{server.name} N={n}: load generator not ready: {ready}")

    def read(self, timeout: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{self.server.name}: no answer from the load generator")
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    raise RuntimeError(f"{self.server.name}: the load generator exited")
                self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        result: dict[str, Any] = orjson.loads(line)
        return result

    def run(self, command: str, timeout: float) -> dict[str, Any]:
        """One phase; its result with the server's CPU time over it."""
        assert self.proc.stdin is not None
        me = psutil.Process()
        pids = (self.server.proc.pid, self.proc.pid)
        cpu0, busy0, own0 = self.server.cpu(), busy_cpu(), sum(me.cpu_times()[:2])
        waits0 = [sched_wait(p) for p in pids]
        self.proc.stdin.write(command.encode() + b"\n")
        self.proc.stdin.flush()
        result = self.read(timeout)
        if result.get("event") != "result":
            raise RuntimeError(f"{self.server.name}: {command!r} failed: {result}")
        wall = max(float(result["wall_s"]), 1e-9)
        result["server_cpu_s"] = self.server.cpu() - cpu0
        # What else ran on the machine meanwhile (other people's work on a shared box):
        # busy CPU time beyond the server's, the generator's and this script's, in cores;
        # and how long the server and the generator waited on a run queue for a CPU.
        other = busy_cpu() - busy0 - result["server_cpu_s"] - result["lg_cpu_s"]
        other -= sum(me.cpu_times()[:2]) - own0
        result["other_cores"] = max(0.0, other) / wall
        result["waits"] = [(sched_wait(p) - w0) / wall for p, w0 in zip(pids, waits0, strict=True)]
        return result

    def close(self) -> None:
        if self.proc.poll() is None and self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.write(b"quit\n")
                self.proc.stdin.close()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.proc.wait(60)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
