"""What every reporter endpoint shares: reading a time window, the types of its parameters."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request

from services.reporter.errors import ApiError, bad_parameter

_SPAN = re.compile(r"^(\d+)([hdw])$")
#: Any text without control characters (Postgres refuses NUL in text).
_PRINTABLE = r"^[^\x00-\x1f\x7f]+$"

#: An id or name as the tables store them: 1-128 printable characters.
Id = Annotated[str, Field(min_length=1, max_length=128, pattern=_PRINTABLE)]
#: A workspace name.
Workspace = Annotated[str, Field(min_length=1, max_length=64, pattern=_PRINTABLE)]
#: A window start or end: ``7d``, ``12h``, ``2w`` or an ISO date/time.
Since = Annotated[
    str,
    Field(
        min_length=1,
        max_length=40,
        pattern=_PRINTABLE,
        description="7d, 12h, 2w or an ISO-8601 date/time.",
        examples=["7d"],
    ),
]


class Params(BaseModel):
    """Base of every endpoint's query parameters: an unknown one is an error, named."""

    model_config = ConfigDict(extra="forbid")


def parse_since(text: str, now: datetime) -> datetime:
    """``7d``, ``12h``, ``2w`` or an ISO date/time, as the start of a report's window.

    Raises:
        ValueError: the text is neither, or too far back to be a time (the message names it).
    """
    if m := _SPAN.match(text):
        unit = {"h": "hours", "d": "days", "w": "weeks"}[m.group(2)]
        try:
            return now - timedelta(**{unit: int(m.group(1))})
        except (OverflowError, ValueError):
            raise ValueError(f"since: {text!r} reaches back before year 1") from None
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"since: expected 7d, 12h, 2w or an ISO date, got {text!r}") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def window_start(name: str, text: str, now: datetime, *, future_ok: bool = True) -> datetime:
    """:func:`parse_since` for the query parameter ``name``; a 400 naming it if bad."""
    try:
        at = parse_since(text, now)
    except ValueError as exc:
        raise bad_parameter(name, str(exc).removeprefix("since: ")) from None
    if not future_ok and at > now:
        raise bad_parameter(name, f"{at.isoformat()} is in the future")
    return at


def _query_names(dependant: Dependant) -> set[str]:
    names: set[str] = set()
    for param in dependant.query_params:
        annotation = param.field_info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            names.update(f.alias or n for n, f in annotation.model_fields.items())
        else:
            names.add(param.alias)
    for sub in dependant.dependencies:
        names |= _query_names(sub)
    return names


async def known_parameters_only(request: Request) -> None:
    """Refuse a query parameter the endpoint does not take, naming it (a typo in a
    filter would otherwise quietly widen a report)."""
    route = request.scope.get("route")
    if not isinstance(route, APIRoute):
        return
    known = _query_names(route.dependant)
    for name in request.query_params:
        if name not in known:
            takes = ", ".join(sorted(known)) or "no query parameters"
            raise ApiError(
                400,
                "unknown_parameter",
                f"{name}: not a parameter of {route.path} (takes {takes})",
                name,
            )
