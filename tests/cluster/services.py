"""Private service processes for the cluster tests: a Redis, a PostgreSQL and an nginx each
started in a temporary directory on a free port, so a test may stop, kill or restart them
without touching the machine's own services (which other test runs use).

Every wait is bounded; every process is ended by its own handle (never by name).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from tests.processes import free_port

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
PG_BIN = Path(os.environ.get("SESSIONHUB_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))


def wait_port(port: int, within: float, *, what: str, proc: subprocess.Popen[bytes]) -> None:
    """Until 127.0.0.1:``port`` accepts a connection (or ``proc`` exits: an error)."""
    end = time.monotonic() + within
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"{what} not listening on {port} after {within} s")


def _end(proc: subprocess.Popen[bytes] | None, sig: int = signal.SIGTERM) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def missing_tools(*tools: str) -> str | None:
    """Why the cluster tests cannot run here (None: they can)."""
    for tool in tools or ("redis-server", "nginx"):
        if shutil.which(tool) is None:
            hint = "apt-get install nginx" if tool == "nginx" else "apt-get install redis-server"
            return f"{tool} is not installed ({hint})"
    return None


class RedisServer:
    """``redis-server`` without persistence, as deploy/compose.yaml runs it: a restart is
    an empty Redis (every topic gets a new epoch)."""

    def __init__(self, workdir: Path) -> None:
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        self.starts += 1
        log = (self.dir / f"redis-{self.starts}.log").open("wb")
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.dir),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        wait_port(self.port, 10, what="redis-server", proc=self.proc)
        return self

    def stop(self) -> None:
        """SIGTERM: with persistence off, Redis exits and forgets everything."""
        _end(self.proc)

    def kill(self) -> None:
        _end(self.proc, signal.SIGKILL)


class PostgresServer:
    """A PostgreSQL cluster of its own (initdb in a temporary directory, trust auth, a free
    port, its socket in that directory). initdb refuses to run as root, so as root it runs as
    the ``postgres`` account, in a directory that account owns."""

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="sessionhub-cluster-pg-"))
        self.data = self.dir / "data"
        self._as: list[str] = []
        if os.geteuid() == 0:
            account = pwd.getpwnam("postgres")
            os.chown(self.dir, account.pw_uid, account.pw_gid)
            self._as = ["runuser", "-u", "postgres", "--"]
        self._run(
            [
                str(PG_BIN / "initdb"),
                "-D",
                str(self.data),
                "-A",
                "trust",
                "-U",
                "postgres",
                "-N",
                "-E",
                "UTF8",
            ],
            timeout=60,
        )

    @staticmethod
    def available() -> str | None:
        """Why a private PostgreSQL cannot be made here (None: it can)."""
        if not (PG_BIN / "initdb").exists():
            return f"no initdb in {PG_BIN} (set SESSIONHUB_TEST_PG_BIN)"
        if os.geteuid() == 0:
            try:
                pwd.getpwnam("postgres")
            except KeyError:
                return "running as root and there is no postgres account for initdb"
        return None

    def _run(self, argv: list[str], timeout: float) -> None:
        done = subprocess.run(
            self._as + argv, capture_output=True, timeout=timeout, check=False, cwd=self.dir
        )
        if done.returncode != 0:
            raise RuntimeError(f"{argv[0]} failed: {done.stdout!r} {done.stderr!r}")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> PostgresServer:
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1"
        self._run(
            [
                str(PG_BIN / "pg_ctl"),
                "-D",
                str(self.data),
                "-l",
                str(self.dir / "pg.log"),
                "-o",
                options,
                "-w",
                "-t",
                "30",
                "start",
            ],
            timeout=40,
        )
        return self

    def stop(self, mode: str = "fast") -> None:
        """``immediate`` is a crash: no checkpoint; recovery replays the WAL at start."""
        with contextlib.suppress(Exception):
            self._run(
                [
                    str(PG_BIN / "pg_ctl"),
                    "-D",
                    str(self.data),
                    "-m",
                    mode,
                    "-w",
                    "-t",
                    "30",
                    "stop",
                ],
                timeout=40,
            )

    def remove(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)


def render_nginx(prefix: Path, listen: str, upstream_ports: list[int]) -> Path:
    """deploy/nginx/local.conf.template filled in as deploy/cluster.sh fills it."""
    (prefix / "tmp").mkdir(parents=True, exist_ok=True)
    servers = "\n".join(
        f"        server 127.0.0.1:{p} max_fails=1 fail_timeout=2s;" for p in upstream_ports
    )
    user = pwd.getpwuid(os.geteuid()).pw_name
    group = _group_name(os.getegid())
    text = (DEPLOY / "nginx" / "local.conf.template").read_text()
    lines = [servers if line == "@SERVERS@" else line for line in text.splitlines()]
    conf = "\n".join(lines) + "\n"
    for key, value in {
        "@PREFIX@": str(prefix),
        "@DEPLOY@": str(DEPLOY),
        "@USER@": f"{user} {group}",
        "@LISTEN@": listen,
    }.items():
        conf = conf.replace(key, value)
    path = prefix / "nginx.conf"
    path.write_text(conf)
    return path


def _group_name(gid: int) -> str:
    import grp

    return grp.getgrgid(gid).gr_name


class Nginx:
    """nginx in front of ``upstream_ports``, with deploy/'s configuration."""

    def __init__(self, prefix: Path, upstream_ports: list[int]) -> None:
        self.prefix = prefix
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.conf = render_nginx(prefix, f"127.0.0.1:{self.port}", upstream_ports)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Nginx:
        log = (self.prefix / "nginx.log").open("wb")
        self.proc = subprocess.Popen(
            ["nginx", "-p", str(self.prefix), "-c", str(self.conf), "-g", "daemon off;"],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        try:
            wait_port(self.port, 10, what="nginx", proc=self.proc)
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}: {self.errors()}") from None
        return self

    def errors(self) -> str:
        out = []
        for name in ("nginx.log", "error.log"):
            with contextlib.suppress(OSError):
                out.append((self.prefix / name).read_text(errors="replace")[-3000:])
        return "\n".join(out)

    def stop(self) -> None:
        _end(self.proc)  # fast shutdown: open sockets are cut, as a crash of the LB would
