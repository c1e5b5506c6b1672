"""No password, token or URL password reaches a log line or an error message."""

from __future__ import annotations

import json
import logging
import sys

import pytest
import structlog

from tally.client import TallyClient
from tally.errors import TransientError
from tally.logging import RedactingFilter, configure_logging, redact_url, render

SECRET = "Zs3cretPw"


def test_a_log_line_loses_passwords_in_fields_urls_and_tracebacks() -> None:
    try:
        raise ConnectionError(f"cannot connect to postgresql://tally:{SECRET}@db:5432/tally")
    except ConnectionError:
        exc_info = sys.exc_info()
    line = render(
        {
            "event": "connect_failed",
            "url": f"redis://:{SECRET}@redis:6379/0",
            "nats_password": SECRET,
            "api_token": SECRET,
            "input_tokens": 120,
            "exc_info": exc_info,
        }
    )
    assert SECRET not in line
    body = json.loads(line)
    assert body["url"] == "redis://:***@redis:6379/0"
    assert body["nats_password"] == body["api_token"] == "***"
    assert body["input_tokens"] == 120  # a count named like a token stays a count
    assert "postgresql://tally:***@db:5432/tally" in body["exception"]


def test_a_url_without_a_password_is_unchanged() -> None:
    for url in ("nats://127.0.0.1:4222", "https://user@host/path", "redis://r:6379/0"):
        assert redact_url(url) == url


def test_standard_library_records_are_redacted_too() -> None:
    record = logging.LogRecord(
        "x", logging.ERROR, "f", 1, "DSN %s", (f"pg://u:{SECRET}@h/d",), None
    )
    RedactingFilter().filter(record)
    assert record.getMessage() == "DSN pg://u:***@h/d"
    installed: list[tuple[logging.Handler, logging.Filter]] = []
    try:
        configure_logging(json=True)
        installed = [
            (h, f)
            for h in logging.getLogger().handlers
            for f in h.filters
            if isinstance(f, RedactingFilter)
        ]
        assert installed
    finally:
        structlog.reset_defaults()
        for handler, filter_ in installed:
            handler.removeFilter(filter_)


async def test_a_client_that_cannot_connect_does_not_print_the_password() -> None:
    with pytest.raises(TransientError) as caught:
        async with TallyClient.connect(f"nats://agent:{SECRET}@127.0.0.1:1"):
            pass
    assert SECRET not in str(caught.value) and "agent:***@127.0.0.1:1" in str(caught.value)
