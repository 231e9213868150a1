"""Real ``sessionhub serve`` processes for tests that kill and restart them."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

SECRET = "crash-test-secret-0123456789abcdef0123"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Server:
    """One ``sessionhub serve`` subprocess with its log in a file."""

    def __init__(
        self,
        data_dir: Path,
        database_url: str | None,
        log: Path,
        *,
        secret: str = SECRET,
        env: dict[str, str] | None = None,
        port: int | None = None,
    ) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {
            **os.environ,
            "SESSIONHUB_JWT_SECRET": secret,
            "SESSIONHUB_LOG_LEVEL": "info",
            **(env or {}),
        }
        if database_url:
            env["SESSIONHUB_DATABASE_URL"] = database_url
        self.log_path = log
        self._log = log.open("wb")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "sessionhub.cli",
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--data-dir",
                str(data_dir),
            ],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    async def wait_ready(self, within: float = 15.0) -> None:
        end = time.monotonic() + within
        async with httpx.AsyncClient(base_url=self.url) as c:
            while time.monotonic() < end:
                if self.proc.poll() is not None:
                    raise AssertionError(f"server exited early:\n{self.log()}")
                with contextlib.suppress(httpx.TransportError):
                    if (await c.get("/api/ready", timeout=1)).status_code == 200:
                        return
                await asyncio.sleep(0.05)
        raise AssertionError(f"server not ready in {within} s:\n{self.log()}")

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self._log.close()

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")
