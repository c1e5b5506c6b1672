"""The parts of tally.devservers that start nothing: URL parsing, probing, failing fast."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tally.devservers import (
    Endpoint,
    ServersUnavailable,
    ServerUrls,
    ensure_servers,
    parse_endpoint,
    probe,
    stop_servers,
    with_endpoint,
)
from tally.errors import TallyError


@pytest.fixture
def listener() -> Iterator[int]:
    """A loopback TCP port something listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


@pytest.fixture
def closed_port() -> int:
    """A loopback TCP port nothing listens on (the OS just handed it out and it was closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("nats://127.0.0.1:4222", Endpoint("127.0.0.1", 4222)),
        ("nats://localhost", Endpoint("localhost", 4222)),
        ("postgresql+asyncpg://postgres@db.local/tally", Endpoint("db.local", 5432)),
        ("postgresql://u:p@127.0.0.1:15432/x", Endpoint("127.0.0.1", 15432)),
        ("redis://127.0.0.1/0", Endpoint("127.0.0.1", 6379)),
        ("rediss://cache:6380/1", Endpoint("cache", 6380)),
        (
            "postgresql+asyncpg://postgres@/tally?host=/run/pg",
            Endpoint("", 5432, Path("/run/pg/.s.PGSQL.5432")),
        ),
    ],
)
def test_parse_endpoint_fills_default_ports_and_finds_unix_sockets(
    url: str, expected: Endpoint
) -> None:
    assert parse_endpoint(url) == expected


def test_parse_endpoint_rejects_unknown_schemes() -> None:
    with pytest.raises(ValueError, match="mysql"):
        parse_endpoint("mysql://127.0.0.1/x")


def test_with_endpoint_keeps_user_database_and_query() -> None:
    url = with_endpoint("postgresql+asyncpg://postgres@127.0.0.1:5432/tally?ssl=off", "h", 9)
    assert url == "postgresql+asyncpg://postgres@h:9/tally?ssl=off"
    assert with_endpoint("redis://127.0.0.1:6379/3", "127.0.0.1", 16379) == (
        "redis://127.0.0.1:16379/3"
    )


def test_probe_sees_a_listener(listener: int) -> None:
    assert probe(f"nats://127.0.0.1:{listener}")


def test_probe_of_a_closed_port_is_false_and_fast(closed_port: int) -> None:
    began = time.monotonic()
    assert not probe(f"redis://127.0.0.1:{closed_port}/0")
    assert time.monotonic() - began < 0.5


def test_probe_of_a_missing_unix_socket_is_false(tmp_path: Path) -> None:
    assert not probe(f"postgresql://postgres@/tally?host={tmp_path}")


def test_servers_that_answer_are_used_as_given(listener: int, tmp_path: Path) -> None:
    urls = ServerUrls(
        nats_url=f"nats://127.0.0.1:{listener}",
        database_url=f"postgresql+asyncpg://postgres@127.0.0.1:{listener}/tally",
        redis_url=f"redis://127.0.0.1:{listener}/0",
    )
    assert ensure_servers(urls, data_dir=tmp_path, start=False) == urls


def test_no_start_names_each_silent_server_and_its_url(
    listener: int, closed_port: int, tmp_path: Path
) -> None:
    urls = ServerUrls(
        nats_url=f"nats://127.0.0.1:{listener}",
        database_url=f"postgresql+asyncpg://postgres@127.0.0.1:{closed_port}/tally",
        redis_url=f"redis://127.0.0.1:{closed_port}/0",
    )
    with pytest.raises(ServersUnavailable) as caught:
        ensure_servers(urls, data_dir=tmp_path, start=False)
    message = str(caught.value)
    assert f"postgres at {urls.database_url}" in message
    assert f"redis at {urls.redis_url}" in message
    assert "nats" not in message
    assert isinstance(caught.value, TallyError)


def test_a_server_recorded_earlier_is_reused(
    listener: int, closed_port: int, tmp_path: Path
) -> None:
    recorded = f"redis://127.0.0.1:{listener}/0"
    (tmp_path / "redis.url").write_text(recorded)
    urls = ServerUrls(
        nats_url=f"nats://127.0.0.1:{listener}",
        database_url=f"postgresql://postgres@127.0.0.1:{listener}/tally",
        redis_url=f"redis://127.0.0.1:{closed_port}/0",
    )
    assert ensure_servers(urls, data_dir=tmp_path, start=False).redis_url == recorded


def test_stop_with_nothing_started_stops_nothing(tmp_path: Path) -> None:
    assert stop_servers(tmp_path) == []
