"""The processes a drill starts, stops and kills: the six services and private servers.

Every service runs as its own process (``python -m tally.cli.main serve NAME``) on a free
port, as an operator would run it, so ``kill -9`` is a real crash: whatever it had
fetched but not acknowledged is redelivered by the server, whatever it was writing is
rolled back. Servers a drill stops or restarts (NATS, Postgres, Redis) are private ones
on spare ports in a temporary directory: the shared servers on the default ports are
never touched.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import IO, TypeVar

import httpx

from tally.cli.ops import SERVICES

ROOT = Path(__file__).resolve().parents[2]
T = TypeVar("T")


def free_port() -> int:
    """A TCP port nobody listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def eventually(
    check: Callable[[], Awaitable[T | None]], *, timeout: float, what: str, every: float = 0.25
) -> T:
    """Poll ``check`` until it returns something truthy, for at most ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = await check()
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(every)


class Fleet:
    """The six services, each its own process, on the servers and namespace of ``env``.

    Args:
        env: ``TALLY_*`` variables (URLs, namespace, per-service tunables).
        logs: directory for each process's output (``<service>.log``, appended to).
    """

    def __init__(self, env: Mapping[str, str], logs: Path) -> None:
        self.env = {**os.environ, "TALLY_LOG_LEVEL": "WARNING", **env}
        self.logs = logs
        self.ports = {name: free_port() for name in SERVICES}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self._files: dict[str, IO[bytes]] = {}
        logs.mkdir(parents=True, exist_ok=True)

    def url(self, service: str, path: str = "/healthz") -> str:
        return f"http://127.0.0.1:{self.ports[service]}{path}"

    def pid(self, service: str) -> int:
        return self.procs[service].pid

    def spawn(self, service: str) -> None:
        """Start ``service``'s process (it is not waited for: see :meth:`healthy`)."""
        log = self._files.get(service) or open(self.logs / f"{service}.log", "ab")  # noqa: SIM115
        self._files[service] = log
        self.procs[service] = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tally.cli.main",
                "serve",
                service,
                "--port",
                str(self.ports[service]),
                "--json",
            ],
            env=self.env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    async def start(self, *services: str, timeout: float = 60.0) -> None:
        """Start ``services`` (all six by default) and wait until each ``/healthz`` is 200."""
        chosen = services or SERVICES
        for name in chosen:
            self.spawn(name)
        await self.healthy(*chosen, timeout=timeout)

    async def status(self, service: str) -> int | None:
        """``/healthz``'s status code, or None when nothing answers."""
        proc = self.procs[service]
        if proc.poll() is not None:
            raise AssertionError(f"{service} exited with {proc.returncode}: see {self.logs}")
        try:
            async with httpx.AsyncClient(timeout=3.0) as http:
                return (await http.get(self.url(service))).status_code
        except httpx.HTTPError:
            return None

    async def healthy(self, *services: str, timeout: float = 60.0) -> None:
        """Wait until every one of ``services`` (all by default) answers ``/healthz`` 200."""
        for name in services or tuple(self.procs):

            async def ok(name: str = name) -> bool:
                return await self.status(name) == 200

            await eventually(ok, timeout=timeout, what=f"{name} /healthz 200")

    async def statuses(self) -> dict[str, int | None]:
        return {name: await self.status(name) for name in self.procs}

    def kill(self, service: str) -> int:
        """``kill -9`` the service's process; returns the pid it had."""
        proc = self.procs[service]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        return proc.pid

    async def restart(self, service: str, timeout: float = 60.0) -> None:
        """Start a killed service again and wait for it to be healthy."""
        self.spawn(service)
        await self.healthy(service, timeout=timeout)

    def stop(self) -> None:
        """Stop every process (SIGTERM, then SIGKILL after 20 s)."""
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for f in self._files.values():
            f.close()


def _binary(*candidates: str) -> str:
    for c in candidates:
        for path in sorted(glob.glob(c), reverse=True):
            if os.access(path, os.X_OK):
                return path
    raise FileNotFoundError(f"none of {candidates} is installed")


class PrivateNats:
    """A nats-server with JetStream in its own store directory, on a spare port."""

    def __init__(self, workdir: Path, *, max_payload: int = 1024 * 1024) -> None:
        self.port = free_port()
        self.dir = workdir / "nats"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.binary = _binary(
            str(Path(sys.executable).parent / "nats-server"), "/usr/sbin/nats-server"
        )
        conf = self.dir / "nats.conf"
        conf.write_text(
            f"listen: 127.0.0.1:{self.port}\nmax_payload: {max_payload}\n"
            f'jetstream {{ store_dir: "{self.dir / "js"}" }}\n'
        )
        self.conf = conf
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    async def start(self) -> None:
        log = open(self.dir / "server.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen([self.binary, "-c", str(self.conf)], stdout=log, stderr=log)
        await eventually(self._answers, timeout=20, what=f"nats-server on :{self.port}")

    async def _answers(self) -> bool:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", self.port)
        except OSError:
            return False
        writer.close()
        return True

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)


class PrivatePostgres:
    """A PostgreSQL cluster of its own (initdb + pg_ctl as the ``postgres`` user)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.bin = Path(_binary("/usr/lib/postgresql/*/bin/pg_ctl")).parent
        # Owned by postgres, which refuses to run as root.
        self.dir = Path(tempfile.mkdtemp(prefix="tally-chaos-pg-"))
        shutil.chown(self.dir, "postgres", "postgres")
        self.data = self.dir / "data"

    @property
    def url(self) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/tally"

    def _pg(self, *args: str) -> None:
        subprocess.run(
            ["runuser", "-u", "postgres", "--", *args],
            check=True,
            capture_output=True,
            cwd=self.dir,
            timeout=120,
        )

    def _ctl(self, *args: str) -> None:
        opts = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._pg(
            str(self.bin / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.dir / "pg.log"),
            "-o",
            opts,
            "-w",
            *args,
        )

    def start(self) -> None:
        if not self.data.exists():
            self._pg(
                str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres"
            )
        self._ctl("start")

    def restart(self) -> None:
        """``pg_ctl restart -m fast``: open connections are cut, transactions rolled back."""
        self._ctl("restart", "-m", "fast")

    def stop_server(self) -> None:
        """``pg_ctl stop -m fast`` (:meth:`start` starts it again)."""
        self._ctl("stop", "-m", "fast")

    def stop(self) -> None:
        """Stop the server and remove its files."""
        with contextlib.suppress(subprocess.CalledProcessError):
            self._ctl("stop", "-m", "immediate")
        shutil.rmtree(self.dir, ignore_errors=True)


class PrivateRedis:
    """A redis-server on a spare port; with ``durable`` it keeps an append-only file (so a
    restart keeps its data), else it never saves to disk."""

    def __init__(self, workdir: Path, *, durable: bool = False) -> None:
        self.durable = durable
        self.port = free_port()
        self.dir = workdir / "redis"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        binary = _binary("/usr/bin/redis-server", "/usr/local/bin/redis-server")
        self.proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "yes" if self.durable else "no",
                "--dir",
                str(self.dir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        await eventually(self._answers, timeout=20, what=f"redis-server on :{self.port}")

    async def _answers(self) -> bool:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", self.port)
        except OSError:
            return False
        writer.close()
        return True

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)
