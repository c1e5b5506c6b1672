"""Tally's one error hierarchy.

Handlers raise :class:`TransientError` for conditions that may pass (a server not
answering, a lock timeout): the message is redelivered with back-off. They raise
:class:`PermanentError` for input that will never succeed (validation, unknown
references): the message is dead-lettered with the reason and acknowledged.
"""

from __future__ import annotations

import sys


class TallyError(Exception):
    """Base of every error Tally raises on purpose."""


class TransientError(TallyError):
    """Retry later: the message is redelivered after ``delay_s`` seconds."""

    def __init__(self, message: str, *, delay_s: float = 2.0) -> None:
        super().__init__(message)
        self.delay_s = delay_s


class PermanentError(TallyError):
    """Never retry: the message goes to the dead-letter subject with this reason."""


class ValidationFailed(PermanentError):
    """A payload does not match its event schema; the message names the fields."""


class ConfigError(TallyError):
    """A configuration file is missing or invalid; the message names the file and field."""


class StepTimeout(TallyError):
    """A client waited for a step of the chain that did not answer in time."""

    def __init__(self, step: str, timeout_s: float) -> None:
        super().__init__(f"no answer from {step} within {timeout_s:g}s")
        self.step = step
        self.timeout_s = timeout_s


class Deferred(TallyError):
    """Not yet: the message follows another that has not arrived (an assignment before its
    task, a finish before its start). It is redelivered after ``delay_s`` without counting
    as a retry, and dead-lettered with this reason once it has waited ``max_wait_s``.
    """

    def __init__(self, message: str, *, delay_s: float = 1.0, max_wait_s: float = 600.0) -> None:
        super().__init__(message)
        self.delay_s = delay_s
        self.max_wait_s = max_wait_s


def reply_error(body: object, step: str) -> TallyError | None:
    """The error a request's answer carries, if it is an error answer: ``{"error": …}``
    (:class:`PermanentError`) or ``{"error": …, "transient": true}`` (the responder could
    not reach a server it needs: :class:`TransientError`, worth asking again)."""
    if not isinstance(body, dict) or "error" not in body or not set(body) <= {"error", "transient"}:
        return None
    if body.get("transient") is True:
        return TransientError(f"{step}: {body['error']}")
    return PermanentError(f"{step}: {body['error']}")


def is_permanent(exc: BaseException) -> bool:
    """Whether retrying ``exc`` can never help: bad input, or data Postgres refuses.

    Postgres data errors (a NUL in text, a value out of range) come wrapped by SQLAlchemy
    or straight from asyncpg; both are recognised by asyncpg's SQLSTATE class ``22``.
    """
    if isinstance(exc, PermanentError):
        return True
    seen: BaseException | None = exc
    for _ in range(4):  # the error, its SQLAlchemy wrapper, its cause …
        if seen is None:
            break
        state = getattr(seen, "sqlstate", None)
        if isinstance(state, str) and state.startswith("22"):
            return True
        seen = getattr(seen, "orig", None) or seen.__cause__
    return False


def _unreachable() -> tuple[type[BaseException], ...]:
    """Errors of a connection that could not be made or was lost (redis-py's are not
    OSErrors). redis-py's count once it is loaded: an error of it cannot exist before, and
    programs that never use Redis (the CLI) do not pay for importing it."""
    redis = sys.modules.get("redis.exceptions")
    if redis is None:
        return (ConnectionError,)
    return (ConnectionError, redis.ConnectionError, redis.TimeoutError)


#: Postgres SQLSTATEs of a server that is not there now (shutting down, starting up, out
#: of connections); class ``08`` (connection exceptions) is matched as a class.
_UNAVAILABLE_STATES = frozenset({"57P01", "57P02", "57P03", "53300"})


def is_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` says a server could not be reached, rather than that the message is
    wrong: a refused or reset connection (Postgres or Redis), Postgres starting up or
    shutting down, a connection lost mid-query. Such a message is not dead-lettered,
    however many times it is delivered: it is handled once the server is back.
    """
    seen: BaseException | None = exc
    for _ in range(4):  # the error, its SQLAlchemy wrapper, its cause …
        if seen is None:
            break
        if isinstance(seen, _unreachable()) or getattr(seen, "connection_invalidated", False):
            return True
        state = getattr(seen, "sqlstate", None)
        if isinstance(state, str) and (state.startswith("08") or state in _UNAVAILABLE_STATES):
            return True
        seen = getattr(seen, "orig", None) or seen.__cause__
    return False
