"""How each server of the fan-out bench is started (pinned, its output in a log file), known
to be listening (asked of the kernel, before any connection, for the base RSS), measured
(CPU time, RSS) and stopped; and the admin token sessionhub's publisher connects with."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from fanout_parts import machine
from fanout_parts.peers import NODE_SERVER, UWS_SERVER
from fanout_parts.workload import BENCH, CHANNEL, ROOT, SECRET

#: The entry point: ``fanout.py _serve NAME PORT`` runs a Python peer.
ENTRY = BENCH / "fanout.py"

# -- starting and watching a server ----------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Server:
    name: str
    proc: subprocess.Popen[bytes]
    port: int
    sub_path: str
    pub_path: str
    proto: str
    tmp: str
    base_rss: int = 0

    @property
    def log(self) -> Path:
        return Path(self.tmp) / "server.log"

    def log_tail(self, limit: int = 600) -> str:
        try:
            text = self.log.read_text(errors="replace").strip()
        except OSError:
            return ""
        return text[-limit:]

    @property
    def ps(self) -> psutil.Process:
        return psutil.Process(self.proc.pid)

    def cpu(self) -> float:
        t = self.ps.cpu_times()
        return float(t.user + t.system)

    def rss(self) -> int:
        return int(self.ps.memory_info().rss)

    def stop(self) -> str:
        """Stops the server; what it printed (its log)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                # A pinned process on a starved CPU can take a while even to die.
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.proc.wait(60)
        out = self.log_tail(1 << 20)
        shutil.rmtree(self.tmp, ignore_errors=True)
        return out


def listening(pid: int, port: int) -> bool:
    """Whether ``pid`` listens on ``port``, asked of the kernel (not by connecting: the base
    RSS is measured before any connection)."""
    with contextlib.suppress(psutil.Error):
        for c in psutil.Process(pid).net_connections(kind="tcp"):
            if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port:
                return True
    return False


def sessionhub_command() -> list[str]:
    exe = Path(sys.executable).parent / "sessionhub"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "sessionhub.cli"]


def start_server(name: str, loadgen: Path | None = None, extra: list[str] | None = None) -> Server:
    """Starts one server pinned to CPU 0 and waits until it listens. Raises ``Unavailable``
    (with the reason) when it cannot run here."""
    port = free_port()
    env = {**os.environ, "NODE_PATH": str(ROOT / "node_modules")}
    sub, pub, proto = "/sub", "/pub", "plain"
    if name in ("node", "uws"):
        node = shutil.which("node")
        pkg = "ws" if name == "node" else "@trufflesuite/uws-js-unofficial"
        if node is None:
            raise Unavailable("node is not installed")
        if not (ROOT / "node_modules" / pkg).exists():
            raise Unavailable(f"node_modules/{pkg} is missing (run npm install)")
    tmp = tempfile.mkdtemp(prefix=f"bench-{name}-")
    if name == "sessionhub":
        cmd = [*sessionhub_command(), "serve", "--host", "127.0.0.1", "--port", str(port)]
        cmd += ["--data-dir", str(Path(tmp) / "data"), "--log-level", "warning"]
        env.update(
            SESSIONHUB_JWT_SECRET=SECRET,
            SESSIONHUB_REALTIME_PUBLISH_TOPICS=CHANNEL,
            # The burst offers more than a reader may keep up with; like the peers (which
            # never cut anyone off) let queues grow instead of dropping slow readers (3008).
            SESSIONHUB_REALTIME_QUEUE_BYTES=str(1 << 30),
        )
        sub = pub = "/connection/websocket"
        proto = "centrifugo"
    elif name == "websockets":
        cmd = [sys.executable, str(ENTRY), "_serve", "websockets", str(port)]
    elif name == "picows":
        cmd = [sys.executable, str(ENTRY), "_serve", "picows", str(port)]
    elif name == "cserver":
        assert loadgen is not None
        cmd = [str(loadgen), "serve", "--port", str(port), *(extra or [])]
    elif name in ("node", "uws"):
        script = Path(tmp) / "server.js"
        script.write_text(NODE_SERVER if name == "node" else UWS_SERVER)
        cmd = [str(shutil.which("node")), str(script), str(port)]
        # Node ws as it was measured before (the optional native helpers now sit in
        # node_modules as dependencies of the uWebSockets package).
        env.update(WS_NO_BUFFER_UTIL="1", WS_NO_UTF_8_VALIDATE="1")
    else:
        shutil.rmtree(tmp, ignore_errors=True)
        raise Unavailable(f"unknown server {name!r}")
    # Output to a file, never a pipe nobody reads (a full pipe would stall the server).
    with (Path(tmp) / "server.log").open("wb") as log:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=ROOT,
            preexec_fn=machine.child_setup(machine.SERVER_CPUS),
        )
    server = Server(name, proc, port, sub, pub, proto, tmp)
    try:
        end = time.monotonic() + 60
        while not listening(proc.pid, port):
            if proc.poll() is not None or time.monotonic() > end:
                proc.poll()
                why = server.log_tail() or f"exit code {proc.returncode}"
                raise Unavailable(f"did not start: {why}")
            time.sleep(0.05)
        time.sleep(1.0)  # settle before the base RSS
        server.base_rss = server.rss()
    except BaseException:
        server.stop()
        raise
    return server


class Unavailable(Exception):
    """A server that cannot run on this machine (the reason is the message)."""


def admin_token() -> str:
    from datetime import timedelta

    from sessionhub.auth import Authenticator

    return Authenticator(secret=SECRET).issue("bench", ["admin"], ttl=timedelta(hours=24))
