"""Cluster benchmark: fan-out across three nodes through Redis vs one node, and REST changes
through the load balancer.

Fan-out is ``bench/fanout.py``'s workload with its load generator (``bench/loadgen.c``, driven
through ``fanout_parts.loadgen.Fleet``): one publisher (the Centrifugo ``publish`` command on
``bench``), N subscribers of that topic, ~300-byte messages, every subscriber's sequence
checked. The setups are real ``sessionhub serve`` processes on one PostgreSQL database:

* ``1 node, memory``: the in-process broker - what ``bench/fanout.py`` measures;
* ``1 node, Redis``: the Redis broker (every publication goes through Redis and back);
* ``1 node, Redis, nginx``: the same behind nginx (``deploy/nginx/``), to show nginx's share;
* ``3 nodes, Redis, nginx``: three nodes behind nginx; nginx spreads the subscribers and the
  publisher over them (round robin), so most deliveries cross nodes through Redis.

For each and N in (100, 1000): ``burst`` (M messages offered as fast as the publisher's node
takes them; delivered/s = deliveries / (last receipt - first send)) and ``rate`` (p50/p99
publish-to-receive latency at ``--lat-pubs`` publications/s), in rounds whose order rotates.
Redis is asked (``INFO commandstats``) what each publication cost it: one ``EVALSHA`` per
publication, whatever N - the subscribers cost Redis nothing, each node fans out locally.

REST: transitions per second (create, then ``end``: one durable change each), with
``bench/rest.py``'s load generator, on one node directly and on three nodes through nginx
(round robin: a session's ``end`` usually reaches another node than its create).

As in ``bench/fanout.py``, with 2+ cores the server side (nodes, Redis, nginx) is pinned to
CPU 0 and the load generators to the others: every setup gets the same one core, so the
table shows what Redis and more nodes cost, not what more cores would give. PostgreSQL
(the machine's) is not pinned. Usage::

    .venv/bin/python bench/cluster.py [--quick] [--postgres-url URL] [--rounds 3]

Needs ``cc``, ``redis-server``, ``nginx`` and a PostgreSQL the bench may create databases on.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import grp
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))  # the sibling benchmarks, whose load generators are reused

from fanout_parts import machine  # noqa: E402
from fanout_parts.loadgen import Fleet, compile_loadgen  # noqa: E402
from fanout_parts.runs import Cell, Plan, rotated  # noqa: E402
from fanout_parts.servers import admin_token, sessionhub_command  # noqa: E402
from fanout_parts.workload import CHANNEL, SECRET  # noqa: E402
from rest_parts.load import Load, Row  # noqa: E402

PATH = "/connection/websocket"
DEFAULT_PG = os.environ.get(
    "SESSIONHUB_BENCH_POSTGRES_URL",
    "postgresql+asyncpg://postgres@127.0.0.1:5432/sessionhub_bench_cluster",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# -- the server side -------------------------------------------------------------------------


class Proc:
    """A server-side subprocess (pinned like bench/fanout.py's servers), its output in a
    log file, ended by its own handle."""

    def __init__(self, name: str, argv: list[str], log: Path, env: dict[str, str]) -> None:
        self.name = name
        self.log = log
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=ROOT,
                preexec_fn=machine.child_setup(machine.SERVER_CPUS),
            )

    def wait(self, port: int, ready_path: str | None = None, within: float = 60.0) -> None:
        end = time.monotonic() + within
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise SystemExit(f"{self.name} exited:\n{self.tail()}")
            with contextlib.suppress(OSError, httpx.TransportError):
                if ready_path is None:
                    socket.create_connection(("127.0.0.1", port), 0.2).close()
                    return
                url = f"http://127.0.0.1:{port}{ready_path}"
                if httpx.get(url, timeout=1).status_code == 200:
                    return
            time.sleep(0.1)
        raise SystemExit(f"{self.name} not ready on {port}:\n{self.tail()}")

    def tail(self, limit: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-limit:]

    def cpu(self) -> float:
        with contextlib.suppress(psutil.Error):
            p = psutil.Process(self.proc.pid)
            total = sum(p.cpu_times()[:2])
            for child in p.children(recursive=True):  # nginx's workers
                with contextlib.suppress(psutil.Error):
                    total += sum(child.cpu_times()[:2])
            return float(total)
        return 0.0

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def start_redis(work: Path) -> tuple[Proc, int]:
    port = free_port()
    argv = [
        "redis-server",
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(work),
    ]
    proc = Proc("redis", argv, work / "redis.log", dict(os.environ))
    proc.wait(port)
    return proc, port


def start_node(work: Path, name: str, database: str, broker: str) -> tuple[Proc, int]:
    port = free_port()
    env = {
        **os.environ,
        "SESSIONHUB_JWT_SECRET": SECRET,
        "SESSIONHUB_DATABASE_URL": database,
        "SESSIONHUB_BROKER_URL": broker,
        "SESSIONHUB_NODE_ID": name,
        "SESSIONHUB_DATA_DIR": str(work / name),
        "SESSIONHUB_LOG_LEVEL": "warning",
        # As bench/fanout.py runs sessionhub: admins may publish on the bench topic; queues
        # may grow instead of dropping readers slower than a burst (3008).
        "SESSIONHUB_REALTIME_PUBLISH_TOPICS": CHANNEL,
        "SESSIONHUB_REALTIME_QUEUE_BYTES": str(1 << 30),
        # Behind nginx every subscriber comes from nginx's address.
        "SESSIONHUB_REALTIME_MAX_PER_ADDRESS": "100000",
        # No presence renewals during the phases (one Redis call per subscription per ping
        # interval, 25 s by default): the Redis columns are then the publications' own cost.
        "SESSIONHUB_PING_INTERVAL": "3600",
    }
    argv = [*sessionhub_command(), "serve", "--host", "127.0.0.1", "--port", str(port)]
    proc = Proc(name, argv, work / f"{name}.log", env)
    proc.wait(port, "/api/ready")
    return proc, port


def start_nginx(work: Path, name: str, upstreams: list[int]) -> tuple[Proc, int]:
    """nginx with deploy/nginx/local.conf.template, filled in as deploy/cluster.sh does."""
    prefix = work / name
    (prefix / "tmp").mkdir(parents=True, exist_ok=True)
    port = free_port()
    servers = "\n".join(
        f"        server 127.0.0.1:{p} max_fails=1 fail_timeout=2s;" for p in upstreams
    )
    text = (ROOT / "deploy" / "nginx" / "local.conf.template").read_text()
    conf = "\n".join(servers if line == "@SERVERS@" else line for line in text.splitlines())
    user = f"{pwd.getpwuid(os.geteuid()).pw_name} {grp.getgrgid(os.getegid()).gr_name}"
    for key, value in {
        "@PREFIX@": str(prefix),
        "@DEPLOY@": str(ROOT / "deploy"),
        "@USER@": user,
        "@LISTEN@": f"127.0.0.1:{port}",
    }.items():
        conf = conf.replace(key, value)
    (prefix / "nginx.conf").write_text(conf + "\n")
    argv = ["nginx", "-p", str(prefix), "-c", str(prefix / "nginx.conf"), "-g", "daemon off;"]
    proc = Proc(name, argv, prefix / "nginx.log", dict(os.environ))
    proc.wait(port)
    return proc, port


@dataclass
class Setup:
    """One configuration, as ``Fleet`` sees a server: where clients connect and the
    CPU of every process on the server side."""

    name: str
    port: int
    procs: list[Proc]
    nodes: list[int]  # the nodes' own ports (to see how subscribers spread)
    redis_port: int | None
    proto: str = "centrifugo"
    sub_path: str = PATH
    pub_path: str = PATH

    @property
    def proc(self) -> subprocess.Popen[bytes]:
        return self.procs[0].proc  # the first node: its run-queue waits are reported

    def cpu(self) -> float:
        return sum(p.cpu() for p in self.procs)

    def log_tail(self, limit: int = 600) -> str:
        return " | ".join(p.tail(limit // len(self.procs)) for p in self.procs)


def redis_calls(port: int) -> dict[str, int]:
    """Redis's own count of the commands it ran, by command (``INFO commandstats``)."""
    import redis

    client = redis.Redis(port=port)
    try:
        stats = client.info("commandstats")
    finally:
        client.close()
    return {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items()}


def connections(ports: list[int]) -> list[int]:
    """Realtime connections on each node (``/api/health``)."""
    out = []
    for port in ports:
        r = httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=5)
        out.append(int(r.json()["node"]["connections"]))
    return out


