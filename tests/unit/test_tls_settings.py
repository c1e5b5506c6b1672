"""TLS for NATS, Postgres and Redis is a matter of settings (docs/security.md)."""

from __future__ import annotations

import ssl
from pathlib import Path

import certifi
import pytest
from redis.asyncio import Redis
from redis.asyncio.connection import SSLConnection
from sqlalchemy.engine import make_url

from tally.db import create_engine
from tally.settings import TallySettings


def test_a_ca_bundle_turns_tls_on_for_nats() -> None:
    options = TallySettings(nats_tls_ca=certifi.where()).nats_options()
    context = options["tls"]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname


def test_a_missing_certificate_file_is_an_error_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "client.pem"
    with pytest.raises(FileNotFoundError):
        TallySettings(nats_tls_ca=certifi.where(), nats_tls_cert=str(missing)).nats_options()


async def test_postgres_tls_comes_from_the_url() -> None:
    engine = create_engine("postgresql+asyncpg://tally:pw@db:5432/tally?ssl=verify-full")
    try:
        _, kwargs = engine.dialect.create_connect_args(make_url(str(engine.url)))
        assert kwargs["ssl"] == "verify-full"
    finally:
        await engine.dispose()


async def test_redis_tls_comes_from_the_url() -> None:
    client = Redis.from_url(
        f"rediss://:pw@redis:6379/0?ssl_ca_certs={certifi.where()}&ssl_cert_reqs=required"
    )
    try:
        pool = client.connection_pool
        assert pool.connection_class is SSLConnection
        assert pool.connection_kwargs["ssl_ca_certs"] == certifi.where()
    finally:
        await client.aclose()
