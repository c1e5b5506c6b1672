"""Shared fixtures: the real servers, a throwaway database and a namespace per test session.

Server-backed tests need NATS (JetStream), Postgres and Redis at the ``TALLY_*`` URLs
(loopback defaults). A missing server skips those tests locally, with the reason; under
``CI=true`` it fails them.
"""

from __future__ import annotations

import os
import socket
from collections.abc import AsyncIterator, Iterator
from urllib.parse import urlparse

import pytest

from tally.events import new_id
from tally.sandbox import sandbox
from tally.settings import TallySettings

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _answers(url: str) -> bool:
    parsed = urlparse(url.replace("postgresql+asyncpg", "postgresql"))
    if not parsed.hostname:  # a unix-socket DSN: let the client find out
        return True
    try:
        with socket.create_connection((parsed.hostname, parsed.port or 0), timeout=1.0):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def base_settings() -> TallySettings:
    """The servers' URLs, checked once: skip (locally) or fail (CI) if any is down."""
    s = TallySettings()
    down = [
        f"{name} at {url}"
        for name, url in (
            ("NATS", s.nats_url),
            ("Postgres", s.database_url),
            ("Redis", s.redis_url),
        )
        if not _answers(url)
    ]
    if down:
        reason = "servers not answering: " + ", ".join(down)
        if IN_CI:
            pytest.fail(reason + " (CI=true: a missing server is a failure)")
        pytest.skip(reason)
    return s


@pytest.fixture(scope="session")
async def stack(base_settings: TallySettings) -> AsyncIterator[TallySettings]:
    """Settings for this session: a fresh migrated database and provisioned streams."""
    async with sandbox(base_settings, prefix="t") as settings:
        yield settings


@pytest.fixture
def workspace() -> Iterator[str]:
    """A workspace of its own for one test."""
    yield f"ws-{new_id()[:8]}"