# -- fan-out ---------------------------------------------------------------------------------


@dataclass
class Cost:
    """Redis commands per publication, over the burst phases of one (setup, N)."""

    published: int = 0
    #: Script calls: the publish path's only round trip to Redis.
    evalsha: int = 0
    #: PUBLISH commands Redis ran (inside the script: one per topic of a publication).
    publish: int = 0
    #: Every command Redis ran, the script's own included.
    commands: int = 0


@dataclass
class Fan:
    cells: dict[tuple[str, int, str], Cell] = field(default_factory=dict)
    costs: dict[tuple[str, int], Cost] = field(default_factory=dict)
    spread: dict[tuple[str, int], list[int]] = field(default_factory=dict)


def run_fanout(exe: Path, setups: list[Setup], plan: Plan) -> Fan:
    fan = Fan()
    token = admin_token()
    for n in plan.ns:
        fleets: list[tuple[Setup, Fleet]] = []
        try:
            for s in setups:
                before = connections(s.nodes)
                fleets.append((s, Fleet(exe, s, n, token)))  # type: ignore[arg-type]
                after = connections(s.nodes)
                fan.spread[(s.name, n)] = [a - b for a, b in zip(after, before, strict=True)]
            for r in range(plan.rounds):
                for s, f in rotated(fleets, r):
                    for mode in plan.modes:
                        cmd, timeout = plan.command(mode, n)
                        calls = redis_calls(s.redis_port) if s.redis_port else None
                        res = f.run(cmd, timeout)
                        if calls is not None and s.redis_port and mode == "burst":
                            now = redis_calls(s.redis_port)
                            cost = fan.costs.setdefault((s.name, n), Cost())
                            cost.published += int(res["published"])
                            cost.evalsha += now.get("evalsha", 0) - calls.get("evalsha", 0)
                            cost.publish += now.get("publish", 0) - calls.get("publish", 0)
                            # Everything Redis ran meanwhile: INFO itself, pings, refreshes.
                            cost.commands += sum(now.values()) - sum(calls.values())
                        cell = fan.cells.setdefault((s.name, n, mode), Cell(s.name, n, mode))
                        cell.results.append(res)
                        print(
                            f"  round {r + 1} {s.name:22} N={n:<5} {mode:6} "
                            f"{res['delivered_per_s']:>11,.0f}/s p50={res['p50_ms']:.2f} "
                            f"p99={res['p99_ms']:.2f} ms lost={res['lost']} dup={res['dup']}",
                            file=sys.stderr,
                            flush=True,
                        )
        finally:
            for _, f in fleets:
                f.close()
    return fan


