"""Private clusters on loopback for the cluster tests: three ``nats-server`` nodes joined by
routes (from the shipped ``deploy/nats/cluster/`` files) and a three-master Redis Cluster.

Each starts on free ports under a temporary directory and is stopped (by its own process
ids) when the test ends. A missing binary skips locally and fails under ``CI=true``.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tally.natsconfig import ROLES, password_variable
from tally.settings import REPO_ROOT

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
CLUSTER_CONFIGS = REPO_ROOT / "deploy" / "nats" / "cluster"


def binary(*candidates: str) -> str:
    """The first executable found (the venv's servers first), or skip/fail."""
    venv_bin = Path(sys.executable).parent
    for name in candidates:
        for path in (venv_bin / Path(name).name, Path(name)):
            if path.is_file() and os.access(path, os.X_OK):
                return str(path)
        found = shutil.which(name)
        if found:
            return found
    reason = f"none of {candidates} is installed"
    if IN_CI:
        pytest.fail(reason + " (CI=true: a missing server is a failure)")
    pytest.skip(reason)


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def wait_for_port(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    def tail() -> str:
        return log.read_text()[-2000:] if log.exists() else "(no log)"

    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server on {port} exited: {tail()}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {port}: {tail()}")


@dataclass
class NatsNode:
    name: str
    client_port: int
    monitor_port: int
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.client_port}"

    def kill(self) -> None:
        """``kill -9``: no lame duck, no flush."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)


@dataclass
class NatsCluster:
    nodes: list[NatsNode]
    #: Every role's password, as the shipped authorization block reads them.
    passwords: dict[str, str] = field(default_factory=dict)

    @property
    def urls(self) -> list[str]:
        return [n.url for n in self.nodes]


def loopback_config(source: str, ports: dict[str, int], routes: list[int], store: Path) -> str:
    """A shipped node configuration moved onto loopback ports and a private store."""
    text = source.replace("listen: 0.0.0.0:4222", f"listen: 127.0.0.1:{ports['client']}")
    text = text.replace("http: 0.0.0.0:8222", f"http: 127.0.0.1:{ports['monitor']}")
    text = text.replace("listen: 0.0.0.0:6222", f"listen: 127.0.0.1:{ports['route']}")
    text = text.replace("store_dir: /var/lib/nats/jetstream", f'store_dir: "{store}"')
    for n, port in enumerate(routes, start=1):
        text = text.replace(f"nats-route://nats-{n}:6222", f"nats-route://127.0.0.1:{port}")
    assert not re.search(r"0\.0\.0\.0|nats-\d:6222|/var/lib", text), text
    return text


@contextlib.contextmanager
def nats_cluster(tmp: Path) -> Iterator[NatsCluster]:
    """Three nodes started from ``deploy/nats/cluster/nats-{1,2,3}.conf``."""
    server = binary("nats-server", "/usr/sbin/nats-server")
    passwords = {role: "p" + secrets.token_hex(12) for role in ROLES}
    env = {**os.environ, **{password_variable(r): p for r, p in passwords.items()}}
    ports = free_ports(9)
    routes = ports[6:9]
    nodes: list[NatsNode] = []
    # The shipped layout: cluster/nats-N.conf include ../auth.conf.
    shutil.copy(CLUSTER_CONFIGS.parent / "auth.conf", tmp / "auth.conf")
    (tmp / "cluster").mkdir()
    try:
        for n in (1, 2, 3):
            mine = {"client": ports[n - 1], "monitor": ports[n + 2], "route": routes[n - 1]}
            source = (CLUSTER_CONFIGS / f"nats-{n}.conf").read_text()
            config = tmp / "cluster" / f"nats-{n}.conf"
            config.write_text(loopback_config(source, mine, routes, tmp / f"store-{n}"))
            log = tmp / f"nats-{n}.log"
            process = subprocess.Popen(
                [server, "-c", str(config), "-l", str(log)], env=env, stdout=subprocess.DEVNULL
            )
            nodes.append(NatsNode(f"nats-{n}", mine["client"], mine["monitor"], process))
        for n, node in enumerate(nodes, start=1):
            wait_for_port(node.client_port, node.process, tmp / f"nats-{n}.log")
        yield NatsCluster(nodes, passwords)
    finally:
        for node in nodes:
            if node.process.poll() is None:
                node.process.terminate()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    node.process.wait(10)
            if node.process.poll() is None:
                node.kill()


@dataclass
class RedisCluster:
    ports: list[int]
    processes: list[subprocess.Popen[bytes]]

    @property
    def url(self) -> str:
        """What the quota service is given: a cluster URL naming one node (it finds the rest)."""
        return f"redis+cluster://127.0.0.1:{self.ports[0]}/0"


@contextlib.contextmanager
def redis_cluster(tmp: Path) -> Iterator[RedisCluster]:
    """Three masters (``redis-server --cluster-enabled yes``) joined by
    ``redis-cli --cluster create``; every slot covered before it is yielded."""
    server = binary("redis-server", "/usr/bin/redis-server")
    cli = binary("redis-cli", "/usr/bin/redis-cli")
    ports = free_ports(6)
    # The cluster bus on ports of its own (by default port + 10000, maybe out of range).
    ports, bus_ports = ports[:3], ports[3:]
    processes: list[subprocess.Popen[bytes]] = []
    try:
        for port, bus_port in zip(ports, bus_ports, strict=True):
            data = tmp / f"redis-{port}"
            data.mkdir()
            log = data / "redis.log"
            processes.append(
                subprocess.Popen(
                    [
                        server,
                        "--port", str(port),
                        "--bind", "127.0.0.1",
                        "--cluster-enabled", "yes",
                        "--cluster-port", str(bus_port),
                        "--cluster-config-file", str(data / "nodes.conf"),
                        "--dir", str(data),
                        "--save", "",
                        "--appendonly", "no",
                        "--logfile", str(log),
                    ],
                    stdout=subprocess.DEVNULL,
                )
            )  # fmt: skip
            wait_for_port(port, processes[-1], log)
        subprocess.run(
            [cli, "--cluster", "create", *(f"127.0.0.1:{p}" for p in ports), "--cluster-yes"],
            check=True,
            capture_output=True,
            timeout=60,
        )
        deadline = time.monotonic() + 30
        while True:
            info = subprocess.run(
                [cli, "-p", str(ports[0]), "cluster", "info"], capture_output=True, text=True
            ).stdout
            if "cluster_state:ok" in info and "cluster_slots_assigned:16384" in info:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"the Redis cluster never became ok: {info}")
            time.sleep(0.1)
        yield RedisCluster(ports, processes)
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
