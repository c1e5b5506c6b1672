"""What every reporter endpoint shares: reading a time window, answering an error."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from starlette.responses import JSONResponse

_SPAN = re.compile(r"^(\d+)([hdw])$")


def parse_since(text: str, now: datetime) -> datetime:
    """``7d``, ``12h``, ``2w`` or an ISO date/time, as the start of a report's window.

    Raises:
        ValueError: the text is neither (the message names it).
    """
    if m := _SPAN.match(text):
        unit = {"h": "hours", "d": "days", "w": "weeks"}[m.group(2)]
        return now - timedelta(**{unit: int(m.group(1))})
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"since: expected 7d, 12h, 2w or an ISO date, got {text!r}") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def error(message: str, status: int = 400) -> JSONResponse:
    """The JSON error every endpoint answers with; the message names the parameter."""
    return JSONResponse({"error": message}, status_code=status)
