"""``deploy/``: the compose file is well-formed and says what a cluster needs; its nginx
configuration is valid; ``deploy/cluster.sh`` starts three nodes behind nginx on this
machine, prints a URL and a working sign-in link, and stops exactly what it started."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml
from tests.processes import free_port

from .harness import create_database, drop_database
from .services import DEPLOY, RedisServer

COMPOSE = DEPLOY / "compose.yaml"


def test_the_compose_file_describes_the_cluster() -> None:
    spec = yaml.safe_load(COMPOSE.read_text())
    services = spec["services"]
    assert set(services) == {"postgres", "redis", "node1", "node2", "node3", "nginx"}
    ids = set()
    for name in ("node1", "node2", "node3"):
        node = services[name]
        env = node["environment"]
        assert node["build"] == {"context": "..", "dockerfile": "deploy/Dockerfile"}
        assert env["SESSIONHUB_DATABASE_URL"].startswith("postgresql+asyncpg://")
        assert "@postgres:5432/" in env["SESSIONHUB_DATABASE_URL"]
        assert env["SESSIONHUB_BROKER_URL"] == "redis://redis:6379/0"
        # One secret for every node, and it must be given (no per-node made-up secret).
        assert env["SESSIONHUB_JWT_SECRET"].startswith("${SESSIONHUB_JWT_SECRET:?")
        assert env["SESSIONHUB_HOST"] == "0.0.0.0"
        ids.add(env["SESSIONHUB_NODE_ID"])
        assert node["volumes"] == [f"{name}:/data"]
        assert node["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert ids == {"node1", "node2", "node3"}
    # Redis without persistence: a restart is a new epoch, never a rolled-back offset.
    command = services["redis"]["command"]
    assert command[command.index("--appendonly") + 1] == "no"
    assert command[command.index("--save") + 1] == ""
    nginx = services["nginx"]
    assert nginx["ports"] == ["${SESSIONHUB_PORT:-8080}:8080"]
    for mount in nginx["volumes"]:
        source = mount.split(":")[0]
        assert (DEPLOY / source).is_file(), mount
    # Only nginx is published: the nodes, PostgreSQL and Redis stay inside.
    assert [s for s, v in services.items() if "ports" in v] == ["nginx"]


def test_the_dockerfile_installs_this_source_tree() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    assert "COPY src ./src" in text and "COPY pyproject.toml README.md ./" in text
    assert "pip install '.[postgres,redis]'" in text
    assert re.search(r'^CMD \["sessionhub", "serve"\]$', text, re.M)
    lines = (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
    ignore = [line for line in lines if line and not line.startswith("#")]
    assert ignore[0] == "*" and "!src/" in ignore  # nothing else of the checkout goes in


def test_docker_compose_accepts_the_file() -> None:
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("docker is not installed")
    probe = subprocess.run([docker, "compose", "version"], capture_output=True, check=False)
    if probe.returncode != 0:
        pytest.skip("the docker compose plugin is not installed")
    done = subprocess.run(
        [docker, "compose", "-f", str(COMPOSE), "config", "--quiet"],
        capture_output=True,
        check=False,
        env={**os.environ, "SESSIONHUB_JWT_SECRET": "x" * 32},
        timeout=60,
    )
    assert done.returncode == 0, done.stderr.decode()


def test_the_compose_nginx_configuration_is_valid(tmp_path: Path) -> None:
    """``nginx -t`` on deploy/nginx/compose.conf, with the container names and paths
    replaced by this machine's (nginx resolves upstream names when it reads the file)."""
    if shutil.which("nginx") is None:
        pytest.skip("nginx is not installed (apt-get install nginx)")
    conf = (DEPLOY / "nginx" / "compose.conf").read_text()
    assert conf.count("server node") == 3 and "listen 8080;" in conf
    conf = re.sub(r"server node\d:8000", "server 127.0.0.1:9", conf)
    conf = conf.replace("/etc/nginx/sessionhub-proxy.conf", str(DEPLOY / "nginx" / "proxy.conf"))
    conf = conf.replace("/tmp/nginx.pid", str(tmp_path / "nginx.pid"))
    conf = conf.replace("listen 8080;", f"listen 127.0.0.1:{free_port()};")
    path = tmp_path / "nginx.conf"
    path.write_text(conf)
    done = subprocess.run(
        ["nginx", "-t", "-p", str(tmp_path), "-c", str(path), "-g", "daemon off;"],
        capture_output=True,
        check=False,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr.decode()
    proxy = (DEPLOY / "nginx" / "proxy.conf").read_text()
    for directive in (
        "proxy_set_header Upgrade $http_upgrade;",
        "proxy_set_header Connection $connection_upgrade;",
        "proxy_buffering off;",
        "proxy_read_timeout 1h;",
    ):
        assert directive in proxy


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.slow
@pytest.mark.cluster
async def test_cluster_sh_starts_three_nodes_behind_nginx_and_stops_them(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    from tests.conftest import POSTGRES_URL, service_unavailable

    name = f"sessionhub_clustersh_{os.getpid()}"
    try:
        database = await create_database(POSTGRES_URL, name)
        await drop_database(database)  # the script creates it
    except Exception as exc:
        service_unavailable("PostgreSQL", f"{type(exc).__name__}: {exc}")
    ports = [free_port() for _ in range(4)]
    env = {
        **os.environ,
        "SESSIONHUB": str(Path(sys.executable).parent / "sessionhub"),
        "SESSIONHUB_DATABASE_URL": database,
        "SESSIONHUB_BROKER_URL": redis_server.url,
        "CLUSTER_DIR": str(tmp_path / "cluster"),
        "CLUSTER_PORT": str(ports[0]),
        "CLUSTER_NODE_PORTS": " ".join(str(p) for p in ports[1:]),
    }
    script = str(DEPLOY / "cluster.sh")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [script, *args], env=env, capture_output=True, text=True, timeout=120, check=False
        )

    try:
        started = await asyncio.to_thread(run, "start")
        assert started.returncode == 0, started.stdout + started.stderr
        url = f"http://127.0.0.1:{ports[0]}"
        assert f"URL:      {url}" in started.stdout
        link = re.search(r"sign in:  (\S+\?token=(\S+))", started.stdout)
        assert link is not None, started.stdout
        assert "stop:" in started.stdout and "cluster.sh stop" in started.stdout
        async with httpx.AsyncClient(timeout=5) as http:
            page = await http.get(link.group(1))
            assert page.status_code == 200 and "text/html" in page.headers["content-type"]
            headers = {"Authorization": f"Bearer {link.group(2)}"}
            r = await http.post(f"{url}/api/sessions", json={}, headers=headers)
            assert r.status_code == 201, r.text
            ids = {(await http.get(f"{url}/api/health")).json()["node"]["id"] for _ in range(6)}
            assert ids == {"node-1", "node-2", "node-3"}
        status = await asyncio.to_thread(run, "status")
        assert status.returncode == 0 and status.stdout.count('"status":"ok"') == 3
        again = await asyncio.to_thread(run, "start")
        assert again.returncode != 0 and "already running" in again.stderr
    finally:
        stopped = await asyncio.to_thread(run, "stop")
        await drop_database(database)
    assert stopped.returncode == 0, stopped.stderr
    assert not any(_port_open(p) for p in ports), "a process of the cluster still listens"
    assert not list((tmp_path / "cluster").glob("node-*.pid"))