# -- REST ------------------------------------------------------------------------------------


def run_rest(base: str, seconds: float) -> Row:
    from sessionhub.auth import Authenticator

    headers = {"Authorization": f"Bearer {Authenticator(secret=SECRET).issue('bench')}"}
    load = Load(base, headers, 2, 32)
    try:
        load.run("create", seconds)  # the sessions the transitions end (and a warm-up)
        return Row(base, "transitions", load.run("transition", seconds))
    finally:
        load.close()


async def database(url: str, *, drop_only: bool = False) -> None:
    """(Re)create the bench's database, empty (never the tests')."""
    import asyncpg

    dsn = url.replace("postgresql+asyncpg://", "postgresql://")
    base, _, name = dsn.rpartition("/")
    admin = await asyncpg.connect(base + "/postgres", timeout=5)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if not drop_only:
            await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()


# -- the run ---------------------------------------------------------------------------------


def print_tables(fan: Fan, setups: list[Setup], plan: Plan, rest_rows: list[Any]) -> None:
    cores = os.cpu_count()
    pinning = (
        f"server side (nodes, Redis, nginx) pinned to CPU {sorted(machine.SERVER_CPUS)}, load "
        f"generator to CPU {sorted(machine.LOADGEN_CPUS or [])}"
        if machine.SERVER_CPUS
        else "nothing pinned"
    )
    print()
    print(
        f"fan-out, ~300-byte messages, {cores} cores, {pinning}; medians of {plan.rounds} "
        f"round(s); latency at {plan.lat_pubs:g} publications/s offered"
    )
    print()
    print(
        "| setup | N | burst delivered/s | × 1 node memory | p50 ms | p99 ms | lost/dup "
        "| subscribers per node | Redis round trips (EVALSHA) / publication "
        "| PUBLISH / publication | commands Redis ran / publication |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for n in plan.ns:
        ref = fan.cells.get((setups[0].name, n, "burst"))
        for s in setups:
            burst, rate = fan.cells.get((s.name, n, "burst")), fan.cells.get((s.name, n, "rate"))
            if burst is None:
                continue
            ratio = f"{burst.delivered() / ref.delivered():.2f}" if ref else "-"
            lat = f"{rate.med('p50_ms'):.2f} | {rate.med('p99_ms'):.2f}" if rate else "- | -"
            lost = sum(c.total("lost") for c in (burst, rate) if c)
            dup = sum(c.total("dup") for c in (burst, rate) if c)
            cost = fan.costs.get((s.name, n))
            ev = pb = cm = "-"
            if cost is not None and cost.published:
                ev, pb, cm = (
                    f"{k / cost.published:.2f}" for k in (cost.evalsha, cost.publish, cost.commands)
                )
            spread = "/".join(str(x) for x in fan.spread.get((s.name, n), []))
            print(
                f"| {s.name} | {n} | {burst.delivered():,.0f} | {ratio} | {lat} | {lost}/{dup} "
                f"| {spread} | {ev} | {pb} | {cm} |"
            )
    print()
    print(
        f"REST transitions (create, then end: one durable change each) on PostgreSQL, {cores} "
        "cores, 32 requests in flight from 2 load-generator processes"
    )
    print()
    print("| setup | changes/s | p50 ms | p99 ms | errors |")
    print("|---|---|---|---|---|")
    for name, row in rest_rows:
        print(
            f"| {name} | {row.rate:,.0f} | {row.pct(0.5):.1f} | {row.pct(0.99):.1f} "
            f"| {row.result.errors} |"
        )


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="short phases, one round (a smoke run)")
    ap.add_argument("--postgres-url", default=DEFAULT_PG, help="a database the bench may empty")
    ap.add_argument("--rounds", type=int, default=None, help="rounds (default 3, --quick 1)")
    ap.add_argument("--lat-pubs", type=float, default=40.0, help="publications/s, rate phase")
    ap.add_argument("--duration", type=float, default=5.0, help="seconds per REST phase")
    ap.add_argument(
        "--pin",
        action=argparse.BooleanOptionalAction,
        default=(os.cpu_count() or 1) >= 2,
        help="server side on CPU 0, load generators on the others (default with 2+ CPUs)",
    )
    args = ap.parse_args()
    for tool in ("redis-server", "nginx"):
        if shutil.which(tool) is None:
            print(f"{tool} is not installed", file=sys.stderr)
            return 2
    cpus = sorted(os.sched_getaffinity(0))
    if args.pin and len(cpus) >= 2:
        machine.SERVER_CPUS = {cpus[0]}
        machine.LOADGEN_CPUS = set(cpus[1:])
        os.sched_setaffinity(0, machine.LOADGEN_CPUS)  # and the REST load generator's
    plan = Plan(
        ns=[100, 1000],
        modes=["burst", "rate"],
        burst={100: 3000, 1000: 300} if args.quick else {100: 10000, 1000: 1000},
        seconds=1.5 if args.quick else 5.0,
        lat_pubs=args.lat_pubs,
        rounds=args.rounds or (1 if args.quick else 3),
    )
    duration = min(args.duration, 2.0) if args.quick else args.duration

    def stop(signum: int, _frame: Any) -> None:  # unwind, so every child is stopped
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, stop)
    work = Path(tempfile.mkdtemp(prefix="sessionhub-bench-cluster-"))
    procs: list[Proc] = []
    # Each setup is a cluster of its own: its own database and Redis database (pub/sub is
    # kept apart per database), so one setup's publications never reach another's readers.
    databases = [f"{args.postgres_url}_{i}" for i in range(4)]
    started = time.monotonic()
    try:
        for url in databases:
            asyncio.run(database(url))
        exe = compile_loadgen(work)
        redis, redis_port = start_redis(work)
        procs.append(redis)

        def broker(db: int) -> str:
            return f"redis://127.0.0.1:{redis_port}/{db}"

        mem, mem_port = start_node(work, "memory-1", databases[0], "memory://")
        procs.append(mem)
        one, one_port = start_node(work, "single-1", databases[1], broker(1))
        procs.append(one)
        two, two_port = start_node(work, "single-2", databases[2], broker(2))
        procs.append(two)
        three = []
        for c in "abc":
            three.append(start_node(work, f"node-{c}", databases[3], broker(3)))
            procs.append(three[-1][0])
        lb_one, lb_one_port = start_nginx(work, "nginx-1", [two_port])
        procs.append(lb_one)
        lb, lb_port = start_nginx(work, "nginx-3", [p for _, p in three])
        procs.append(lb)
        setups = [
            Setup("1 node, memory", mem_port, [mem], [mem_port], None),
            Setup("1 node, Redis", one_port, [one, redis], [one_port], redis_port),
            Setup(
                "1 node, Redis, nginx", lb_one_port, [two, redis, lb_one], [two_port], redis_port
            ),
            Setup(
                "3 nodes, Redis, nginx",
                lb_port,
                [*(p for p, _ in three), redis, lb],
                [p for _, p in three],
                redis_port,
            ),
        ]
        print("fan-out ...", file=sys.stderr, flush=True)
        fan = run_fanout(exe, setups, plan)
        print("REST ...", file=sys.stderr, flush=True)
        rest_rows = [
            ("1 node, direct", run_rest(f"http://127.0.0.1:{one_port}", duration)),
            ("3 nodes, through nginx", run_rest(f"http://127.0.0.1:{lb_port}", duration)),
        ]
    finally:
        for p in reversed(procs):
            p.stop()
        for url in databases:
            with contextlib.suppress(Exception):
                asyncio.run(database(url, drop_only=True))
        shutil.rmtree(work, ignore_errors=True)
    print_tables(fan, setups, plan, rest_rows)
    print(f"\n(bench took {time.monotonic() - started:.0f} s)")
    return 1 if any(r.result.errors for _, r in rest_rows) else 0


if __name__ == "__main__":
    sys.exit(main())
