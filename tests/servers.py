"""Real Redis and PostgreSQL servers for the scale-out tests, started on free loopback ports in a temporary
folder and stopped afterwards. .ci/run installs them from Debian (redis-server, postgresql); on a laptop without
them the tests that need one are skipped, saying why (in CI they fail instead)."""

from __future__ import annotations

import glob
import os
import random
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest


def require(found: str | None, what: str) -> str:
    if found:
        return found
    reason = f"{what} is not installed (.ci/run installs it: apt-get install -y redis-server postgresql)"
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


PORTS_PER_TEST_WORKER = 4000
FIRST_TEST_PORT = 20000  # below Linux's ephemeral range (32768-60999), which the kernel hands to outgoing sockets


def free_port() -> int:
    """A loopback port free now. Under pytest-xdist each test process draws from its own range: two processes asking
    the kernel for "any free port" may both be told the same one between the probe and the server's bind."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if not worker.startswith("gw"):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            return probe.getsockname()[1]
    start = FIRST_TEST_PORT + int(worker[2:]) * PORTS_PER_TEST_WORKER
    for port in random.sample(range(start, start + PORTS_PER_TEST_WORKER), PORTS_PER_TEST_WORKER):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free loopback port in {start}-{start + PORTS_PER_TEST_WORKER}")


def _wait_until(ready, what: str, process: subprocess.Popen | None = None, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if ready():
            return
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}")
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not come up within {timeout_s} s")


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
    except OSError:
        return False
    return True


@dataclass
class RedisServer:
    process: subprocess.Popen
    port: int

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(30)


def start_redis(folder: Path) -> RedisServer:
    binary = require(shutil.which("redis-server"), "redis-server")
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    command = [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no",
               "--dir", str(folder), "--databases", "64"]
    process = subprocess.Popen(command, stdout=(folder / "redis.log").open("wb"), stderr=subprocess.STDOUT)
    _wait_until(lambda: _accepts(port), "redis-server", process)
    return RedisServer(process, port)


def _postgres_bin(name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else shutil.which(name)


def _as_postgres(command: list[str]) -> list[str]:
    # initdb and the server refuse to run as root; Debian's package creates the `postgres` user for them.
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


def require_servers() -> None:
    """Skip (fail in CI) unless both redis-server and PostgreSQL are installed."""
    require(shutil.which("redis-server"), "redis-server")
    require(_postgres_bin("initdb"), "PostgreSQL (initdb)")


@dataclass
class PostgresServer:
    folder: Path
    port: int
    pg_ctl: str
    databases: int = 0

    def new_database(self) -> str:
        """A fresh, empty database on this server; returns its SQLAlchemy URL (psycopg 3 driver)."""
        import psycopg

        self.databases += 1
        name = f"studio_{self.databases}"
        with psycopg.connect(f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres",
                             autocommit=True) as connection:
            connection.execute(f"CREATE DATABASE {name}")
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        subprocess.run(_as_postgres([self.pg_ctl, "-D", str(self.folder / "cluster"), "-m", "immediate", "stop"]),
                       capture_output=True, timeout=60)


def start_postgres(folder: Path) -> PostgresServer:
    initdb = require(_postgres_bin("initdb"), "PostgreSQL (initdb)")
    pg_ctl = require(_postgres_bin("pg_ctl"), "PostgreSQL (pg_ctl)")
    folder.mkdir(parents=True, exist_ok=True)
    cluster, sockets = folder / "cluster", folder / "sockets"
    sockets.mkdir(exist_ok=True)
    if os.geteuid() == 0:
        for path in (folder, sockets):
            shutil.chown(path, "postgres", "postgres")  # the server writes its cluster and lock files here
    subprocess.run(_as_postgres([initdb, "-D", str(cluster), "-A", "trust", "-U", "postgres", "--no-sync"]),
                   check=True, capture_output=True, timeout=120)
    port = free_port()
    options = (f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200 "
               f"-c full_page_writes=off")
    subprocess.run(_as_postgres([pg_ctl, "-D", str(cluster), "-o", options, "-l", str(folder / "server.log"), "-w",
                                 "start"]), check=True, capture_output=True, timeout=120)
    _wait_until(lambda: _accepts(port), "PostgreSQL")
    return PostgresServer(folder, port, pg_ctl)
