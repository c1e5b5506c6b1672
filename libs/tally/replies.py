"""Refusing a request to the one who asked, rather than to the dead-letter queue.

A request/reply handler that raises :class:`~tally.errors.PermanentError` is answered
``{"error": reason}`` *and* dead-lettered, as an invalid message should be. An operator's
refused command (a duplicate experiment name, an unknown subscription) is not a lost
message: the requester is waiting and reads the reason (the CLI exits 2 with it), so
:func:`answer_refusals` answers it without a dead letter.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import TypeVar

import structlog
from pydantic import BaseModel

from tally.errors import PermanentError
from tally.events.envelope import Event, Model

log = structlog.get_logger(__name__)

E = TypeVar("E", bound=Event)


class ErrorReply(Model):
    """The answer to a refused request: clients raise ``PermanentError(error)``."""

    error: str


def answer_refusals(
    fn: Callable[[E], Awaitable[BaseModel]],
) -> Callable[[E], Awaitable[BaseModel]]:
    """Wrap a responder so its :class:`PermanentError` becomes an :class:`ErrorReply`."""

    @functools.wraps(fn)
    async def answer(request: E) -> BaseModel:
        try:
            return await fn(request)
        except PermanentError as exc:
            log.info(
                "request_refused",
                subject=type(request).subject,
                source=request.source,
                reason=str(exc),
            )
            return ErrorReply(error=str(exc))

    return answer
