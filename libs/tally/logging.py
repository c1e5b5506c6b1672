"""structlog set-up: JSON lines when not on a terminal, readable output on one."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

#: ``scheme://user:password@host`` — the password part of a URL's user information.
_URL_PASSWORD = re.compile(r"(?P<head>[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*:)[^\s/]+(?=@)")
#: Field names whose values are secrets whatever they hold.
_SECRET_KEYS = ("password", "secret", "token", "passwd", "credentials", "api_key")
REDACTED = "***"


def redact_url(text: str) -> str:
    """``text`` with the password of every URL in it replaced by ``***``.

    >>> redact_url("postgresql+asyncpg://tally:s3cret@db:5432/tally")
    'postgresql+asyncpg://tally:***@db:5432/tally'
    """
    return _URL_PASSWORD.sub(lambda m: m["head"] + REDACTED, text)


def _redact(value: Any) -> Any:
    if isinstance(value, str):
        return redact_url(value)
    if isinstance(value, dict):
        return {k: _redact_field(k, v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact(v) for v in value]
    return value


def _secret_key(key: Any) -> bool:
    name = str(key).lower()
    return any(name == word or name.endswith(f"_{word}") for word in _SECRET_KEYS)


def _redact_field(key: Any, value: Any) -> Any:
    # Only text is a secret: ``input_tokens=120`` is a count, not a credential.
    if isinstance(value, str) and value and _secret_key(key):
        return REDACTED
    return _redact(value)


def redact_secrets(
    logger: Any, method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """A structlog processor: no password, token or URL password reaches a log line.

    Fields named like a secret (``password``, ``token``, ``secret``…) are replaced with
    ``***``; URLs anywhere in a value (an error message, a ``url=`` field, a traceback)
    lose their password.
    """
    return {key: _redact_field(key, value) for key, value in event_dict.items()}


def processors(*, as_json: bool = True) -> list[structlog.typing.Processor]:
    """The chain every log line goes through, ending in its rendering: secrets are
    redacted after exceptions are formatted, so a traceback loses them too."""
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if as_json else structlog.dev.ConsoleRenderer()
    )
    return [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        redact_secrets,
        renderer,
    ]


def render(event_dict: MutableMapping[str, Any], *, as_json: bool = True) -> str:
    """One log line as :func:`configure_logging` would print it (for tests and tools)."""
    value: Any = dict(event_dict)
    for processor in processors(as_json=as_json):
        value = processor(None, str(value.get("log_level", "info")), value)
    return str(value)


def configure_logging(level: str = "INFO", *, json: bool | None = None) -> None:
    """Configure structlog and the standard library's logging once per process.

    Args:
        level: the lowest level logged.
        json: JSON lines if True, readable text if False; by default JSON unless stderr
            is a terminal.
    """
    as_json = not sys.stderr.isatty() if json is None else json
    structlog.configure(
        processors=processors(as_json=as_json),
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    logging.basicConfig(level=level.upper(), stream=sys.stderr, format="%(message)s")
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())


class RedactingFilter(logging.Filter):
    """Standard-library log records (libraries, the HTTP server) lose URL passwords too."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = redact_url(message)
        if redacted != message:
            record.msg, record.args = redacted, ()
        return True
