"""The servers of the REST bench as subprocesses (a real ``sessionhub serve``, the peer and
the ceiling), each waited for until it answers, optionally pinned, its output in a log
file; and the PostgreSQL database they run on, created if needed and emptied."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx

SECRET = "bench-secret-0123456789abcdef0123456789"
#: The entry point: ``rest.py --serve-peer URL`` and ``--serve-ceiling`` run the peers.
ENTRY = Path(__file__).resolve().parents[1] / "rest.py"

# -- servers as subprocesses -----------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def pinned(cpus: set[int] | None) -> Callable[[], None] | None:
    """A preexec_fn pinning the child (and every thread it starts) to ``cpus``."""
    if not cpus:
        return None

    def setup() -> None:
        os.sched_setaffinity(0, cpus)

    return setup


class Proc:
    def __init__(
        self,
        argv: list[str],
        env: dict[str, str],
        ready_path: str,
        log: Path,
        cpus: set[int] | None = None,
    ) -> None:
        self.port = int(argv[argv.index("--port") + 1])
        self.url = f"http://127.0.0.1:{self.port}"
        self._log = log.open("wb")
        self.log_path = log
        self.proc = subprocess.Popen(
            argv, env=env, stdout=self._log, stderr=subprocess.STDOUT, preexec_fn=pinned(cpus)
        )
        end = time.monotonic() + 30
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise SystemExit(f"server exited:\n{log.read_text(errors='replace')[-3000:]}")
            try:
                if httpx.get(self.url + ready_path, timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        self.stop()
        raise SystemExit(f"server not ready:\n{log.read_text(errors='replace')[-3000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


def start_sessionhub(
    data_dir: Path, database_url: str | None, log_level: str, cpus: set[int] | None = None
) -> Proc:
    env = {
        **os.environ,
        "SESSIONHUB_JWT_SECRET": SECRET,
        "SESSIONHUB_LOG_LEVEL": log_level,
        "SESSIONHUB_DATA_DIR": str(data_dir),
    }
    if database_url:
        env["SESSIONHUB_DATABASE_URL"] = database_url
    argv = [sys.executable, "-m", "sessionhub.cli", "serve", "--port", str(free_port())]
    return Proc(argv, env, "/api/ready", data_dir / "server.log", cpus)


def start_peer(data_dir: Path, database_url: str, cpus: set[int] | None = None) -> Proc:
    argv = [sys.executable, str(ENTRY), "--serve-peer", database_url, "--port", str(free_port())]
    return Proc(argv, dict(os.environ), "/ready", data_dir / "peer.log", cpus)


def start_ceiling(data_dir: Path, cpus: set[int] | None = None) -> Proc:
    argv = [sys.executable, str(ENTRY), "--serve-ceiling", "--port", str(free_port())]
    return Proc(argv, dict(os.environ), "/api/ready", data_dir / "ceiling.log", cpus)


def start_floor(data_dir: Path, cpus: set[int] | None = None) -> Proc:
    argv = [sys.executable, str(ENTRY), "--serve-floor", "--port", str(free_port())]
    return Proc(argv, dict(os.environ), "/api/ready", data_dir / "floor.log", cpus)


async def reset_postgres(url: str) -> None:
    """Create the bench database if needed and empty it (never the test database)."""
    import asyncpg

    dsn = url.replace("postgresql+asyncpg://", "postgresql://")
    base, _, dbname = dsn.rpartition("/")
    try:
        conn = await asyncpg.connect(dsn, timeout=5)
    except asyncpg.InvalidCatalogNameError:
        admin = await asyncpg.connect(base + "/postgres", timeout=5)
        try:
            await admin.execute(f'CREATE DATABASE "{dbname}"')
        finally:
            await admin.close()
        conn = await asyncpg.connect(dsn, timeout=5)
    try:
        await conn.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
    finally:
        await conn.close()
